"""Stand-ins for standard-library modules that a third-party package imports at the top
but that the device never uses: each is imported for real the first time one of its
names is read.

``import x`` finds the stand-in in ``sys.modules`` and binds it; reading ``x.name`` (or
``from x import name``) imports the real ``x``, which takes the stand-in's place, and
hands the name on. So everything works as before wherever the module is used, a few
milliseconds later; where it is not, it costs nothing. (``importlib.util.LazyLoader``
cannot do this: ``import x`` itself reads ``x.__spec__``, which loads the module.)

Used for paho's ``urllib.request`` and ``uuid`` (:mod:`firmware_py.mqtt.client`) and
``ctypes.util``'s ``tempfile`` (:func:`import_soundfile`): ~1.7 MB resident together,
on a device whose budget is 60 MB.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import threading
import types
from typing import Any

_lock = threading.RLock()  # re-entrant: a real module may read another stand-in as it loads


class _OnFirstUse(types.ModuleType):
    """Stands in for a module until one of its names is read or set, then imports it."""

    def _real(self) -> types.ModuleType:
        name = self.__name__
        with _lock:
            real = sys.modules.get(name)
            if real is None or real is self:
                sys.modules.pop(name, None)
                real = importlib.import_module(name)  # rebinds the package's attribute too
        return real

    def __getattr__(self, attr: str) -> Any:  # only for names the stand-in lacks
        return getattr(self._real(), attr)

    def __setattr__(self, attr: str, value: Any) -> None:  # tempfile.tempdir = ...
        if attr.startswith("__"):
            super().__setattr__(attr, value)
        else:
            setattr(self._real(), attr, value)


def defer(*names: str) -> None:
    """Put a stand-in for each module of ``names`` (not packages) in ``sys.modules``,
    unless it is loaded already or cannot be found."""
    for name in names:
        if name in sys.modules:
            continue
        try:
            spec = importlib.util.find_spec(name)  # imports the parent package only
        except (ImportError, ValueError):
            continue
        if spec is None or spec.submodule_search_locations is not None:
            continue
        stand_in = _OnFirstUse(name)
        stand_in.__spec__ = spec  # what find_spec and the import system read; never run
        sys.modules[name] = stand_in
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(sys.modules[parent], child, stand_in)


def import_soundfile() -> Any:
    """``soundfile``, or None where it is not installed (a minimal, WAV-only install).

    Its ``ctypes.util`` imports ``tempfile`` (and with it ``random``, ~0.3 MB resident)
    for a compiler-driven library search that runs only when neither soundfile's own
    libsndfile nor ``ldconfig`` finds one: ``tempfile`` is deferred until then.
    """
    if "soundfile" not in sys.modules:
        defer("tempfile")
    try:
        import soundfile
    except ImportError:
        return None
    return soundfile
