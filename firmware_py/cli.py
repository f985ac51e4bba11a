"""The ``genre-edge`` command.

Subcommands are plugins: each is a :class:`Command` registered under the entry-point
group ``genre_edge.commands`` (see ``pyproject.toml``). Command modules are light to
import; heavy imports (TensorFlow, librosa, paho) happen inside ``run``. So the
device package never imports ``training`` or ``converter`` code, and device
subcommands never import TensorFlow.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NoReturn

from . import __version__
from .errors import GenreEdgeError

GROUP = "genre_edge.commands"


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int | None]


#: The device's own subcommands, loaded without entry-point discovery: importing
#: importlib.metadata costs ~4 MB of resident memory, a tenth of the device's budget.
#: Every other subcommand (train, convert, ...) is found through the entry points.
DEVICE_COMMANDS = {
    "listen": "firmware_py.commands:listen",
    "classify": "firmware_py.commands:classify",
    "bench": "firmware_py.commands:bench",
    "features": "firmware_py.commands:features",
    "index": "firmware_py.similarity_commands:index",
    "similar": "firmware_py.similarity_commands:similar",
}


def _device_command(name: str) -> Command:
    import importlib

    module, attr = DEVICE_COMMANDS[name].split(":")
    return getattr(importlib.import_module(module), attr)


def _commands() -> list[Command]:
    from importlib.metadata import entry_points

    found = []
    for ep in entry_points(group=GROUP):
        cmd = ep.load()
        if not isinstance(cmd, Command):
            raise TypeError(f"entry point {ep.value} is not a firmware_py.cli.Command")
        found.append(cmd)
    if not found:
        raise GenreEdgeError(
            "no genre-edge subcommands are registered: the package is not installed; "
            "run 'pip install -e .' in the checkout"
        )
    return sorted(found, key=lambda c: c.name)


class _Parser(argparse.ArgumentParser):
    """Usage mistakes are one line too, like every other error (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"genre-edge: error: {self.prog}: {message}: see '{self.prog} --help'\n")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The CLI; ``only`` (a name in :data:`DEVICE_COMMANDS`) builds just that subcommand."""
    parser = _Parser(
        prog="genre-edge",
        description="Edge music-genre classifier: train, convert, and run on a Raspberry Pi.",
    )
    parser.add_argument("--version", action="version", version=f"genre-edge {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for cmd in [_device_command(only)] if only in DEVICE_COMMANDS else _commands():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.configure(p)
        p.set_defaults(_run=cmd.run)
    return parser


def setup_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity <= 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    env = os.environ.get("GENRE_EDGE_LOG_LEVEL", "").strip()
    if env:
        from .config import LOG_LEVELS  # only when set: not loaded for every command

        # Only the five level names: getattr(logging, 'BASIC_FORMAT') was a traceback.
        if env.lower() not in LOG_LEVELS:
            raise GenreEdgeError(
                f"environment variable GENRE_EDGE_LOG_LEVEL must be one of "
                f"{', '.join(LOG_LEVELS)}, got {env[:40]!r}: fix or unset it"
            )
        level = getattr(logging, env.upper())
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args_list = list(sys.argv[1:] if argv is None else argv)
        first = next((a for a in args_list if not a.startswith("-")), None)
        fast = first in DEVICE_COMMANDS and args_list and args_list[0] == first
        parser = build_parser(first if fast else None)
        args = parser.parse_args(args_list)
        setup_logging(args.verbose)
        code = args._run(args)
        return int(code or 0)
    except GenreEdgeError as exc:
        print(f"genre-edge: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. piped into head
        return 0
