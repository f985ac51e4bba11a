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

Each section is declared by the component it configures, with its defaults, ranges and
help on the fields (``[source]``: :class:`~firmware_py.sources.settings.SourceConfig`,
``[inference]``: :class:`~firmware_py.pipeline.InferenceConfig`, ``[similarity]``:
:class:`~firmware_py.similarity.SimilarityConfig`, ``[smoothing]``:
:class:`~firmware_py.smoothing.SmoothingParams`, ``[mqtt]``:
:class:`~firmware_py.mqtt.settings.MqttSettings`, ``[output]``:
:class:`~firmware_py.sinks.console.OutputConfig`); this package only composes them
(:class:`Config`) and reads the layers. Components never import it. Reading one value
(types, text bounds, the non-range rules) is :mod:`.values`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import stat
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..bounds import is_key
from ..errors import ConfigError, GenreEdgeError
from ..mqtt.settings import MqttSettings
from ..pipeline import InferenceConfig
from ..similarity import SimilarityConfig
from ..sinks.console import OutputConfig
from ..smoothing import SmoothingParams
from ..sources.settings import SourceConfig
from .values import (
    EDGETPU_KINDS,
    LOG_LEVELS,
    MAX_TEXT,
    check_value,
    convert,
    got,
    parse_text,
    unknown,
)

__all__ = [
    "DEFAULT_CONFIG_PATH", "EDGETPU_KINDS", "ENV_PREFIX", "LOG_LEVELS", "MAX_CONFIG_BYTES",
    "MAX_TEXT", "REDACTED", "Config", "ConfigError", "InferenceConfig", "MqttConfig",
    "MqttSettings", "OutputConfig", "SimilarityConfig", "SourceConfig", "config_keys", "load_config",
]

log = logging.getLogger(__name__)
#: The ``[mqtt]`` section's old name (the section is the publisher's own settings now).
MqttConfig = MqttSettings

#: Where the installer puts the configuration (the systemd unit passes it as --config).
DEFAULT_CONFIG_PATH = "/etc/genre-edge/config.toml"
ENV_PREFIX = "GENRE_EDGE_"
REDACTED = "***"
#: Size bounds of every configuration source: the file, and each text value (file,
#: environment or flag; PATH_MAX is 4096).
MAX_CONFIG_BYTES = 1 << 20


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
    mqtt: MqttSettings = field(default_factory=MqttSettings)
    output: OutputConfig = field(default_factory=OutputConfig)
    similarity: SimilarityConfig = field(default_factory=SimilarityConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of the configuration keys (contains the password: use
        :meth:`redacted` for logs)."""
        data = dataclasses.asdict(self)
        for name, cls in _SECTIONS.items():
            for spec in dataclasses.fields(cls):
                if not is_key(spec):
                    del data[name][spec.name]
        return data

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
    "mqtt": MqttSettings,
    "output": OutputConfig,
    "similarity": SimilarityConfig,
}
_TOP_LEVEL = ("bundle", "log_level")
_ALL_SECTIONS = (*_SECTIONS, "smoothing")


def _key_fields(cls: type) -> list[dataclasses.Field[Any]]:
    """The fields of a section that are configuration keys (not :func:`~firmware_py.bounds.tuning`)."""
    return [f for f in dataclasses.fields(cls) if is_key(f)]


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def config_keys() -> list[str]:
    """Every dotted key the file accepts (``smoothing.*`` from SmoothingParams)."""
    keys = list(_TOP_LEVEL)
    for name, cls in _SECTIONS.items():
        keys += [f"{name}.{f.name}" for f in _key_fields(cls)]
    keys += [f"smoothing.{name}" for name in SmoothingParams.field_names()]
    return keys


def _field_spec(key: str) -> dataclasses.Field[Any] | None:
    section, _, name = key.rpartition(".")
    cls = _SECTIONS.get(section)
    return next((f for f in _key_fields(cls) if f.name == name), None) if cls else None


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
        parse_text(value, tp, dotted, where) if text else convert(value, tp, dotted, where)
    )
    setattr(target, key, check_value(dotted, converted, where, _field_spec(dotted)))


def _set_smoothing(cfg: Config, key: str, value: Any, where: str, *, text: bool) -> None:
    names = SmoothingParams.field_names()
    if key not in names:
        raise unknown("key", f"smoothing.{key}", [f"smoothing.{n}" for n in names], where)
    if text:
        tp = _hints(SmoothingParams)[key]
        value = parse_text(value, tp, f"smoothing.{key}", where)
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
                    f"config key '{name}'{where} must be a table ([{name}]), got {got(value)}"
                )
            valid = _section_keys(name)
            for key, sub in value.items():
                if key not in valid:
                    raise unknown("key", f"{name}.{key}", [f"{name}.{k}" for k in valid], where)
                _set(cfg, name, key, sub, where, text=False)
        else:
            kind = "section" if isinstance(value, Mapping) else "key"
            raise unknown(kind, name, top_valid, where)


def _section_keys(section: str) -> list[str]:
    if section == "smoothing":
        return SmoothingParams.field_names()
    return [f.name for f in _key_fields(_SECTIONS[section])]


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
    # Imported here, not at the top: a device run without a config file (the benchmark,
    # env-only services) then never loads the TOML parser.
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
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
            import difflib  # only for a misspelt variable: not loaded on every start

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
