"""``paho.mqtt.client``, imported without the standard-library modules it loads for nothing.

paho imports ``urllib.request`` at the top but reads it only to look up proxy settings,
and only when PySocks is installed; that one import pulls in ``http.client``, the
``email`` package, ``tempfile``, ``random`` and ``calendar`` (24 modules, ~1.4 MB
resident). It imports ``uuid`` for a random client id, which we never ask for (our
client ids are always set). Both get a stand-in (:func:`firmware_py.deferred.defer`)
before paho is imported, so they load only if something reads them.

Every module of ours that needs paho's client imports it from here (``from .client
import mqtt``).
"""

from __future__ import annotations

from ..deferred import defer

#: Standard-library modules paho imports at the top and the device never uses.
DEFERRED = ("urllib.request", "uuid")
defer(*DEFERRED)

import paho.mqtt.client as mqtt  # noqa: E402  (after the stand-ins, on purpose)

__all__ = ["DEFERRED", "mqtt"]
