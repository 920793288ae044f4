"""Stop signals: they interrupt start-up, and only set a flag once the node spins."""

import os
import signal

import pytest

from spann3r_ros.node.stop_request import StopRequest


@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_a_signal_after_start_up_sets_the_flag_without_an_exception(sig):
    stop = StopRequest()
    stop.install()
    try:
        stop.interruptible = False
        assert not stop.requested
        os.kill(os.getpid(), sig)
        assert stop.requested
    finally:
        stop.restore()


def test_a_signal_during_start_up_interrupts_it():
    stop = StopRequest()
    stop.install()
    try:
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested
    finally:
        stop.restore()


def test_restore_puts_the_previous_handlers_back():
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    stop = StopRequest()
    stop.install()
    assert signal.getsignal(signal.SIGTERM) != before[signal.SIGTERM]
    stop.restore()
    assert {sig: signal.getsignal(sig) for sig in before} == before
