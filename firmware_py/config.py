"""One typed configuration object for ``genre-edge listen``.

Layers, later ones win::

    defaults (this module)  <  TOML file (--config)  <  GENRE_EDGE_* environment  <  flags

* **File**: TOML with the sections ``[source]``, ``[inference]``, ``[smoothing]``,
  ``[mqtt]``, ``[output]`` and the top-level keys ``bundle`` and ``log_level``; see
  ``deploy/config.example.toml`` for every key with its default and meaning.
* **Environment**: ``GENRE_EDGE_<SECTION>_<KEY>`` (``GENRE_EDGE_MQTT_URL``,
  ``GENRE_EDGE_MQTT_PASSWORD``, ``GENRE_EDGE_INFERENCE_THREADS``, ...) and
  ``GENRE_EDGE_BUNDLE`` / ``GENRE_EDGE_LOG_LEVEL``; values are parsed to the key's type
  (booleans: 1/0, true/false, yes/no, on/off); an empty value means "not set" for keys
  that may be unset. ``GENRE_EDGE_CONFIG`` names the file when no path is given.
  Other ``GENRE_EDGE_*`` variables (``GENRE_EDGE_DATA``, ...) are not configuration and
  are ignored; an unknown key inside a known section (``GENRE_EDGE_MQTT_PASWORD``) is
  logged as a warning rather than refused, because the environment is shared with
  other tools.
* **Flags**: a dict, nested (``{"mqtt": {"url": ...}}``) or dotted
  (``{"mqtt.url": ...}``); ``None`` values mean "flag not given" and are skipped.

Every source is bounded: the file at :data:`MAX_CONFIG_BYTES`, each text value (file,
environment or flag) at :data:`MAX_TEXT` characters of valid UTF-8, and every numeric key
by the range declared on its field (:func:`~firmware_py.bounds.knob`; the smoothing
keys' on :class:`~firmware_py.smoothing.SmoothingParams`). Every problem is a one-line
:class:`~firmware_py.errors.ConfigError` naming the key, what was expected and what was
found (long values cut short). The MQTT password never appears in ``repr`` or
in :meth:`Config.redacted`; a world-readable file that holds it draws a warning.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
import os
import stat
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from .bounds import knob, range_problem
from .bundle import MAX_HOP_S
from .errors import ConfigError, GenreEdgeError, brief
from .smoothing import SmoothingParams

log = logging.getLogger(__name__)

#: Where the installer puts the configuration (the systemd unit passes it as --config).
DEFAULT_CONFIG_PATH = "/etc/genre-edge/config.toml"
ENV_PREFIX = "GENRE_EDGE_"
REDACTED = "***"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
#: Size bounds of every configuration source: the file, and each text value (file,
#: environment or flag; PATH_MAX is 4096).
MAX_CONFIG_BYTES = 1 << 20
MAX_TEXT = 4096
EDGETPU_KINDS = ("usb", "pci")


@dataclass
class SourceConfig:
    """Where audio comes from: a microphone (default) or a file (``input``).

    Attributes
    ----------
    device : str or int or None
        Microphone: PortAudio device index or case-insensitive name substring; None is
        the system default input. A string of digits is an index.
    input : str or None
        Audio file to play instead of a microphone (wav, flac, ogg/opus, mp3).
    realtime : bool
        Play ``input`` at real time (True) or as fast as the device loop takes it.
    loop : bool
        Play ``input`` over and over (demos, long-run tests).
    block_s : float
        Audio block length in seconds handed to the device loop.
    device_rate : int or None
        Force this microphone sample rate in Hz; None negotiates one.
    retry_s : float
        Seconds between attempts to reopen a microphone that went away.
    stall_timeout_s : float
        Seconds without audio after which a microphone counts as gone.
    max_queue_s : float
        Seconds of microphone audio buffered before blocks are dropped (and counted).
    """

    device: str | int | None = None
    input: str | None = None
    realtime: bool = True
    loop: bool = False
    # Ranges (see firmware_py.bounds): a minute of queued audio is ~11 MB at 48 kHz stereo.
    block_s: float = knob(0.1, 0.001, 10.0, " seconds")
    device_rate: int | None = knob(None, 1000, 768000, " Hz")
    retry_s: float = knob(2.0, 0.01, 3600.0, " seconds")
    stall_timeout_s: float = knob(2.0, 0.01, 3600.0, " seconds")
    max_queue_s: float = knob(2.0, 0.01, 60.0, " seconds")


@dataclass
class InferenceConfig:
    """How the model runs.

    Attributes
    ----------
    threads : int
        Interpreter threads (1 leaves a core for audio and MQTT on a Pi).
    edgetpu : str or None
        ``"usb"`` or ``"pci"`` to use a Coral Edge TPU (CPU fallback when none is found).
    hop_s : float or None
        Seconds between inferences; None takes the bundle's value.
    """

    threads: int = knob(1, 1, 64)
    edgetpu: str | None = None
    hop_s: float | None = knob(None, 0.01, MAX_HOP_S, " seconds")


@dataclass
class MqttConfig:
    """MQTT publishing (off while ``url`` is None). Fields mirror ``mqtt.MqttSettings``.

    Attributes
    ----------
    url : str or None
        ``mqtt://host[:port]`` or ``mqtts://host[:port]`` (TLS).
    username, password : str or None
        Broker login. The password is never logged or shown in ``repr``.
    ca_file, cert_file, key_file : str or None
        TLS: CA bundle, and client certificate and key for mutual TLS.
    tls_insecure : bool
        Skip the host-name check (the certificate must still chain to ``ca_file``).
    device_id : str or None
        Device id in topics and Home Assistant; None uses the host name.
    topic_prefix : str or None
        Topic prefix; None is ``genre-edge/<device_id>``.
    discovery_prefix : str
        Home Assistant discovery prefix.
    qos : int
        QoS of every message (1: at least once).
    keepalive_s : int
        MQTT keep-alive in seconds.
    expire_after_s : int
        Home Assistant marks the sensors unavailable after this many seconds without
        a state (0: never).
    queue_size : int
        Messages kept while the broker is away (oldest dropped, count reported).
    stats_interval_s : float
        Seconds between ``<prefix>/stats`` messages.
    """

    url: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    tls_insecure: bool = False
    device_id: str | None = None
    topic_prefix: str | None = None
    discovery_prefix: str = "homeassistant"
    qos: int = 1
    # MQTT carries the keep-alive in 16 bits; a queued state is ~0.5 KB (100,000: ~50 MB).
    keepalive_s: int = knob(30, 5, 65535, " seconds")
    expire_after_s: int = knob(120, 0, 604800, " seconds (0: never)")
    queue_size: int = knob(1000, 1, 100_000)
    stats_interval_s: float = knob(60.0, 1.0, 86400.0, " seconds")


@dataclass
class OutputConfig:
    """Local outputs.

    Attributes
    ----------
    json : bool
        Console output as JSON lines instead of human lines.
    changes_only : bool
        Human console output: print only when the published genre changes.
    http : str or None
        ``host:port`` for a small local HTTP status endpoint; None is off.
    """

    json: bool = False
    changes_only: bool = False
    http: str | None = None


@dataclass
class SimilarityConfig:
    """"Sounds like": publish the indexed track nearest to what is playing.

    Attributes
    ----------
    index : str or None
        An index made by ``genre-edge index FOLDER --out INDEX`` with the same bundle;
        None turns the feature off.
    every_s : float
        Seconds between look-ups.
    window_s : float
        Seconds of recent audio whose window embeddings are averaged for the look-up.
    """

    index: str | None = None
    every_s: float = knob(10.0, 1.0, 3600.0, " seconds")
    window_s: float = knob(30.0, 3.0, 600.0, " seconds")


@dataclass
class Config:
    """Everything ``genre-edge listen`` needs besides the bundle's own settings.

    Attributes
    ----------
    bundle : str or None
        Model bundle directory; None uses the bundled model.
    log_level : str
        ``debug``, ``info``, ``warning``, ``error`` or ``critical``.
    smoothing : dict
        Overrides of the bundle's smoothing defaults (keys of
        :class:`~firmware_py.smoothing.SmoothingParams`), checked per key here and as a
        whole once merged with the bundle's values.
    """

    bundle: str | None = None
    log_level: str = "warning"
    source: SourceConfig = field(default_factory=SourceConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    smoothing: dict[str, Any] = field(default_factory=dict)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    similarity: SimilarityConfig = field(default_factory=SimilarityConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (contains the password: use :meth:`redacted` for logs)."""
        return dataclasses.asdict(self)

    def redacted(self) -> dict[str, Any]:
        """Nested dict safe to log or publish: the password is ``"***"`` when set."""
        data = self.to_dict()
        if data["mqtt"]["password"] is not None:
            data["mqtt"]["password"] = REDACTED
        return data

    def smoothing_params(self, bundle_defaults: Mapping[str, Any] | None = None) -> SmoothingParams:
        """The bundle's smoothing defaults with this config's overrides on top."""
        merged = {**(bundle_defaults or {}), **self.smoothing}
        try:
            return SmoothingParams.from_dict(merged)
        except GenreEdgeError as exc:  # same text, as a configuration error
            raise ConfigError(str(exc)) from None


_SECTIONS: dict[str, type] = {
    "source": SourceConfig,
    "inference": InferenceConfig,
    "mqtt": MqttConfig,
    "output": OutputConfig,
    "similarity": SimilarityConfig,
}
_TOP_LEVEL = ("bundle", "log_level")
_ALL_SECTIONS = (*_SECTIONS, "smoothing")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def config_keys() -> list[str]:
    """Every dotted key the file accepts (``smoothing.*`` from SmoothingParams)."""
    keys = list(_TOP_LEVEL)
    for name, cls in _SECTIONS.items():
        keys += [f"{name}.{f.name}" for f in dataclasses.fields(cls)]
    keys += [f"smoothing.{name}" for name in SmoothingParams.field_names()]
    return keys


# -- types --------------------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    if tp in names:
        return names[tp]
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return " or ".join(_type_name(a) for a in args)


def _secret(key: str) -> bool:
    """Keys whose values never appear in a message (``mqtt.password``)."""
    return key.rsplit(".", 1)[-1] == "password"


def _got(value: Any, key: str = "") -> str:
    """``integer 4`` for a message; only the type for a secret key (a PIN-like password
    written without quotes must not reach the journal)."""
    kinds = {bool: "boolean", int: "integer", float: "number", str: "string"}
    kind = kinds.get(type(value), type(value).__name__)
    if _secret(key):
        return f"{kind} (value hidden)"
    return f"{kind} {brief(value)}"


def _shown(value: Any, key: str) -> str:
    return "(value hidden)" if _secret(key) else brief(value)


def _optional(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType) and type(None) in typing.get_args(tp)


def _members(tp: Any) -> list[Any]:
    if typing.get_origin(tp) in (Union, types.UnionType):
        return [a for a in typing.get_args(tp) if a is not type(None)]
    return [tp]


def _convert(value: Any, tp: Any, key: str, where: str) -> Any:
    """A typed value (TOML, flags) checked against ``tp``; ints widen to float."""
    if value is None and _optional(tp):
        return None
    members = _members(tp)
    if isinstance(value, bool):
        if bool in members:
            return value
    elif isinstance(value, int) and int in members:
        return value
    elif isinstance(value, (int, float)) and float in members:
        return float(value)
    elif isinstance(value, str) and str in members:
        return value
    fix = "write it in quotes" if _secret(key) and str in members else "fix the value"
    raise ConfigError(
        f"config key '{key}'{where} must be {_type_name(tp)}, got {_got(value, key)}: {fix}"
    )


def _parse_text(text: str, tp: Any, key: str, where: str) -> Any:
    """A string (environment variable) parsed to ``tp``."""
    _check_text(key, text, where)  # bounded before it is parsed
    text = text.strip()
    if text == "" and _optional(tp):
        return None
    members = _members(tp)
    if bool in members:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
    if int in members:
        try:
            return int(text)
        except ValueError:
            pass
    if float in members:
        try:
            return float(text)
        except ValueError:
            pass
    if str in members:
        return text
    raise ConfigError(
        f"config key '{key}'{where} must be {_type_name(tp)}, got {_shown(text, key)}: fix the value"
    )


# -- value checks -------------------------------------------------------------------------
# Numeric ranges are declared on the fields (knob); these are the other value rules.
_CHECKS: dict[str, tuple[typing.Callable[[Any], bool], str]] = {
    "log_level": (lambda v: v.lower() in LOG_LEVELS, f"one of {', '.join(LOG_LEVELS)}"),
    "inference.edgetpu": (lambda v: v in EDGETPU_KINDS, "'usb' or 'pci'"),
    "mqtt.qos": (lambda v: v in (0, 1, 2), "0, 1 or 2"),
}


def _field_spec(key: str) -> dataclasses.Field[Any] | None:
    section, _, name = key.rpartition(".")
    cls = _SECTIONS.get(section)
    return next((f for f in dataclasses.fields(cls) if f.name == name), None) if cls else None


def _check_text(key: str, value: str, where: str) -> None:
    """Every text setting: at most MAX_TEXT characters of encodable Unicode (an environment
    value that is not UTF-8 arrives with lone surrogates and fails far from here)."""
    if len(value) > MAX_TEXT:
        raise ConfigError(f"config key '{key}'{where} is {len(value)} characters long, more than "
                          f"{MAX_TEXT}: fix the value")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"config key '{key}'{where} is not valid UTF-8 text: fix the value "
                          "(check the locale or encoding it was written with)") from None
    if "\0" in value:
        raise ConfigError(f"config key '{key}'{where} contains a NUL character: fix the value")


def _check_value(key: str, value: Any, where: str) -> Any:
    if value is None:
        return None
    if isinstance(value, str):
        _check_text(key, value, where)
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(
            f"config key '{key}'{where} must be finite, got {_shown(value, key)}: fix the value"
        )
    spec = _field_spec(key)
    out_of_range = range_problem(spec, value) if spec is not None else None
    if out_of_range:
        raise ConfigError(f"config key '{key}'{where} {out_of_range}: fix the value")
    if key == "source.device" and isinstance(value, str):
        from .sources import device_spec  # the microphone source's own reading of --device

        value = device_spec(value)
        if value is None:
            return None
    if key == "log_level":
        value = value.lower()
    check = _CHECKS.get(key)
    if check is not None and not check[0](value):
        raise ConfigError(f"config key '{key}'{where} must be {check[1]}, got {_shown(value, key)}")
    if key == "mqtt.url":
        _check_mqtt_url(value, where)
    if key == "output.http":
        _check_http_address(value, where)
    return value


def _check_http_address(value: str, where: str) -> None:
    from .display import parse_http_address  # one address grammar: the display server's

    try:
        parse_http_address(value)
    except ConfigError as exc:
        raise ConfigError(f"config key 'output.http'{where}: {exc}") from None


def _check_mqtt_url(url: str, where: str) -> None:
    try:  # one URL grammar for the whole program: the MQTT module's
        from .mqtt import parse_mqtt_url
    except ImportError:  # paho missing: the publisher will say so when it starts
        return
    try:
        parse_mqtt_url(url)
    except ConfigError as exc:
        raise ConfigError(f"config key 'mqtt.url'{where}: {exc}") from None


def _unknown(kind: str, name: str, valid: list[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return ConfigError(f"unknown config {kind} '{name}'{where}: {hint}valid: {', '.join(valid)}")


# -- applying layers ------------------------------------------------------------------------
def _set(cfg: Config, section: str | None, key: str, value: Any, where: str, *, text: bool) -> None:
    """Set one key (``section`` None: top level), converting and checking the value."""
    if section is None:
        dotted, target, hints = key, cfg, _hints(Config)
    elif section == "smoothing":
        _set_smoothing(cfg, key, value, where, text=text)
        return
    else:
        dotted, target, hints = f"{section}.{key}", getattr(cfg, section), _hints(_SECTIONS[section])
    tp = hints[key]
    converted = (
        _parse_text(value, tp, dotted, where) if text else _convert(value, tp, dotted, where)
    )
    setattr(target, key, _check_value(dotted, converted, where))


def _set_smoothing(cfg: Config, key: str, value: Any, where: str, *, text: bool) -> None:
    names = SmoothingParams.field_names()
    if key not in names:
        raise _unknown("key", f"smoothing.{key}", [f"smoothing.{n}" for n in names], where)
    if text:
        tp = _hints(SmoothingParams)[key]
        value = _parse_text(value, tp, f"smoothing.{key}", where)
    problems = SmoothingParams.field_problems({key: value})
    if problems:
        raise ConfigError(f"config key 'smoothing.{key}'{where}: {problems[0]}")
    cfg.smoothing[key] = value


def _apply_tree(cfg: Config, data: Mapping[str, Any], where: str) -> None:
    """Apply a nested mapping (a TOML document or nested flags)."""
    top_valid = [*_TOP_LEVEL, *_ALL_SECTIONS]
    for name, value in data.items():
        if name in _TOP_LEVEL:
            _set(cfg, None, name, value, where, text=False)
        elif name in _ALL_SECTIONS:
            if not isinstance(value, Mapping):
                raise ConfigError(
                    f"config key '{name}'{where} must be a table ([{name}]), got {_got(value)}"
                )
            valid = _section_keys(name)
            for key, sub in value.items():
                if key not in valid:
                    raise _unknown("key", f"{name}.{key}", [f"{name}.{k}" for k in valid], where)
                _set(cfg, name, key, sub, where, text=False)
        else:
            kind = "section" if isinstance(value, Mapping) else "key"
            raise _unknown(kind, name, top_valid, where)


def _section_keys(section: str) -> list[str]:
    if section == "smoothing":
        return SmoothingParams.field_names()
    return [f.name for f in dataclasses.fields(_SECTIONS[section])]


def _read_file(path: Path) -> dict[str, Any]:
    shown = str(path) if len(str(path)) <= 200 else str(path)[:197] + "..."
    try:
        if not path.exists():
            raise ConfigError(
                f"config file not found: {shown}: check --config "
                "(deploy/config.example.toml shows every option)"
            )
        if path.is_dir():
            raise ConfigError(f"config path {shown} is a directory: give the TOML file")
        # Read at most one byte past the limit: a FIFO or /dev/zero must not fill memory.
        with open(path, "rb") as fh:
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:  # no permission, a name too long, ...
        raise ConfigError(
            f"cannot read config file {shown} ({exc.strerror or exc}): check the path and its "
            "permissions"
        ) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"config file {shown} is larger than {MAX_CONFIG_BYTES // 1024} KiB: "
                          "give the genre-edge TOML file (deploy/config.example.toml is 8 KiB)")
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"config file {shown} is not UTF-8 text: save it as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"bad TOML in {shown}: {exc}: fix the syntax") from None
    except (ValueError, RecursionError) as exc:  # an integer of 5000 digits, [[[[...]]]]
        what = "nested too deeply" if isinstance(exc, RecursionError) else str(exc).split(":")[0]
        raise ConfigError(f"bad TOML in {shown}: {what}: fix the value") from None


def _warn_if_world_readable(path: Path, data: Mapping[str, Any]) -> None:
    mqtt = data.get("mqtt")
    if not (isinstance(mqtt, Mapping) and mqtt.get("password")):
        return
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & stat.S_IROTH:
        log.warning(
            "config file %s holds the MQTT password and is readable by every user: "
            "run 'chmod o-rwx %s' (the service reads it through its group: deploy/install.sh "
            "makes it root:genre-edge 0640)", path, path,
        )


def _apply_env(cfg: Config, env: Mapping[str, str]) -> None:
    sections = sorted(_ALL_SECTIONS, key=len, reverse=True)
    for name in sorted(env):
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX):].lower()
        where = f" (environment variable {name})"
        if rest in _TOP_LEVEL:
            _set(cfg, None, rest, env[name], where, text=True)
            continue
        section = next((s for s in sections if rest.startswith(s + "_")), None)
        if section is None:
            continue  # GENRE_EDGE_DATA, GENRE_EDGE_CONFIG, ...: not configuration keys
        key = rest[len(section) + 1:]
        valid = _section_keys(section)
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f" (did you mean {ENV_PREFIX}{section.upper()}_{close[0].upper()}?)" if close else ""
            log.warning("ignoring environment variable %s: [%s] has no key %r%s",
                        name, section, key, hint)
            continue
        _set(cfg, section, key, env[name], where, text=True)


def _flatten_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Nested and dotted flag dicts -> nested, dropping ``None`` (flag not given)."""
    tree: dict[str, Any] = {}
    for name, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, Mapping):
            for key, sub in value.items():
                if sub is not None:
                    tree.setdefault(name, {})[key] = sub
        elif "." in name:
            section, key = name.split(".", 1)
            tree.setdefault(section, {})[key] = value
        else:
            tree[name] = value
    return tree


def load_config(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Defaults, then the TOML file, then ``GENRE_EDGE_*`` variables, then flags.

    Parameters
    ----------
    path : str or PathLike, optional
        TOML file; None uses ``$GENRE_EDGE_CONFIG`` if set, else no file.
    env : Mapping[str, str], optional
        Environment to read ``GENRE_EDGE_*`` from (``os.environ`` when None).
    overrides : Mapping, optional
        Command-line flags, nested or dotted; ``None`` values are skipped.

    Raises
    ------
    ConfigError
        One line naming the file, key or variable, what was expected and what was found.
    """
    env = os.environ if env is None else env
    cfg = Config()
    if path is None and env.get(ENV_PREFIX + "CONFIG"):
        path = env[ENV_PREFIX + "CONFIG"]
    if path is not None:
        file = Path(path)
        data = _read_file(file)
        _apply_tree(cfg, data, f" in {file}")
        _warn_if_world_readable(file, data)
    _apply_env(cfg, env)
    if overrides:
        _apply_tree(cfg, _flatten_overrides(overrides), " (command line)")
    return cfg
