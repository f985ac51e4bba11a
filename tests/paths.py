"""Where the tests find real music (../shared/data beside the checkout, or $GENRE_EDGE_DATA)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GENRE_EDGE_DATA", REPO.parent / "shared" / "data"))
MUSIC = DATA / "music"
MANIFEST = MUSIC / "manifest.csv"


def require_music() -> Path:
    """The real-music folder; in CI its absence is a failure, elsewhere a skip."""
    if not MANIFEST.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"real music not found at {MUSIC}: CI must run beside shared/data")
        pytest.skip(f"real music not found at {MUSIC} (set GENRE_EDGE_DATA)")
    return MUSIC


def manifest_rows(genre: str | None = None, split: str | None = None) -> list[dict[str, str]]:
    require_music()
    with open(MANIFEST, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return [
        r for r in rows
        if (genre is None or r["genre"] == genre) and (split is None or r["split"] == split)
    ]


def clip(genre: str, index: int = 0, split: str | None = None) -> Path:
    rows = manifest_rows(genre, split)
    return MUSIC / rows[index]["path"]
