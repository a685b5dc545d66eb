"""Progress bars that suit where stderr goes: tqdm's redrawn bar on a terminal; elsewhere (a log
file, a pipe, a batch system) plain lines, one every `PLAIN_INTERVAL_S` seconds and the last one,
without the carriage returns and cursor moves that would fill a log with hundreds of lines.

The ground floor: imports nothing of lipkit."""
from __future__ import annotations

import re
import sys
import time
from typing import Any, TextIO

from tqdm import tqdm

PLAIN_INTERVAL_S = 30.0
_CONTROL = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # cursor moves and clears (nested bars)


class PlainLines:
    """A file for tqdm that writes each status it draws as a plain line, at most one every
    `interval` seconds, and the final one (drawn just before tqdm's closing newline)."""

    def __init__(self, stream: TextIO, interval: float | None = None):
        self.stream = stream
        self.interval = PLAIN_INTERVAL_S if interval is None else interval
        self.pending = ""
        self.last_written = -float("inf")

    def write(self, text: str) -> None:
        text = _CONTROL.sub("", text)
        for status in re.split(r"[\r\n]", text):
            if status.strip():
                self.pending = status.strip()
        closing = text.endswith("\n")
        if self.pending and (closing or time.monotonic() - self.last_written >= self.interval):
            self.stream.write(self.pending + "\n")
            self.stream.flush()
            self.pending, self.last_written = "", time.monotonic()

    def flush(self) -> None:
        self.stream.flush()


def progress_bar(iterable: Any = None, **kwargs: Any) -> tqdm:
    """`tqdm(iterable, **kwargs)` on stderr: redrawn on a terminal, plain lines elsewhere."""
    stream = kwargs.pop("file", None) or sys.stderr
    if not kwargs.get("disable") and not _is_terminal(stream):
        kwargs.update(file=PlainLines(stream), ascii=True, ncols=100, dynamic_ncols=False, mininterval=1.0)
    else:
        kwargs.update(file=stream, dynamic_ncols=kwargs.get("dynamic_ncols", True))
    return tqdm(iterable, **kwargs)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False
