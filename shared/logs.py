"""One logging set-up for every service: plain lines with time, process and logger."""
from __future__ import annotations

import logging
import os

FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"


def setup_logging(level: str | int | None = None) -> None:
    lvl = level or os.environ.get("HASHBRIDGE_LOG_LEVEL", "INFO")
    logging.basicConfig(level=lvl, format=FORMAT)
    for noisy in ("numba", "matplotlib", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
