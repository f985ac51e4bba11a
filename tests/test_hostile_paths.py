"""Issue 16, class "paths": every way a path can be unusable is named in one line (and a
FIFO never hangs us); valid files with odd names classify; index follows linked folders."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.hostile_helpers import assert_one_line_error, cli, music_wav, strict_json_lines


def _without_root_file_access() -> None:
    """In the child, before exec: drop the capabilities that let root read any file
    (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH), so a chmod-000 file is unreadable to it too."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if os.geteuid() == 0 and libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def test_unusable_audio_paths_each_name_their_reason(tmp_path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    (tmp_path / "folder-link").symlink_to(folder)
    (tmp_path / "dangling.wav").symlink_to(tmp_path / "gone.wav")
    (tmp_path / "loop-a.wav").symlink_to(tmp_path / "loop-b.wav")
    (tmp_path / "loop-b.wav").symlink_to(tmp_path / "loop-a.wav")
    cases = [  # path, words its line must hold
        (folder, ["folder", "is a directory"]),
        (tmp_path / "folder-link", ["folder-link", "directory", "symbolic link"]),
        (Path("/dev/null"), ["/dev/null", "device"]),
        (tmp_path / "dangling.wav", ["dangling.wav", "broken symbolic link"]),
        (tmp_path / "loop-a.wav", ["loop-a.wav", "symbolic links"]),
        (tmp_path / "missing.wav", ["missing.wav", "not found"]),
    ]
    out = cli(["classify", *(str(p) for p, _ in cases)], timeout=60)
    assert "Traceback" not in out.stderr and out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == len(cases), out.stderr
    for line, (_path, words) in zip(lines, cases, strict=True):
        assert line.startswith("genre-edge: error: ")
        for word in words:
            assert word in line, (word, line)

    private = music_wav(tmp_path / "private.wav")
    private.chmod(0)
    import subprocess

    probe = subprocess.run(["cat", str(private)], capture_output=True,
                           preexec_fn=_without_root_file_access)
    if probe.returncode == 0:
        pytest.skip("this user reads chmod-000 files (capabilities cannot be dropped here)")
    out = cli(["classify", str(private)], timeout=60, preexec_fn=_without_root_file_access)
    assert_one_line_error(out.returncode, out.stderr, "no permission to read", "private.wav")


def test_a_fifo_is_refused_at_once_never_read(tmp_path) -> None:
    """Opening a FIFO for reading blocks until a writer comes: it must be named, not opened."""
    fifo = tmp_path / "stream.wav"
    os.mkfifo(fifo)
    for args in (["classify", str(fifo)], ["listen", "--input", str(fifo), "--fast"],
                 ["features", str(fifo), "--out", str(tmp_path / "f.npy")],
                 ["similar", str(fifo), "--index", str(fifo)]):
        out = cli(args, timeout=30)  # a hang is a TimeoutExpired: the test fails
        assert_one_line_error(out.returncode, out.stderr, "stream.wav", "named pipe")
    assert not (tmp_path / "f.npy").exists()
    bundle = tmp_path / "bundle"
    from firmware_py.bundle import default_bundle_path

    shutil.copytree(default_bundle_path(), bundle)
    (bundle / "model.tflite").unlink()
    os.mkfifo(bundle / "model.tflite")
    out = cli(["classify", str(fifo), "--bundle", str(bundle)], timeout=30)
    assert_one_line_error(out.returncode, out.stderr, "model.tflite")


ODD_NAMES = [
    os.fsdecode(b"caf\xe9 \xff.wav"),  # Latin-1 bytes: not UTF-8
    "-starts-with-a-dash.wav",
    "new\nline.wav",
    "tab\tand \x1b[31mred\x1b[0m.wav",
    "ünïcödé ♫ 🎵.wav",
]


def test_valid_files_with_odd_names_classify_one_line_each(tmp_path) -> None:
    src = music_wav(tmp_path / "src.wav")
    paths = []
    for name in ODD_NAMES:
        paths.append(tmp_path / name)
        shutil.copyfile(src, paths[-1])
    args = [os.fsencode(p) for p in paths]  # the bytes a shell would pass
    # A strict UTF-8 stdout (what a UTF-8 terminal gets) must not be crashed by a name.
    strict = {"PYTHONIOENCODING": "utf-8:strict"}
    out = cli(["classify", "--", *args], env=strict)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == len(paths), lines  # one line per file, whatever its name holds
    assert all("\x1b" not in line and ": " in line for line in lines)
    assert "\\xe9 \\xff.wav" in lines[0] and "new\\nline.wav" in lines[2]
    out = cli(["classify", "--json", "--", *args], env=strict)
    assert out.returncode == 0, out.stderr
    records = strict_json_lines(out.stdout)
    # JSON keeps the name itself: the file's exact bytes come back with os.fsencode.
    assert [os.fsencode(r["file"]) for r in records] == args


def test_index_follows_linked_folders_once_and_survives_link_cycles(tmp_path) -> None:
    library, elsewhere = tmp_path / "library", tmp_path / "elsewhere"
    (library / "real").mkdir(parents=True)
    (elsewhere / "album").mkdir(parents=True)
    music_wav(library / "real" / "a.wav")
    music_wav(elsewhere / "album" / "b.wav")
    (library / "linked").symlink_to(elsewhere)  # a folder assembled from links
    (library / "real" / "up").symlink_to(library)  # a cycle: library/real/up/real/up/...
    (library / "again").symlink_to(library / "real")  # the same folder twice
    (library / "dangling.wav").symlink_to(tmp_path / "gone.wav")
    index = tmp_path / "index.npz"
    out = cli(["index", str(library), "--out", str(index), "-q"], timeout=120)
    assert "Traceback" not in out.stderr, out.stderr
    assert out.returncode == 1, out.stderr  # the dangling link is reported
    assert "2 tracks (2 added" in out.stdout, out.stdout
    warnings = out.stderr.strip().splitlines()
    assert len(warnings) == 1 and "dangling.wav" in warnings[0]
    assert "broken symbolic link" in warnings[0]
    from firmware_py.similarity import Index

    # each real folder once, under its own path where it has one
    assert sorted(t["path"] for t in Index.load(index).tracks) == ["linked/album/b.wav",
                                                                   "real/a.wav"]
