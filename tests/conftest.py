"""Fixtures any test may use. Nothing here needs a broker (see tests/integration/conftest.py)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# The UCI Adult files live beside the repo (../shared/data/adult), not in it.
ADULT_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "adult"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository's root directory."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def adult_dir() -> Path:
    """The directory holding ``adult.data``, ``adult.test`` and ``adult.names``.

    ``$HASHBRIDGE_ADULT_DIR`` overrides the location. A missing copy skips the test locally
    and fails it in CI (``CI`` set), where a silent skip would hide a broken checkout.
    """
    path = Path(os.environ.get("HASHBRIDGE_ADULT_DIR") or ADULT_DIR)
    if not (path / "adult.data").is_file():
        message = f"UCI Adult data not found in {path} (set HASHBRIDGE_ADULT_DIR)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path
