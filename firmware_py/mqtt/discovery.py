"""Home Assistant MQTT discovery: one device with three sensors (genre, confidence, level).

Every config is published retained under
``<discovery_prefix>/sensor/<device_id>/{genre,confidence,level}/config``; change the
sensors here, without touching the delivery code (:mod:`.session`).
"""

from __future__ import annotations

from typing import Any

from .settings import MqttSettings

MANUFACTURER = "genre-edge"
#: States the smoother may publish besides the model's labels.
EXTRA_GENRES = ("silence", "unknown")


def discovery_messages(s: MqttSettings, *, labels: list[str], model_name: str,
                       device_name: str, sw_version: str) -> list[tuple[str, dict[str, Any]]]:
    """Home Assistant discovery: (topic, config) for the genre, confidence and level sensors."""
    options = list(dict.fromkeys([*labels, *EXTRA_GENRES]))
    device = {
        "identifiers": [f"genre-edge_{s.device_id}"],
        "name": device_name,
        "model": model_name,
        "manufacturer": MANUFACTURER,
        "sw_version": sw_version,
    }
    entity_base = s.device_id.replace("-", "_")
    common: dict[str, Any] = {
        "state_topic": s.state_topic,
        "availability_topic": s.availability_topic,
        "payload_available": "online",
        "payload_not_available": "offline",
        "qos": s.qos,
        "device": device,
        "origin": {"name": "genre-edge", "sw_version": sw_version},
    }
    if s.expire_after_s:
        common["expire_after"] = int(s.expire_after_s)
    sensors: dict[str, dict[str, Any]] = {
        "genre": {
            "name": "Genre",
            "device_class": "enum",
            "options": options,
            "value_template": "{{ value_json.genre }}",
            "json_attributes_topic": s.state_topic,
            "json_attributes_template": "{{ value_json.probabilities | tojson }}",
            "icon": "mdi:music",
        },
        # The state JSON carries confidence as 0..1; Home Assistant shows percent,
        # the unit people read on a dashboard.
        "confidence": {
            "name": "Confidence",
            "unit_of_measurement": "%",
            "state_class": "measurement",
            # A JSON null renders "None", which HA reads as "unknown".
            "value_template": (
                "{{ (value_json.confidence * 100) | round(1) "
                "if value_json.confidence is number else none }}"
            ),
            "icon": "mdi:percent",
        },
        # No device_class: HA's sound_pressure class only accepts dB/dBA, not dBFS.
        "level": {
            "name": "Level",
            "unit_of_measurement": "dBFS",
            "state_class": "measurement",
            "value_template": "{{ value_json.level_dbfs }}",
            "icon": "mdi:volume-high",
        },
    }
    out = []
    for obj, config in sensors.items():
        config = {
            **config,
            "unique_id": f"genre-edge_{s.device_id}_{obj}",
            # Replaces the deprecated object_id (removed in HA 2026.4); older HA
            # versions drop unknown discovery keys, so it is safe everywhere.
            "default_entity_id": f"sensor.{entity_base}_{obj}",
            **common,
        }
        out.append((s.discovery_topic(obj), config))
    return out
