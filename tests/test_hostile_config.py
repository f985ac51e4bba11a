"""Hostile configuration (issue 16, item 2 and the "every configuration source" class).

Every numeric setting has an upper bound declared next to it; every source (file,
environment, flags, a bundle manifest's smoothing section) is bounded in size and
validated, logging settings included; a SIGHUP reload that fails for any reason keeps
the running settings and logs one line. Real components: the ``genre-edge`` CLI in a
subprocess, the bundled model, a real mosquitto to watch the stream across reloads.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from firmware_py.bounds import is_key
from firmware_py.bundle import default_bundle_path
from firmware_py.commands import DEMO_CLIP
from firmware_py.config import Config, load_config
from firmware_py.errors import ConfigError
from firmware_py.smoothing import SmoothingParams
from tests.hostile import cli, lines_with, listen, one_line_error, terminate
from tests.mqtt_helpers import free_port

STATE = "genre-edge/hostile/state"
HUGE = "100000000000000000000"  # 1e20: deque(maxlen=1e20) was an OverflowError


def _is_number(tp: typing.Any) -> bool:
    members = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
    return all(m in (int, float) for m in members)


def numeric_keys() -> list[str]:
    """Every numeric configuration key, found from the dataclasses (new ones included)."""
    keys = []
    for section, tp in typing.get_type_hints(Config).items():
        if dataclasses.is_dataclass(tp):
            hints = typing.get_type_hints(tp)  # tuning fields are not configuration keys
            keys += [f"{section}.{f.name}" for f in dataclasses.fields(tp)
                     if is_key(f) and _is_number(hints[f.name])]
    keys += [f"smoothing.{name}" for name, tp in typing.get_type_hints(SmoothingParams).items()
             if _is_number(tp)]
    return keys


@pytest.mark.parametrize("key", numeric_keys())
@pytest.mark.parametrize("value", [HUGE, "1e300", "-" + HUGE])
def test_every_numeric_setting_is_bounded_in_the_file_and_the_environment(
    tmp_path: Path, key: str, value: str,
) -> None:
    section, name = key.split(".")
    cfg = tmp_path / "config.toml"
    cfg.write_text(f"[{section}]\n{name} = {value}\n")
    with pytest.raises(ConfigError) as err:
        load_config(cfg, env={})
    assert f"'{key}'" in str(err.value) and "\n" not in str(err.value)
    env = {f"GENRE_EDGE_{section.upper()}_{name.upper()}": value}
    with pytest.raises(ConfigError) as err:
        load_config(env=env)
    assert f"'{key}'" in str(err.value)


def test_the_defaults_are_inside_the_bounds() -> None:
    load_config(env={})  # every default passes its own range check
    SmoothingParams.from_dict(json.loads(
        (default_bundle_path() / "manifest.json").read_text())["smoothing"])


def _bundle_with_smoothing(tmp_path: Path, smoothing: dict) -> Path:
    bundle = tmp_path / "bundle"
    shutil.copytree(default_bundle_path(), bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["smoothing"] = {**manifest["smoothing"], **smoothing}
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


@pytest.mark.parametrize("where", ["file", "environment", "bundle", "bundle-classify"])
def test_out_of_range_smoothing_at_start_up_is_one_line(tmp_path: Path, where: str) -> None:
    args = ["listen", "--input", str(DEMO_CLIP), "--fast"]
    env = {}
    if where == "file":
        cfg = tmp_path / "config.toml"
        cfg.write_text(f"[smoothing]\naverage_windows = {HUGE}\n")
        args += ["--config", str(cfg)]
    elif where == "environment":
        env["GENRE_EDGE_SMOOTHING_AVERAGE_WINDOWS"] = HUGE
    else:
        bundle = _bundle_with_smoothing(tmp_path, {"average_windows": int(HUGE)})
        args = (["classify", str(DEMO_CLIP)] if where == "bundle-classify" else args)
        args += ["--bundle", str(bundle)]
    one_line_error(cli(*args, env=env), "average_windows must be between 1 and 3600")


def _deep_toml() -> str:
    return "log_level = " + "[" * 100_000 + "]" * 100_000 + "\n"


@pytest.mark.parametrize("case, needle", [
    ("a config file of 2 MB", "larger than 1024 KiB"),
    ("an integer of 5000 digits", "bad TOML"),
    ("arrays nested 100,000 deep", "nested too deeply"),
    ("a config path longer than the system allows", "cannot read config file"),
    ("an environment value of 100 KB", "more than 4096"),
    ("an environment value that is not UTF-8", "not valid UTF-8"),
    ("a log level that is a logging constant", "GENRE_EDGE_LOG_LEVEL"),
    ("a log level logging knows but genre-edge does not", "GENRE_EDGE_LOG_LEVEL"),
    ("a value of 10,000 digits in the environment", "inference.threads"),
])
def test_every_configuration_source_is_bounded_and_validated(
    tmp_path: Path, case: str, needle: str,
) -> None:
    cfg = tmp_path / "config.toml"
    args = ["listen", "--input", str(DEMO_CLIP), "--fast", "--config", str(cfg)]
    env: dict[str, str] = {}
    cfg.write_text("")
    if case == "a config file of 2 MB":
        cfg.write_text("# padding\n" * 200_000)
    elif case == "an integer of 5000 digits":
        cfg.write_text("[inference]\nthreads = " + "1" * 5000 + "\n")
    elif case == "arrays nested 100,000 deep":
        cfg.write_text(_deep_toml())
    elif case == "a config path longer than the system allows":
        args[-1] = "x" * 5000
    elif case == "an environment value of 100 KB":
        env["GENRE_EDGE_MQTT_URL"] = "mqtt://" + "b" * 100_000
    elif case == "a log level that is a logging constant":
        env["GENRE_EDGE_LOG_LEVEL"] = "BASIC_FORMAT"
        args = ["classify", str(DEMO_CLIP)]
    elif case == "a log level logging knows but genre-edge does not":
        env["GENRE_EDGE_LOG_LEVEL"] = "notset"
        args = ["classify", str(DEMO_CLIP)]
    elif case == "a value of 10,000 digits in the environment":
        env["GENRE_EDGE_INFERENCE_THREADS"] = "7" * 10_000
    if case == "an environment value that is not UTF-8":
        # os.environ decodes it with surrogates, which failed inside paho's encoder.
        environ = {os.fsencode(k): os.fsencode(v) for k, v in os.environ.items()}
        environ.update({b"GENRE_EDGE_CONFIG": b"", b"GENRE_EDGE_MQTT_USERNAME": b"dev\xff\xfe",
                        b"GENRE_EDGE_MQTT_URL": f"mqtt://127.0.0.1:{free_port()}".encode()})
        out = subprocess.run([sys.executable, "-m", "firmware_py", *args], capture_output=True,
                             text=True, timeout=120, env=environ)
    else:
        out = cli(*args, env=env)
    line = one_line_error(out, needle)
    assert len(line) < 600, "the message must not echo a huge value"


@pytest.mark.timeout(240)
def test_sighup_with_values_that_cannot_load_keeps_the_running_settings(
    tmp_path: Path, mqtt_broker, mqtt_subscriber,
) -> None:
    """Item 2: `average_windows = 1e20` then SIGHUP killed the service (OverflowError)."""
    cfg = tmp_path / "config.toml"
    base = (f'[source]\ninput = "{DEMO_CLIP}"\nloop = true\n'
            f'[mqtt]\nurl = "{mqtt_broker.url}"\ndevice_id = "hostile"\n')
    cfg.write_text(base + "[smoothing]\nmin_dwell_s = 5.0\n")
    sub = mqtt_subscriber(mqtt_broker, (STATE,))
    proc = listen("--config", str(cfg), "--log-level", "info")
    bad = [
        f"[smoothing]\naverage_windows = {HUGE}\n",
        "[smoothing]\nsegment_windows = 1e300\n",
        "[smoothing]\nmin_dwell_s = " + "9" * 5000 + "\n",
        "[smoothing]\nmin_top_windows = 5\n",  # more than average_windows: the merged check
        _deep_toml(),
    ]
    try:
        sub.wait_for(STATE, timeout=60)
        for text in bad:
            cfg.write_text(base + text if text.startswith("[") else text)
            before = len(sub.on_topic(STATE))
            proc.send_signal(signal.SIGHUP)
            sub.wait_count(STATE, before + 2, timeout=20)  # still streaming
            assert proc.poll() is None, "a failed reload stopped the service"
        cfg.write_text(base + "[smoothing]\nmin_dwell_s = 2.0\n")
        before = len(sub.on_topic(STATE))
        proc.send_signal(signal.SIGHUP)
        sub.wait_count(STATE, before + 2, timeout=20)
    finally:
        code, _, err = terminate(proc)
    assert code == 0, err[-2000:]
    assert "Traceback" not in err
    refused = lines_with(err, ["SIGHUP: configuration not reloaded, keeping the running one"])
    assert len(refused) == len(bad), err[-3000:]
    assert all(len(line) < 600 for line in refused)
    assert len(lines_with(err, ["SIGHUP: configuration reloaded"])) == 1
