"""Issue 16, the property-based suite: hypothesis generates hostile bundle manifests,
``listen --config`` files and WAV headers; the real CLI (``firmware_py.cli.main``
in-process, real files, the real interpreter and decoders) must answer each with exit
status 2 and exactly one ``genre-edge: error:`` line, no traceback, nothing written."""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from firmware_py.bundle import default_bundle_path
from firmware_py.commands import DEMO_CLIP
from firmware_py.config import config_keys
from tests.hostile_helpers import assert_one_line_error, cli_in_process, music_wav, wav_bytes

SETTINGS = settings(max_examples=200, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

# -- hostile JSON values ------------------------------------------------------------------
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-2**70, 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20),
)
_json = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=8)
_not_number = st.one_of(st.none(), st.booleans(), st.text(max_size=12),
                        st.lists(_scalars, max_size=3), st.dictionaries(st.text(max_size=5), _scalars,
                                                                         max_size=2))
#: An int field of the front-end: not a whole number, <= 0, or far beyond any bound.
_bad_int = st.one_of(_not_number, st.floats(allow_nan=True), st.integers(max_value=0),
                     st.integers(min_value=10**6, max_value=2**64))
#: A float field of the front-end: not a number, not finite, or negative (invalid for all).
_bad_float = st.one_of(_not_number, st.sampled_from([math.nan, math.inf, -math.inf]),
                       st.floats(max_value=-1e-3, allow_nan=False, allow_infinity=False))
_control = st.text(st.characters(categories=["Cc", "Cf", "Zl", "Zp"]), min_size=1, max_size=3)
_unprintable_name = st.builds(lambda a, c, b: a + c + b, st.text(max_size=5), _control,
                              st.text(max_size=5))
_not_object = st.one_of(st.booleans(), st.integers(), st.floats(), st.text(max_size=10),
                        st.lists(_scalars, max_size=3))

FRONTEND_INTS = ("sample_rate", "n_fft", "win_length", "hop_length", "n_mels", "window_frames")
FRONTEND_FLOATS = ("fmin", "fmax", "amin", "pcen_time_constant_s", "pcen_gain", "pcen_bias",
                   "pcen_power", "pcen_eps")


def _edits() -> st.SearchStrategy:
    """(dotted key, hostile value): every value is invalid for its key on its own."""
    return st.one_of(
        st.tuples(st.sampled_from([f"frontend.{k}" for k in FRONTEND_INTS]), _bad_int),
        st.tuples(st.sampled_from([f"frontend.{k}" for k in FRONTEND_FLOATS]), _bad_float),
        st.tuples(st.just("frontend.window"),
                  st.one_of(_not_number.filter(lambda v: v is not None),
                            st.text(min_size=1, max_size=8).map(lambda t: "no-such-" + t))),
        st.tuples(st.just("frontend.compression"),
                  st.one_of(_not_number, st.text(max_size=8)).filter(
                      lambda v: v not in ("log", "pcen"))),
        st.tuples(st.just("frontend.unknown_knob"), _json),
        st.tuples(st.sampled_from(["smoothing", "provenance", "metrics"]), _not_object),
        st.tuples(st.sampled_from(["frontend", "inference", "files"]), _not_object),
        st.tuples(st.just("labels"), st.one_of(
            _not_object.filter(lambda v: not isinstance(v, list)), st.just([]),
            st.lists(_not_number.filter(lambda v: not isinstance(v, str)), min_size=1, max_size=4),
            st.lists(_unprintable_name, min_size=1, max_size=4),
            st.just(["rock", "rock", "pop", "classical"]))),
        st.tuples(st.just("name"), st.one_of(_unprintable_name, st.text(min_size=65, max_size=80),
                                             st.integers(), st.lists(_scalars, min_size=1))),
        st.tuples(st.just("schema_version"), st.one_of(
            _not_number, st.integers().filter(lambda v: v != 1), st.floats())),
        st.tuples(st.just("inference.hop_s"), st.one_of(
            _not_number, st.sampled_from([math.nan, math.inf, 0.0, -1.0, 60.5, 1e300]))),
        st.tuples(st.just("inference.window_frames"),
                  st.one_of(_not_number, st.integers()).filter(lambda v: v != 300)),
        st.tuples(st.just("files.model.sha256"), st.one_of(_not_number, st.text(max_size=64))),
        st.tuples(st.just("files.model.path"), st.one_of(
            _not_number, st.sampled_from(["", ".", "..", "../model.tflite", "/etc/passwd",
                                          "manifest.json", "model_embedding.tflite", "nope"]))),
        st.tuples(st.just(""), _not_object),  # the whole manifest not an object
    )


def _apply(manifest: dict[str, Any], key: str, value: Any) -> Any:
    if not key:
        return value
    *parents, last = key.split(".")
    node = manifest
    for p in parents:
        node = node[p]
    node[last] = value
    return manifest


@SETTINGS
@given(edits=st.lists(_edits(), min_size=1, max_size=3))
def test_hostile_manifests_are_one_line_errors_and_write_nothing(edits) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "bundle"
        shutil.copytree(default_bundle_path(), bundle)
        manifest: Any = json.loads((bundle / "manifest.json").read_text())
        for key, value in edits:
            if not isinstance(manifest, dict) or (key.count(".") and not isinstance(
                    manifest.get(key.split(".")[0]), dict)):
                break  # an earlier edit replaced the section this one would go into
            if key == "files.model.sha256" or key == "files.model.path":
                assume(isinstance(manifest["files"].get("model"), dict))
            manifest = _apply(manifest, key, value)
        # json (as Python writes it) carries NaN/Infinity: a reader meets them in the wild
        (bundle / "manifest.json").write_text(json.dumps(manifest))
        code, out, err = cli_in_process(["classify", "--json", str(DEMO_CLIP), "--bundle",
                                         str(bundle)])
        assert_one_line_error(code, err)
        assert out == ""
        feats = Path(tmp) / "feats.npy"
        code, out, err = cli_in_process(["features", str(DEMO_CLIP), "--out", str(feats),
                                         "--bundle", str(bundle)])  # the manifest, no model
        assert_one_line_error(code, err)
        assert not feats.exists()  # nothing written half-way


# -- hostile listen configurations --------------------------------------------------------
def _toml_value(value: Any) -> str:
    """TOML text for a value (json's quoting is valid TOML for these strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return {math.inf: "inf", -math.inf: "-inf"}.get(value, "nan" if value != value else repr(value))
    if isinstance(value, (int, str)):
        return str(value) if isinstance(value, int) else json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"


def _expected_types() -> dict[str, tuple[type, ...]]:
    import dataclasses
    import typing

    from firmware_py.bounds import is_key
    from firmware_py.config import SECTIONS
    from firmware_py.smoothing import SmoothingParams

    out: dict[str, tuple[type, ...]] = {"bundle": (str,), "log_level": (str,)}
    for name, cls in SECTIONS.items():
        hints = typing.get_type_hints(cls)
        # tuning fields (MqttSettings' reconnect delays, ...) are not configuration keys
        for key in (f.name for f in dataclasses.fields(cls) if is_key(f)):
            tp = hints[key]
            args = typing.get_args(tp) or (tp,)
            out[f"{name}.{key}"] = tuple(a for a in args if a is not type(None))
    for key in SmoothingParams.field_names():
        out[f"smoothing.{key}"] = (float, int)
    return out


TYPES = _expected_types()
_toml_scalar = st.one_of(st.booleans(), st.integers(-2**63, 2**63 - 1),
                         st.floats(allow_nan=True, allow_infinity=True),
                         st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]),
                                 max_size=12))
_toml_any = st.one_of(_toml_scalar, st.lists(_toml_scalar, max_size=3),
                      st.dictionaries(st.text("abcxyz", min_size=1, max_size=4), _toml_scalar,
                                      max_size=2))


def _wrong_type(key: str) -> st.SearchStrategy:
    allowed = TYPES[key]

    def wrong(v: Any) -> bool:
        if isinstance(v, bool):
            return bool not in allowed
        if isinstance(v, int):
            return int not in allowed and float not in allowed
        if isinstance(v, float):
            return float not in allowed or not math.isfinite(v)
        return not isinstance(v, allowed)
    return _toml_any.filter(wrong)


@st.composite
def _hostile_config(draw) -> str:
    kind = draw(st.sampled_from(["wrong type", "unknown key", "unknown section", "not a table",
                                 "bad enum", "garbage"]))
    if kind == "garbage":  # text TOML refuses, or that holds a key no section knows
        text = draw(st.text(max_size=60))
        try:
            import tomllib

            parsed = tomllib.loads(text)
        except Exception:  # noqa: BLE001 - a TOML syntax error: what we want
            return text
        assume(set(parsed) - {"bundle", "log_level", *(k.split(".")[0] for k in TYPES)})
        return text
    if kind == "wrong type":
        key = draw(st.sampled_from(sorted(TYPES)))
        value = draw(_wrong_type(key))
    elif kind == "unknown key":
        section = draw(st.sampled_from(["source", "inference", "mqtt", "output", "similarity",
                                        "smoothing"]))
        key = f"{section}.{draw(st.sampled_from(['urll', 'thread', 'x', 'passwd', 'hop']))}"
        assume(key not in TYPES)
        value = draw(_toml_scalar)
    elif kind == "unknown section":
        key, value = f"{draw(st.sampled_from(['sorce', 'mqqt', 'display', 'x']))}.key", 1
    elif kind == "not a table":
        key = draw(st.sampled_from(["source", "inference", "mqtt", "output", "similarity",
                                    "smoothing"]))
        value = draw(_toml_scalar)
        return f"{key} = {_toml_value(value)}\n"
    else:
        key = draw(st.sampled_from(["log_level", "inference.edgetpu", "mqtt.url", "output.http"]))
        value = draw(st.sampled_from(["loud", "usb3", "tcp://127.0.0.1", "not a host:80",
                                      "mqtt://[::1", "127.0.0.1:99999"]))
    if "." not in key:
        return f"{key} = {_toml_value(value)}\n"
    section, name = key.split(".", 1)
    return f"[{section}]\n{json.dumps(name)} = {_toml_value(value)}\n"


@SETTINGS
@given(text=_hostile_config())
def test_hostile_listen_configs_are_one_line_errors(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.toml"
        path.write_text(text, encoding="utf-8", errors="surrogateescape")
        path.chmod(0o600)
        code, out, err = cli_in_process(["listen", "--config", str(path), "--print-config"])
        assert_one_line_error(code, err)
        assert out == ""


def test_the_config_generator_knows_every_key() -> None:
    assert set(TYPES) == set(config_keys())


# -- hostile WAV headers ------------------------------------------------------------------
_rates = st.one_of(st.sampled_from([0, 1, 3999, 4000, 8000, 16000, 44100, 768000, 768001,
                                    40_000_000, 2**32 - 1]), st.integers(0, 2**32 - 1))
_channels = st.one_of(st.sampled_from([0, 1, 2, 3, 255, 1024, 1025, 65535]),
                      st.integers(0, 65535))
_bits = st.one_of(st.sampled_from([0, 1, 4, 7, 8, 12, 16, 20, 24, 32, 48, 64, 65535]),
                  st.integers(0, 65535))
_formats = st.one_of(st.sampled_from([1, 3, 6, 7, 0x11, 0xFFFE, 0]), st.integers(0, 65535))
_sizes = st.one_of(st.none(), st.sampled_from([0, 1, 2**31, 2**32 - 1]), st.integers(0, 2**32 - 1))


@SETTINGS
@given(rate=_rates, channels=_channels, bits=_bits, fmt=_formats, data_size=_sizes,
       block_align=st.one_of(st.none(), st.integers(0, 65535)),
       byte_rate=st.one_of(st.none(), st.integers(0, 2**32 - 1)),
       payload=st.binary(max_size=4000))
def test_hostile_wav_headers_are_one_line_errors(rate, channels, bits, fmt, data_size,
                                                 block_align, byte_rate, payload) -> None:
    """At most 4000 bytes of samples: under one 3 s model window at any accepted rate and
    sample size (even 4-bit ADPCM at 4 kHz), so a header that decodes is refused as too short, one that does not as
    undecodable, and one outside the accepted rates as such; never a traceback or a hang."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "hostile.wav"
        path.write_bytes(wav_bytes(rate=rate, channels=channels, bits=bits, fmt=fmt,
                                   payload=payload, data_size=data_size,
                                   block_align=block_align, byte_rate=byte_rate))
        code, out, err = cli_in_process(["classify", "--json", str(path)])
        # A file below the model's 16 kHz that decodes draws its documented warning first
        # (README: "a file sampled below 16 kHz is classified with a warning").
        err = "\n".join(line for line in err.splitlines()
                        if " WARNING firmware_py.audio: " not in line or "reaches the model" not in line)
        assert_one_line_error(code, err, "hostile.wav")
        assert out == ""
        feats = Path(tmp) / "f.npy"
        code, out, err = cli_in_process(["features", str(path), "--out", str(feats)])
        if code != 0:
            assert not feats.exists()


def test_a_valid_header_of_the_same_generator_classifies(tmp_path: Path) -> None:
    """The generator's own control: real music in the same hand-made header works."""
    import soundfile

    src = music_wav(tmp_path / "src.wav", seconds=5.0)
    samples, _ = soundfile.read(src, dtype="int16")
    path = tmp_path / "handmade.wav"
    path.write_bytes(wav_bytes(rate=16000, payload=samples.astype("<i2").tobytes()))
    code, out, err = cli_in_process(["classify", "--json", str(path)])
    assert code == 0 and json.loads(out)["windows"] == 2, err
