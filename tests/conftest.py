"""Fixtures any test may use. Nothing here needs a broker (see tests/integration/conftest.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from shared import datasets

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Name ``kafka``-marked tests in the JUnit report, so CI can refuse to skip them."""
    for item in items:
        if item.get_closest_marker("kafka") is not None:
            item.user_properties.append(("marker", "kafka"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository's root directory."""
    return REPO_ROOT


@pytest.fixture(scope="session")
def adult_dir() -> Path:
    """The directory holding ``adult.data``, ``adult.test`` and ``adult.names`` (bundled in
    ``data/adult``; a missing copy is a broken checkout, so it fails rather than skips)."""
    return datasets.adult_dir()
