"""What the benchmark ran on: CPU, Raspberry Pi model, temperature, throttling, software.

Reads ``/proc`` and ``/sys`` only (no psutil); every item a machine does not have is
``"not present"`` rather than an error, so the same code describes a Pi, a Coral board
or a workstation.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from .common import not_present

# ARM "CPU part" numbers (/proc/cpuinfo) of the cores found in Raspberry Pis and friends.
_ARM_PARTS = {
    "0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0b": "Cortex-A76", "0xc07": "Cortex-A7",
}
# Bits of ``vcgencmd get_throttled`` (Raspberry Pi firmware documentation).
_THROTTLE_BITS = {
    0: "under-voltage now", 1: "ARM frequency capped now", 2: "throttled now",
    3: "soft temperature limit now", 16: "under-voltage has occurred",
    17: "frequency capping has occurred", 18: "throttling has occurred",
    19: "soft temperature limit has occurred",
}


def _read(path: str | Path) -> str | None:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return None


def cpu_model() -> str:
    info = _read("/proc/cpuinfo") or ""
    fields: dict[str, str] = {}
    for line in info.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    for key in ("model name", "Model", "Hardware", "cpu model"):
        if fields.get(key):
            return fields[key]
    part = fields.get("CPU part", "").lower()
    if part in _ARM_PARTS:
        return f"ARM {_ARM_PARTS[part]}"
    return platform.processor() or platform.machine() or "unknown"


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def pi_model() -> str:
    text = _read("/proc/device-tree/model")
    return text.strip("\x00\n ") if text else not_present()


def temperature_c() -> float | str:
    """The CPU (or first) thermal zone in degrees Celsius."""
    zones = sorted(Path("/sys/class/thermal").glob("thermal_zone*"))
    readings = []
    for zone in zones:
        raw, kind = _read(zone / "temp"), (_read(zone / "type") or "").strip()
        try:
            value = int((raw or "").strip()) / 1000.0
        except ValueError:
            continue
        readings.append((0 if "cpu" in kind.lower() or "soc" in kind.lower() else 1, value))
    if not readings:
        return not_present()
    return round(sorted(readings)[0][1], 1)


def throttled() -> str:
    """``vcgencmd get_throttled`` decoded, e.g. ``0x0 (none)``."""
    exe = shutil.which("vcgencmd")
    if not exe:
        return not_present()
    try:
        res = subprocess.run([exe, "get_throttled"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return not_present(f"vcgencmd failed ({exc})")
    text = res.stdout.strip()
    _, _, value = text.partition("=")
    try:
        bits = int(value, 16)
    except ValueError:
        return not_present(f"vcgencmd said {text or res.stderr.strip()!r}")
    flags = [name for bit, name in _THROTTLE_BITS.items() if bits >> bit & 1]
    return f"{value} ({', '.join(flags) if flags else 'none'})"


def cpu_frequency_mhz() -> float | str:
    raw = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")
    try:
        return round(int((raw or "").strip()) / 1000.0, 0)
    except ValueError:
        return not_present()


def cpu_governor() -> str:
    raw = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    return raw.strip() if raw else not_present()


def memory_total_mb() -> float | str:
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024.0, 0)
    return not_present()


def load_average() -> list[float] | str:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return not_present()


def interpreter_runtime() -> dict[str, str] | str:
    """The light TFLite runtime the device uses (never TensorFlow: that is a workstation)."""
    from ..errors import DeviceError
    from ..inference import get_backend

    for name in ("ai_edge_litert", "tflite_runtime"):
        try:
            backend = get_backend(name)
        except DeviceError:
            continue
        return {"name": backend.name, "version": backend.version}
    return not_present("no ai-edge-litert or tflite-runtime installed (pip install ai-edge-litert)")


def _version(module: str) -> str:
    try:
        from importlib.metadata import version

        return version(module)
    except Exception:  # not installed, or no metadata
        return not_present()


def blas_threads() -> str:
    """The BLAS thread setting of this process's environment.

    numpy's OpenBLAS spreads the front-end's small mel matmul over every core by default:
    about twice the CPU time and ~4 ms spikes per hop; 1 is what the device wants.
    """
    for key in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        if os.environ.get(key):
            return f"{key}={os.environ[key]}"
    return not_present("OPENBLAS_NUM_THREADS not set")


def changing_state() -> dict[str, Any]:
    """What drifts during a run (read at the start and again at the end)."""
    return {"temperature_c": temperature_c(), "throttled": throttled(),
            "cpu_mhz": cpu_frequency_mhz(), "load_avg": load_average()}


def describe_device() -> dict[str, Any]:
    import numpy

    return {
        "cpu_model": cpu_model(),
        "cores": usable_cores(),
        "machine": platform.machine(),
        "os": platform.platform(),
        "memory_mb": memory_total_mb(),
        "pi_model": pi_model(),
        "cpu_governor": cpu_governor(),
        **changing_state(),
        "runtime": interpreter_runtime(),
        "python": platform.python_version(),
        "python_implementation": sys.implementation.name,
        "numpy": numpy.__version__,
        "blas_threads": blas_threads(),
        "scipy": _version("scipy"),
        "paho_mqtt": _version("paho-mqtt"),
    }
