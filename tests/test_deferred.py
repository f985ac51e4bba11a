"""Stand-ins for unused standard-library modules (``firmware_py.deferred``), and what the
device process no longer loads because of them and of its other lazy imports.

Each check runs in a fresh interpreter: pytest itself has loaded most of these modules.
"""

from __future__ import annotations

import subprocess
import sys

from firmware_py.commands import DEMO_CLIP

#: Modules the device's listen loop does not use (each was loaded once and cost resident
#: memory: numpy.random ~2.5 MB, urllib.request's http.client and email ~1.4 MB, ...).
NOT_LOADED = ("numpy.random", "http.client", "email", "fractions", "decimal", "difflib",
              "tomllib", "random", "secrets")


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def test_a_stand_in_imports_the_real_module_when_a_name_is_read_or_set() -> None:
    out = _run(
        "import sys\n"
        "from firmware_py.deferred import defer\n"
        "defer('tempfile', 'urllib.request', 'no_such_module_here')\n"
        "import tempfile, urllib.request\n"
        "print(type(sys.modules['tempfile']).__name__, 'random' in sys.modules,\n"
        "      'http.client' in sys.modules, 'no_such_module_here' in sys.modules)\n"
        "tempfile.tempdir = '/tmp'  # set on the real module, not on the stand-in\n"
        "print(type(sys.modules['tempfile']).__name__, sys.modules['tempfile'].tempdir)\n"
        "from urllib.request import getproxies\n"
        "print(callable(getproxies), urllib.request is sys.modules['urllib.request'],\n"
        "      type(urllib.request).__name__)\n"
    )
    assert out.splitlines() == ["_OnFirstUse False False False", "module /tmp",
                                "True True module"]


def test_listen_with_mqtt_leaves_unused_modules_unloaded(mqtt_broker) -> None:
    out = _run(
        "import sys\n"
        "from firmware_py.cli import main\n"
        f"rc = main(['listen', '--input', {str(DEMO_CLIP)!r}, '--fast', '--changes-only',\n"
        f"           '--mqtt', {mqtt_broker.url!r}, '--device-id', 'deferred'])\n"
        "real = {n for n, m in sys.modules.items() if type(m).__name__ != '_OnFirstUse'}\n"
        f"print('RC', rc, 'LOADED', sorted(n for n in real if n.startswith({NOT_LOADED!r})))\n"
    )
    assert "RC 0 LOADED []" in out, out
