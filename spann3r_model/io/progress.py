"""A one-line progress indicator on stderr, drawn only when stderr is a terminal."""

from __future__ import annotations

import sys
import time
from typing import Optional, TextIO


class Progress:
    """``label [#####.....] 12/40 3.1 it/s`` redrawn in place at most 10 times a second.

    :param label: text in front of the bar.
    :param total: expected count (None draws a counter only).
    :param stream: where to draw (stderr by default).
    """

    def __init__(self, label: str, total: Optional[int], stream: Optional[TextIO] = None) -> None:
        self.label, self.total = label, total
        self.stream = stream or sys.stderr
        self.enabled = bool(getattr(self.stream, 'isatty', lambda: False)())
        self.count = 0
        self._start = self._last = time.monotonic()

    def update(self, n: int = 1) -> None:
        """Advance by ``n``."""
        self.count += n
        now = time.monotonic()
        if self.enabled and now - self._last >= 0.1:
            self._last = now
            self._draw(now)

    def _draw(self, now: float) -> None:
        rate = self.count / max(now - self._start, 1e-9)
        if self.total:
            filled = int(30 * min(self.count / self.total, 1.0))
            bar = f'[{"#" * filled}{"." * (30 - filled)}] {self.count}/{self.total}'
        else:
            bar = str(self.count)
        self.stream.write(f'\r{self.label} {bar} {rate:.1f} it/s')
        self.stream.flush()

    def close(self) -> None:
        """Draw the final state and end the line."""
        if self.enabled:
            self._draw(time.monotonic())
            self.stream.write('\n')
            self.stream.flush()
