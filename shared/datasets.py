"""Where the bundled real data lives (UCI Adult, copied into the repo with its README)."""
from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENV_ADULT_DIR = "HASHBRIDGE_ADULT_DIR"


def adult_dir() -> Path:
    """The Adult files: ``$HASHBRIDGE_ADULT_DIR``, else ``data/adult`` in the repo, else
    ``../shared/data/adult`` beside it."""
    env = os.environ.get(ENV_ADULT_DIR)
    candidates = (Path(env),) if env else (REPO / "data" / "adult", REPO.parent / "shared" / "data" / "adult")
    for candidate in candidates:
        if (candidate / "adult.data").is_file():
            return candidate
    raise FileNotFoundError(f"UCI Adult not found in {' or '.join(map(str, candidates))} "
                            f"(set {ENV_ADULT_DIR})")
