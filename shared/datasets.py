"""Where the bundled real data lives (UCI Adult, copied into the repo with its README)."""
from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def adult_dir() -> Path:
    """The Adult files: ``data/adult`` in the repo, else ``../shared/data/adult`` beside it."""
    for candidate in (REPO / "data" / "adult", REPO.parent / "shared" / "data" / "adult"):
        if (candidate / "adult.data").is_file():
            return candidate
    raise FileNotFoundError("UCI Adult not found in data/adult or ../shared/data/adult")
