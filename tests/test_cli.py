"""The CLI contract: features, bench frontend, one-line errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from firmware_py.audio import load_audio
from firmware_py.bundle import default_bundle_path, load_bundle
from firmware_py.features import DEFAULT_PARAMS, logmel
from tests.paths import REPO, clip


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "firmware_py", *args], cwd=REPO, capture_output=True,
        text=True, timeout=timeout,
    )


def test_features_writes_batch_logmel(tmp_path: Path) -> None:
    src = clip("jazz", 0)
    out = tmp_path / "f.npy"
    res = run_cli("features", str(src), "--out", str(out))
    assert res.returncode == 0, res.stderr
    feats = np.load(out)
    # The CLI runs numpy's BLAS on one thread (firmware_py sets OPENBLAS_NUM_THREADS
    # before numpy loads); this process may use several: sums differ in the last bits.
    # without --bundle: the bundled model's front-end (PCEN), the one the device runs
    fe = load_bundle(default_bundle_path(), check_model=False).frontend
    assert fe.compression == "pcen" and fe != DEFAULT_PARAMS
    np.testing.assert_allclose(feats, logmel(load_audio(src, 16000), fe), atol=1e-4, rtol=0)
    bare = tmp_path / "g"  # np.save adds .npy: the message names the file really written
    res = run_cli("features", str(src), "--out", str(bare))
    assert res.returncode == 0 and res.stdout.startswith(f"{bare}.npy: ")
    assert (tmp_path / "g.npy").is_file() and not bare.exists()


def test_features_errors_are_one_line(tmp_path: Path) -> None:
    res = run_cli("features", str(tmp_path / "missing.wav"), "--out", str(tmp_path / "f.npy"))
    assert res.returncode == 2
    assert res.stderr.startswith("genre-edge: error: audio file not found")
    assert "Traceback" not in res.stderr and res.stderr.count("\n") == 1
    res = run_cli("features", str(clip("jazz", 0)), "--out", "/proc/forbidden/f.npy")
    assert res.returncode == 2 and "choose a writable output path" in res.stderr
    res = run_cli("features", str(clip("jazz", 0)), "--out", str(tmp_path / "f.npy"),
                  "--bundle", str(tmp_path))
    assert res.returncode == 2 and "no manifest.json" in res.stderr


def test_bench_frontend_json(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    res = run_cli("bench", "frontend", "--seconds", "10", "--repeats", "2", "--json", str(out))
    assert res.returncode == 0, res.stderr
    data = json.loads(out.read_text())
    for key in ("streaming_ms_per_audio_s", "librosa_window_ms_per_audio_s", "speedup_vs_librosa",
                "streaming_10ms_blocks_ms_per_audio_s", "streaming_device_blocks_ms_per_audio_s",
                "speedup_vs_librosa_device_blocks", "resample_ms_per_audio_s",
                "polyphase_resample_ms_per_audio_s", "resample_speedup_vs_polyphase"):
        assert isinstance(data[key], float) and data[key] > 0, key
    assert data["audio_s"] == 10.0
    assert data["resampler"] == "soxr-HQ" and data["resample_source_rate_hz"] == 48000
    assert "speedup vs librosa" in res.stdout and "resampler speed-up vs polyphase" in res.stdout


def test_device_commands_do_not_import_tensorflow() -> None:
    code = (
        "import sys; from firmware_py.cli import main; "
        "main(['features', '--help']) if False else None; "
        "import firmware_py.cli as c; c.build_parser(); "
        "import firmware_py.bundle, firmware_py.inference, firmware_py.audio, firmware_py.features; "
        "print('tensorflow' in sys.modules)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "False"


def test_device_command_table_matches_the_entry_points() -> None:
    """The CLI's fast path (no importlib.metadata) must name what pyproject registers."""
    from importlib.metadata import entry_points

    from firmware_py.cli import DEVICE_COMMANDS, GROUP

    registered = {ep.name: ep.value for ep in entry_points(group=GROUP)}
    for name, target in DEVICE_COMMANDS.items():
        assert registered.get(name) == target, name
