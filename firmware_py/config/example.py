"""The example configuration file, generated from the settings' declarations.

``deploy/config.example.toml`` is this module's output (a test compares them;
``make example-config`` or ``genre-edge listen --example-config`` writes it): every key
with its help text and its default, or, for a key unset by default, an example value,
commented out.
"""

from __future__ import annotations

import json
import math
import re
import textwrap
from typing import Any

from ..bounds import declared, key_fields
from . import ALL_SECTIONS, TopLevel, section_class

WIDTH = 90

HEADER = """\
genre-edge configuration: `genre-edge listen --config /etc/genre-edge/config.toml`

Every option is shown commented out with its default value (or, for options that are
unset by default, an example value). Uncomment and edit what you need. This file is
generated from the settings' declarations (`genre-edge listen --example-config`).

Precedence, later wins: this file < GENRE_EDGE_<SECTION>_<KEY> environment variables
(e.g. GENRE_EDGE_MQTT_PASSWORD, GENRE_EDGE_INFERENCE_THREADS) < command-line flags.
Keys marked "(live)" are applied on SIGHUP (systemctl reload genre-edge); every other
change needs a restart.

If this file holds the MQTT password, keep it unreadable by other users: deploy/install.sh
makes it root:genre-edge 0640 (the service reads it through its group; do not chmod 600,
which locks the service out). Or leave the password out and set GENRE_EDGE_MQTT_PASSWORD
in /etc/genre-edge/environment (root, 0600; systemd reads it for the service)."""


def toml_value(value: Any) -> str:
    """A TOML literal of a setting's value (booleans, numbers, strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"no TOML literal for {value!r}")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    raise TypeError(f"no TOML literal for {type(value).__name__}")


_KEY_LINE = re.compile(r"^# [a-z_]+ = ")


def _comment(text: str) -> list[str]:
    """``text`` as ``# `` lines; no line may look like a commented-out key (``# unset =
    off`` would be one for a reader uncommenting lines, and for the test that does)."""
    for width in range(WIDTH - 2, WIDTH - 22, -1):
        lines = textwrap.wrap(text, width, initial_indent="# ", subsequent_indent="# ",
                              break_on_hyphens=False)
        if not any(_KEY_LINE.match(line) for line in lines):
            return lines
    raise ValueError(f"cannot wrap {text[:40]!r}... without a line that looks like a key")


def _key_lines(cls: type) -> list[str]:
    lines: list[str] = []
    for spec in key_fields(cls):
        value = spec.default if spec.default is not None else declared(spec, "example")
        if value is None:
            raise ValueError(f"{cls.__name__}.{spec.name} is unset by default and declares "
                             "no example")
        text = declared(spec, "help") or ""
        if declared(spec, "live"):
            text += " (live)"
        lines += [*_comment(text), f"# {spec.name} = {toml_value(value)}", ""]
    return lines


def render_example() -> str:
    """The whole example file."""
    lines = [*("# " + line if line else "#" for line in HEADER.splitlines()), ""]
    lines += _key_lines(TopLevel)
    for name in ALL_SECTIONS:
        cls = section_class(name)
        lines += ["", f"[{name}]"]
        intro = getattr(cls, "SECTION_HELP", "")
        if intro:
            lines += [*_comment(intro), ""]
        lines += _key_lines(cls)  # type: ignore[arg-type]
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render_example(), end="")
