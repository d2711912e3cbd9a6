"""Models as files: the model directory a scorer can serve from instead of the models topic."""
from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

from shared.models import ModelError, ModelSnapshot, decode_model, encode_model

log = logging.getLogger(__name__)
_MODEL_FILE = re.compile(r"^model-(\d+)\.hbm$")


def save_model_dir(snapshot: ModelSnapshot, directory: str | os.PathLike[str], keep: int = 3) -> Path:
    """Write ``model-<version>.hbm`` atomically (temp file, fsync, rename); prune old ones."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"model-{snapshot.version:012d}.hbm"
    fd, tmp = tempfile.mkstemp(prefix=".model-", suffix=".tmp", dir=d)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(encode_model(snapshot))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    for old in _model_files(d)[:-keep]:
        old[1].unlink(missing_ok=True)
    return path


def _model_files(d: Path) -> list[tuple[int, Path]]:
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _MODEL_FILE.match(p.name))]
    return sorted(found)


def load_latest_model_dir(directory: str | os.PathLike[str]) -> ModelSnapshot | None:
    """The newest model file that validates; corrupt ones are skipped with a warning."""
    d = Path(directory)
    if not d.is_dir():
        return None
    for version, path in reversed(_model_files(d)):
        try:
            return decode_model(path.read_bytes())
        except (ModelError, OSError) as exc:
            log.warning("skipping model file version %d: %s", version, exc)
    return None
