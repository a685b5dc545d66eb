"""SIGTERM / SIGINT during training: finish the step, write a checkpoint, exit 0.

The first signal only sets a flag the loop reads after each step; a second one restores the
previous handler and raises KeyboardInterrupt, so a stuck run can still be stopped.
"""
from __future__ import annotations

import signal
import threading

HANDLED = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.received is not None:
            self._restore()
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopping without a checkpoint")
        self.received = signal.Signals(signum).name

    def __enter__(self) -> "StopSignals":
        # Handlers can only be installed from the main thread (a trainer run from a worker thread
        # simply keeps the default behaviour).
        if threading.current_thread() is threading.main_thread():
            for sig in HANDLED:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def __exit__(self, *exc) -> None:
        self._restore()
