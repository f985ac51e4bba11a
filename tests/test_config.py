"""The typed configuration: file, environment and flags; one-line errors; secrets."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from pathlib import Path

import pytest

from firmware_py.config import (
    Config,
    ConfigError,
    MqttConfig,
    config_keys,
    load_config,
)
from firmware_py.smoothing import SmoothingParams

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "deploy" / "config.example.toml"
SECRET = "pa55-w0rd-Zq9"


def write(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    path.chmod(mode)
    return path


FULL = """
bundle = "/opt/bundle"
log_level = "INFO"

[source]
device = "usb"
block_s = 0.05
device_rate = 48000

[inference]
threads = 2
edgetpu = "usb"
hop_s = 1

[smoothing]
average_windows = 5
min_dwell_s = 8

[mqtt]
url = "mqtts://broker.lan:8883"
username = "pi"
password = "@SECRET@"
ca_file = "/etc/ssl/ca.crt"
device_id = "kitchen"
expire_after_s = 300

[output]
json = true
http = "127.0.0.1:8080"
""".replace("@SECRET@", SECRET)


# -- layers -------------------------------------------------------------------------------
def test_file_to_object(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, FULL), env={})
    assert cfg.bundle == "/opt/bundle"
    assert cfg.log_level == "info"
    assert cfg.source.device == "usb" and cfg.source.block_s == 0.05
    assert cfg.source.device_rate == 48000 and cfg.source.realtime is True
    assert cfg.inference.threads == 2 and cfg.inference.edgetpu == "usb"
    assert cfg.inference.hop_s == 1.0 and isinstance(cfg.inference.hop_s, float)
    assert cfg.smoothing == {"average_windows": 5, "min_dwell_s": 8}
    assert cfg.smoothing_params({"enter_threshold": 0.5}) == SmoothingParams(
        average_windows=5, min_dwell_s=8.0, enter_threshold=0.5
    )
    assert cfg.mqtt.url == "mqtts://broker.lan:8883" and cfg.mqtt.password == SECRET
    assert cfg.mqtt.expire_after_s == 300 and cfg.mqtt.discovery_prefix == "homeassistant"
    assert cfg.output.json is True and cfg.output.http == "127.0.0.1:8080"


def test_no_file_gives_defaults() -> None:
    assert load_config(None, env={}) == Config()


def test_env_overrides_file(tmp_path: Path) -> None:
    env = {
        "GENRE_EDGE_MQTT_URL": "mqtt://127.0.0.2",
        "GENRE_EDGE_MQTT_PASSWORD": "from-env",
        "GENRE_EDGE_INFERENCE_THREADS": "3",
        "GENRE_EDGE_INFERENCE_EDGETPU": "",  # empty = unset
        "GENRE_EDGE_SOURCE_DEVICE": "2",  # digits = an index
        "GENRE_EDGE_SOURCE_REALTIME": "off",
        "GENRE_EDGE_OUTPUT_JSON": "0",
        "GENRE_EDGE_SMOOTHING_AVERAGE_WINDOWS": "3",
        "GENRE_EDGE_SMOOTHING_ENTER_THRESHOLD": "0.6",
        "GENRE_EDGE_LOG_LEVEL": "debug",
        "GENRE_EDGE_DATA": "/somewhere",  # not configuration: ignored
        "OTHER": "x",
    }
    cfg = load_config(write(tmp_path, FULL), env=env)
    assert cfg.mqtt.url == "mqtt://127.0.0.2" and cfg.mqtt.password == "from-env"
    assert cfg.mqtt.username == "pi"  # untouched keys keep the file's value
    assert cfg.inference.threads == 3 and cfg.inference.edgetpu is None
    assert cfg.source.device == 2 and cfg.source.realtime is False
    assert cfg.output.json is False
    assert cfg.smoothing == {"average_windows": 3, "min_dwell_s": 8, "enter_threshold": 0.6}
    assert cfg.log_level == "debug"


def test_flags_override_env(tmp_path: Path) -> None:
    env = {"GENRE_EDGE_MQTT_URL": "mqtt://127.0.0.2", "GENRE_EDGE_INFERENCE_THREADS": "3"}
    flags = {
        "mqtt.url": "mqtt://127.0.0.1:1884",
        "inference": {"threads": 4, "edgetpu": None},  # None: flag not given
        "source.input": "clip.wav",
        "source.realtime": False,
        "source.device": None,
        "bundle": None,
        "smoothing": {"min_dwell_s": 1.5},
    }
    cfg = load_config(write(tmp_path, FULL), env=env, overrides=flags)
    assert cfg.mqtt.url == "mqtt://127.0.0.1:1884"
    assert cfg.inference.threads == 4 and cfg.inference.edgetpu == "usb"
    assert cfg.source.input == "clip.wav" and cfg.source.realtime is False
    assert cfg.source.device == "usb" and cfg.bundle == "/opt/bundle"
    assert cfg.smoothing["min_dwell_s"] == 1.5
    # A flag's device "0" is an index, as in the file and the environment.
    assert load_config(None, env={}, overrides={"source.device": "0"}).source.device == 0


def test_genre_edge_config_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[inference]\nthreads = 2\n")
    assert load_config(None, env={"GENRE_EDGE_CONFIG": str(path)}).inference.threads == 2


# -- the example in deploy/ ----------------------------------------------------------------
def test_example_config_parses_to_the_defaults() -> None:
    assert load_config(EXAMPLE, env={}) == Config()


def test_the_example_is_generated_from_the_declarations() -> None:
    """deploy/config.example.toml is render_example()'s output: a key, help text, default
    or example changed on a field changes the file (regenerate: make example-config)."""
    from firmware_py.config.example import render_example

    assert EXAMPLE.read_text() == render_example(), "run 'make example-config'"


def test_every_key_declares_its_help_and_the_flags_reach_their_keys() -> None:
    """Every key has help; every flag ``listen --help`` shows sets the key it documents."""
    import argparse

    from firmware_py.bounds import declared
    from firmware_py.config import key_spec
    from firmware_py.config.flags import add_setting_flags, overrides

    for key in config_keys():
        assert (declared(key_spec(key), "help") or "").strip(), f"{key} has no help"
    parser = argparse.ArgumentParser()
    add_setting_flags(parser)
    given = ["--bundle", "/b", "--log-level", "debug", "--device", "3", "--input", "x.wav",
             "--fast", "--loop", "--device-rate", "44100", "--threads", "2", "--edgetpu",
             "usb", "--hop", "0.5", "--json", "--changes-only", "--http", "127.0.0.1:8080",
             "--mqtt", "mqtt://127.0.0.1:1883", "--username", "u", "--ca-file", "/ca",
             "--device-id", "den", "--topic-prefix", "t/den"]
    cfg = load_config(None, env={}, overrides=overrides(parser.parse_args(given)))
    assert (cfg.bundle, cfg.log_level) == ("/b", "debug")
    assert (cfg.source.device, cfg.source.input, cfg.source.realtime, cfg.source.loop,
            cfg.source.device_rate) == (3, "x.wav", False, True, 44100)
    assert (cfg.inference.threads, cfg.inference.edgetpu, cfg.inference.hop_s) == (2, "usb", 0.5)
    assert (cfg.output.json, cfg.output.changes_only, cfg.output.http) == (True, True,
                                                                           "127.0.0.1:8080")
    assert (cfg.mqtt.url, cfg.mqtt.username, cfg.mqtt.ca_file, cfg.mqtt.device_id,
            cfg.mqtt.topic_prefix) == ("mqtt://127.0.0.1:1883", "u", "/ca", "den", "t/den")
    flags = {a.option_strings[0] for a in parser._actions if a.option_strings} - {"-h"}
    assert flags == {g for g in given if g.startswith("--")} | {"--realtime"}
    # not given: nothing overridden
    assert load_config(None, env={}, overrides=overrides(parser.parse_args([]))) == Config()


def test_only_keys_declared_live_are_applied_without_a_restart() -> None:
    from firmware_py.bounds import live_keys, restart_needed

    old = Config()
    new = load_config(None, env={}, overrides={"output.json": True, "smoothing.min_dwell_s": 9,
                                               "mqtt.qos": 0, "source.loop": True})
    assert restart_needed(old, new) == ["source.loop", "mqtt.qos"]
    assert live_keys(old) == ["smoothing", "output.json", "output.changes_only"]


def test_example_documents_every_key_with_its_default(tmp_path: Path) -> None:
    """Uncommenting every ``# key = value`` line gives the defaults (or a valid example)."""
    text = EXAMPLE.read_text()
    uncommented = re.sub(r"(?m)^# ([a-z_]+ = .+)$", r"\1", text)
    cfg = load_config(write(tmp_path, uncommented), env={})
    documented = set()
    section = None
    for line in uncommented.splitlines():
        if m := re.match(r"^\[(\w+)\]$", line):
            section = m.group(1)
        elif m := re.match(r"^([a-z_]+) = ", line):
            documented.add(f"{section}.{m.group(1)}" if section else m.group(1))
    assert documented == set(config_keys())
    defaults = Config()
    for key in config_keys():
        section, _, name = key.rpartition(".")
        if section == "smoothing":
            assert cfg.smoothing[name] == getattr(SmoothingParams(), name), key
            continue
        default = getattr(getattr(defaults, section) if section else defaults, name)
        value = getattr(getattr(cfg, section) if section else cfg, name)
        if default is not None:  # unset-by-default keys show an example instead
            assert value == default, key


# -- errors: one line, naming the key --------------------------------------------------------
def one_line_error(tmp_path: Path, text: str, env: dict | None = None) -> str:
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text), env=env or {})
    message = str(err.value)
    assert "\n" not in message
    return message


def test_bad_toml_names_line_and_column(tmp_path: Path) -> None:
    message = one_line_error(tmp_path, "[mqtt]\nurl = mqtt://x\n")
    assert "bad TOML" in message and "line 2" in message and "column" in message
    assert str(tmp_path / "config.toml") in message


def test_unknown_key_suggests_the_right_one(tmp_path: Path) -> None:
    message = one_line_error(tmp_path, '[mqtt]\npasword = "x"\n')
    assert "'mqtt.pasword'" in message
    assert "did you mean 'mqtt.password'?" in message
    assert "mqtt.url" in message  # lists the valid keys


def test_unknown_section_and_top_level_key(tmp_path: Path) -> None:
    message = one_line_error(tmp_path, "[mqqt]\nurl = 'mqtt://x'\n")
    assert "unknown config section 'mqqt'" in message and "did you mean 'mqtt'?" in message
    message = one_line_error(tmp_path, "bundel = '/x'\n")
    assert "'bundel'" in message and "did you mean 'bundle'?" in message


def test_unknown_smoothing_key(tmp_path: Path) -> None:
    message = one_line_error(tmp_path, "[smoothing]\nmin_dwell = 3\n")
    assert "'smoothing.min_dwell'" in message and "smoothing.min_dwell_s" in message


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ('[inference]\nthreads = "4"\n', ["'inference.threads'", "an integer", "string '4'"]),
        ("[source]\nrealtime = 1\n", ["'source.realtime'", "a boolean", "integer 1"]),
        ("[source]\nblock_s = true\n", ["'source.block_s'", "a number", "boolean True"]),
        ("[mqtt]\nurl = 1883\n", ["'mqtt.url'", "a string", "integer 1883"]),
        ("mqtt = 'x'\n", ["'mqtt'", "must be a table"]),
        ("[smoothing]\nenter_threshold = 'high'\n", ["'smoothing.enter_threshold'", "number"]),
    ],
)
def test_wrong_type_names_key_expected_and_got(tmp_path: Path, text: str, needles: list) -> None:
    message = one_line_error(tmp_path, text)
    for needle in needles:
        assert needle in message, message


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("[inference]\nthreads = 0\n", ["'inference.threads'", "between 1 and 64"]),
        ('[inference]\nedgetpu = "tpu"\n', ["'inference.edgetpu'", "'usb' or 'pci'"]),
        ("[inference]\nhop_s = -1\n", ["'inference.hop_s'"]),
        ('log_level = "loud"\n', ["'log_level'", "warning"]),
        ('[output]\nhttp = "8080"\n', ["'output.http'", "host:port"]),
        ('[mqtt]\nurl = "http://broker"\n', ["'mqtt.url'", "mqtts://"]),
        ("[mqtt]\nqos = 3\n", ["'mqtt.qos'", "0, 1 or 2"]),
        ("[smoothing]\nmin_dwell_s = -2\n", ["'smoothing.min_dwell_s'", "between 0 and 86400 seconds"]),
        ("[source]\nblock_s = nan\n", ["'source.block_s'", "finite"]),
    ],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, needles: list) -> None:
    message = one_line_error(tmp_path, text)
    for needle in needles:
        assert needle in message, message


def test_bad_env_value_names_the_variable(tmp_path: Path) -> None:
    message = one_line_error(tmp_path, "", env={"GENRE_EDGE_INFERENCE_THREADS": "two"})
    assert "'inference.threads'" in message and "GENRE_EDGE_INFERENCE_THREADS" in message
    message = one_line_error(tmp_path, "", env={"GENRE_EDGE_OUTPUT_JSON": "maybe"})
    assert "GENRE_EDGE_OUTPUT_JSON" in message and "a boolean" in message


def test_unknown_env_key_in_a_known_section_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="firmware_py.config"):
        cfg = load_config(None, env={"GENRE_EDGE_MQTT_PASWORD": "x"})
    assert cfg.mqtt.password is None
    assert "GENRE_EDGE_MQTT_PASSWORD" in caplog.text  # the suggestion


def test_bad_flag_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'inference.edgetpu' \(command line\)"):
        load_config(None, env={}, overrides={"inference.edgetpu": "tpu"})


def test_smoothing_combination_checked_with_the_bundle_defaults() -> None:
    cfg = load_config(None, env={}, overrides={"smoothing.leave_threshold": 0.5})
    with pytest.raises(ConfigError, match="leave_threshold"):
        cfg.smoothing_params({"enter_threshold": 0.45})


def test_missing_and_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found") as err:
        load_config(tmp_path / "nope.toml", env={})
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path, env={})
    if os.geteuid() != 0:  # root reads anything
        path = write(tmp_path, "bundle = 'x'\n", mode=0o000)
        with pytest.raises(ConfigError, match="cannot read config file"):
            load_config(path, env={})


# -- secrets ---------------------------------------------------------------------------------
def test_password_never_in_repr_or_redacted(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, FULL), env={})
    assert SECRET not in repr(cfg) and SECRET not in str(cfg)
    assert SECRET not in repr(cfg.mqtt)
    safe = cfg.redacted()
    assert safe["mqtt"]["password"] == "***"
    assert SECRET not in repr(safe)
    assert safe["mqtt"]["username"] == "pi"  # only the secret is hidden
    assert cfg.mqtt.password == SECRET  # the object itself still has it
    assert Config().redacted()["mqtt"]["password"] is None
    assert not next(f for f in dataclasses.fields(MqttConfig) if f.name == "password").repr


def test_password_value_never_in_a_type_error(tmp_path: Path) -> None:
    # A PIN-like password written without quotes: the error says so without echoing it.
    message = one_line_error(tmp_path, '[mqtt]\nusername = "pi"\npassword = 73914682\n')
    assert "'mqtt.password'" in message and "a string" in message and "integer" in message
    assert "73914682" not in message and "quotes" in message
    message = one_line_error(tmp_path, "[mqtt]\nusername = 'pi'\npassword = 7391.4682\n")
    assert "7391" not in message and "number" in message
    # Other keys still show what was found.
    assert "integer 1883" in one_line_error(tmp_path, "[mqtt]\nurl = 1883\n")


@pytest.mark.parametrize("url", [
    "tcp://pi:hunter2-pw@broker.lan:1883",
    "ssl://pi:hunter2-pw@broker.lan:8883",
    "pi:hunter2-pw@broker.lan:1883",
    "mqtt://pi:hunter2-pw@[::1",
])
def test_password_in_a_bad_mqtt_url_is_masked(tmp_path: Path, url: str) -> None:
    for env, text in (({}, f"[mqtt]\nurl = '{url}'\n"), ({"GENRE_EDGE_MQTT_URL": url}, "")):
        message = one_line_error(tmp_path, text, env=env)
        assert "'mqtt.url'" in message and "hunter2" not in message, message
        assert "pi:***@" in message, message


@pytest.mark.parametrize(("text", "needles"), [
    ("[mqtt]\nurl = 'mqtt://[::1'\n", ["'mqtt.url'", "unbalanced", "mqtt://[::1]:1883"]),
    ("[mqtt]\nurl = 'mqtt://[broker.lan]:1883'\n", ["'mqtt.url'", "only an IPv6 address"]),
    ("[output]\nhttp = '127.0.0.1:\u00b2'\n", ["'output.http'", "host:port"]),
])
def test_malformed_values_are_one_line_errors_not_tracebacks(
    tmp_path: Path, text: str, needles: list
) -> None:
    message = one_line_error(tmp_path, text)
    for needle in needles:
        assert needle in message, message


def test_a_non_ascii_digit_device_stays_a_name() -> None:
    # '²'.isdigit() is True but int('²') raises ValueError.
    assert load_config(None, env={}, overrides={"source.device": "\u00b2"}).source.device == "\u00b2"
    assert load_config(None, env={"GENRE_EDGE_SOURCE_DEVICE": " 3 "}).source.device == 3


def test_world_readable_file_with_password_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, FULL, mode=0o644)
    with caplog.at_level(logging.WARNING, logger="firmware_py.config"):
        load_config(path, env={})
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "chmod o-rwx" in warnings[0].getMessage() and str(path) in warnings[0].getMessage()
    assert SECRET not in caplog.text


def test_private_file_or_no_password_does_not_warn(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="firmware_py.config"):
        load_config(write(tmp_path, FULL, mode=0o600), env={})
        load_config(write(tmp_path, "[mqtt]\nurl = 'mqtt://x'\n", mode=0o644), env={})
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_the_configuration_and_the_listen_flags_load_no_numerics() -> None:
    """``genre-edge --help``/``--version`` build every parser, listen's flags included:
    the declarations they come from must not pull numpy (nor paho) in."""
    import subprocess
    import sys

    code = ("import sys, argparse, firmware_py.config.flags as f; "
            "f.add_setting_flags(argparse.ArgumentParser()); "
            "import firmware_py.config.example as e; e.render_example(); "
            "print(sorted(m for m in ('numpy', 'paho', 'soxr', 'http.server') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
