"""Paths from outside: open only regular files (never hang on a FIFO) and say why a path is
unusable.

Every file the CLI reads on a user's behalf (audio, a bundle's manifest and models, a
similarity index, a training run's files) is opened through :func:`open_regular`, so
that a directory, a named pipe, a device, a socket, a broken or looping symbolic link,
or a file we may not read each gets one line naming that reason, and a FIFO is refused
before anything blocks on it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .errors import GenreEdgeError
from .text import display


def _kind(mode: int) -> str | None:
    """What a non-regular file is, in words (None for a regular file)."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO), not a file"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device, not a file"
    if stat.S_ISSOCK(mode):
        return "a socket, not a file"
    return "not a regular file"


def path_problem(path: str | Path, what: str = "file") -> str | None:
    """Why ``path`` cannot be read as a regular file, or None when it can be opened.

    ``what`` names the file in the message ("audio file"). Uses ``stat`` only: nothing is
    opened, so a FIFO or a device is named without blocking on it or waking it.
    """
    p = display(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.lexists(path):
            return f"{what} {p} is a broken symbolic link (its target does not exist)"
        return f"{what} not found: {p}"
    except PermissionError:
        return f"{what} {p} cannot be reached: no permission to enter a folder on its path"
    except OSError as exc:  # ELOOP (symbolic link cycle), ENAMETOOLONG, ENOTDIR, ...
        return f"{what} {p} cannot be opened ({exc.strerror or exc})"
    kind = _kind(st.st_mode)
    if kind is None:
        return None
    via = " (reached through a symbolic link)" if os.path.islink(path) else ""
    return f"{what} {p} is {kind}{via}"


def open_regular(path: str | Path, error: type[GenreEdgeError], fix: str,
                 what: str = "file") -> int:
    """A read-only file descriptor for the regular file ``path`` (the caller closes it).

    Raises ``error`` with one line ``<why>: <fix>`` otherwise (a missing file: "check the
    path"; no permission: how to grant it). The file is opened non-blocking and checked
    again through the descriptor, so a path that turns into a FIFO between the check and
    the open cannot hang us either.
    """
    problem = path_problem(path, what)
    if problem is None:
        flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)
        try:
            fd = os.open(path, flags)
        except PermissionError:
            raise error(f"no permission to read {what} {display(path)}: make it readable for "
                        "this user (chmod/chown) or copy it somewhere readable") from None
        except OSError as exc:
            problem = f"{what} {display(path)} cannot be opened ({exc.strerror or exc})"
        else:
            kind = _kind(os.fstat(fd).st_mode)
            if kind is None:
                os.set_blocking(fd, True)
                return fd
            os.close(fd)
            problem = f"{what} {display(path)} is {kind}"
    if " not found: " in problem:
        fix = "check the path"
    raise error(f"{problem}: {fix}")


def read_regular_bytes(path: str | Path, error: type[GenreEdgeError], fix: str,
                       limit: int | None = None, what: str = "file") -> bytes:
    """The contents of the regular file ``path`` (at most ``limit`` bytes; more is an error)."""
    fd = open_regular(path, error, fix, what)
    with os.fdopen(fd, "rb") as fh:
        try:
            data = fh.read() if limit is None else fh.read(limit + 1)
        except OSError as exc:
            raise error(f"cannot read {what} {display(path)} ({exc.strerror or exc}): "
                        f"{fix}") from None
    if limit is not None and len(data) > limit:
        raise error(f"{what} {display(path)} is larger than {limit} bytes (not what it should "
                    f"be): {fix}")
    return data
