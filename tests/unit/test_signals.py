"""``shared.signals.stop_on``: the stop flag while the block runs, the previous handlers after."""
from __future__ import annotations

import os
import signal
import threading

import pytest

from shared.signals import stop_on


def test_a_signal_inside_the_block_calls_stop_and_nothing_else() -> None:
    stopped = threading.Event()
    with stop_on(stopped.set):
        os.kill(os.getpid(), signal.SIGTERM)
        assert stopped.wait(5)  # the handler ran; the process is still here


def test_the_previous_handlers_come_back_even_after_an_error() -> None:
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    with pytest.raises(RuntimeError):
        with stop_on(lambda: None):
            assert signal.getsignal(signal.SIGINT) is not before[signal.SIGINT]
            raise RuntimeError("the service failed")
    assert {sig: signal.getsignal(sig) for sig in before} == before  # Ctrl-C is the caller's again


def test_only_the_signals_asked_for_are_taken() -> None:
    before = signal.getsignal(signal.SIGINT)
    with stop_on(lambda: None, (signal.SIGTERM,)):
        assert signal.getsignal(signal.SIGINT) is before
