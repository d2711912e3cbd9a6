"""SIGTERM and SIGINT routed to a service's stop flag, for as long as the service runs.

Each command's ``main`` installs its handlers through ``stop_on`` and gets the previous ones back
when it returns. Left installed, a handler's closure kept the finished service alive, and with it
the service's Kafka clients (which went on dialling a broker long gone), and it took Ctrl-C away
from whatever called ``main`` in-process: a test session, a notebook, an embedding program.
"""
from __future__ import annotations

import signal
from contextlib import contextmanager
from typing import Callable, Iterator

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def stop_on(stop: Callable[[], None], signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> Iterator[None]:
    """Call ``stop`` (which should only set a flag) on each of ``signals`` inside the block; put
    the previous handlers back after it. Main thread only, as ``signal.signal`` itself."""
    previous = {sig: signal.getsignal(sig) for sig in signals}
    for sig in signals:
        signal.signal(sig, lambda *_: stop())
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)
