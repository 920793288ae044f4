"""Ctrl-C and SIGTERM handled in Python, so that the node stops between two executor turns.

rclpy's own signal handlers trigger the executors' guard conditions from a separate thread;
when the main thread tears the executor down at the same moment, the process can crash on
exit. The node therefore starts rclpy without signal handlers and installs these: while it
is still loading, a signal interrupts the start-up (``KeyboardInterrupt``); from then on, a
signal only sets a flag that the spin loop checks.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any, Optional

#: The signals that stop the node: Ctrl-C, and what ``ros2 launch`` sends after SIGINT.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """A stop flag set by SIGINT or SIGTERM (install from the main thread)."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self._previous: dict[int, Any] = {}
        #: While True a signal also raises ``KeyboardInterrupt`` (start-up can be interrupted);
        #: once False it only sets the flag.
        self.interruptible = True

    @property
    def requested(self) -> bool:
        """Whether a stop signal has arrived."""
        return self._event.is_set()

    def install(self) -> None:
        """Handle :data:`STOP_SIGNALS` from now on."""
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        """Put the handlers that were there before :meth:`install` back."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Optional[FrameType]) -> None:
        self._event.set()
        if self.interruptible:
            raise KeyboardInterrupt
