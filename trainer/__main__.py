"""``hashbridge train`` / ``python -m trainer``: parse flags, wire signals, run the supervisor."""
from __future__ import annotations

import logging
import sys

from shared.errors import HashbridgeError
from shared.logs import setup_logging
from shared.signals import stop_on
from trainer.settings import TrainerSettings
from trainer.supervisor import Supervisor

log = logging.getLogger("trainer")


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    try:
        settings = TrainerSettings.from_args(list(sys.argv[1:] if argv is None else argv))
    except HashbridgeError as exc:
        print(f"hashbridge train: {exc}", file=sys.stderr)
        return 2
    sup = Supervisor(settings)
    try:
        with stop_on(sup.stop):
            final = sup.run()
    except HashbridgeError as exc:
        log.error("trainer failed: %s", exc)
        return 1
    if final is not None:
        log.info("final snapshot version %d: %d records", final.version, final.records)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
