"""Native libraries (TFLite, libsndfile/mpg123) print on file descriptor 2 behind Python's back.

Their chatter would break the "one line per error" rule, so the calls that trigger it run
inside :func:`native_stderr_to_log`, which sends it to the debug log instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from collections.abc import Iterator
from typing import IO

log = logging.getLogger(__name__)
_lock = threading.Lock()


def _scratch_file() -> IO[bytes]:
    """An anonymous file to hold fd 2 for a moment: a memfd on Linux, which keeps
    ``tempfile`` (and ``random``, which it imports: ~0.3 MB resident) out of the device
    process, else ``tempfile.TemporaryFile``."""
    if hasattr(os, "memfd_create"):
        try:
            return open(os.memfd_create("genre-edge-stderr", os.MFD_CLOEXEC), "w+b")
        except OSError:  # a kernel or sandbox without memfd
            pass
    import tempfile

    return tempfile.TemporaryFile()


@contextlib.contextmanager
def native_stderr_to_log() -> Iterator[None]:
    """Route what the TFLite C++ runtime prints on fd 2 ("INFO: Created TensorFlow Lite
    XNNPACK delegate for CPU.") to the debug log, so that errors stay one line."""
    if not _lock.acquire(blocking=False):  # another thread redirects already
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real fd 2 (embedded interpreters): leave it alone
        _lock.release()
        yield
        return
    with _scratch_file() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            _lock.release()
            tmp.seek(0)
            for line in tmp.read().decode(errors="replace").splitlines():
                if line.strip():
                    log.debug("native: %s", line.strip())
