"""Counting unusable samples: batch collation that carries them, and the tracker that logs each
once, keeps a report and stops a run with too many.

Datasets report bad samples in `item["skipped"]` (encoded [(where, reason), ...], where = a file
path, `file:line` or `shard:key`; see pairs.encode_skips), which default collation turns into a
list of strings per batch. `SkipTracker.update(batch)` (or `TrackedBatches` around any iterator
of batches) strips them from the batch, logs each new one once, writes `data_report.json`
(atomically) when the count changes, and raises
`TooManyBadSamplesError` once more than `max_bad_fraction` of the samples are bad.

The fraction is taken of the dataset's size when it is known. A stream's size is not: there it is
of the samples read so far, from the very first one, but never of fewer than `min_seen`. So a
handful of early bad samples does not stop a run on noise, yet cannot slip through either: a run
stops early only when the stop at `min_seen` samples is already certain. At the end of the first
epoch read from its start (`end_epoch`), that epoch's count becomes the stream's size, so a
stream shorter than `min_seen` is judged too.

In a run of several processes each reads its own share of every batch: `exchange` (given by the
trainer, one collective per batch) pools what every process met, so that each tracker holds the
same bad samples and counts, judges the whole run's data, and every process stops at the same
batch (a process stopping alone would leave the others waiting).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from lipkit.errors import LipkitError
from lipkit.files import write_json

from .pairs import decode_skips

log = logging.getLogger("lipkit.data")


class TooManyBadSamplesError(LipkitError, RuntimeError):
    """More than data.max_bad_fraction of the samples could not be used."""


Skips = list[tuple[str, str]]
# (this process's newly met bad samples, its usable samples) -> the same, pooled over every process
Exchange = Callable[[Skips, int], tuple[Skips, int]]


class SkipTracker:
    def __init__(self, max_bad_fraction: float, total: int | None = None, report: Path | None = None,
                 min_seen: int = 100, initial: Skips = (), what: str = "data",
                 exchange: Exchange | None = None, announce: bool = True):
        """`initial`: bad samples every process met opening the data (not exchanged);
        `announce`: this process logs the bad samples (one of several does)."""
        if not 0 <= max_bad_fraction <= 1:
            raise ValueError(f"max_bad_fraction must lie in [0, 1], got {max_bad_fraction}")
        self.max_bad_fraction = max_bad_fraction
        self.total = total
        self.report = report
        self.min_seen = min_seen
        self.what = what
        self.exchange = exchange
        self.announce = announce
        self.bad: dict[str, str] = {}
        self.seen_good = 0
        self.epoch_start = 0  # `seen` when the current epoch began (None: it began before this process)
        self._new(initial)

    @property
    def seen(self) -> int:
        return self.seen_good + len(self.bad)

    def _new(self, skipped) -> None:
        fresh = [(w, r) for w, r in skipped if w not in self.bad]
        if not fresh:
            return
        for w, r in fresh:
            self.bad[w] = r
            if not self.announce:
                continue
            if len(self.bad) <= 20:
                log.warning("skipped %s: %s", w, r)
            elif len(self.bad) == 21:
                log.warning("more unusable samples; all of them are listed in %s", self.report or "the data report")
        self.write_report()
        self.check()

    def update(self, batch: dict) -> dict:
        """Count a batch's samples and its skipped ones; returns the batch without "skipped"."""
        skipped = decode_skips(batch.pop("skipped", None))
        good = next((len(batch[key]) for key in ("image", "image_features") if key in batch), 0)
        if self.exchange is not None:
            skipped, good = self.exchange(skipped, good)
        self.seen_good += good
        self._new(skipped)
        return batch

    def end_epoch(self) -> None:
        """An epoch was read through: a stream's size is now known (the samples of that epoch,
        when this process read it from its start; see `epoch_start`)."""
        if not self.total and self.epoch_start is not None:
            self.total = self.seen - self.epoch_start
            self.write_report()
        self.epoch_start = self.seen
        self.check()

    def fraction(self) -> float:
        denom = self.total if self.total else self.seen
        return len(self.bad) / denom if denom else 0.0

    def check(self) -> None:
        if not self.bad:
            return
        judged_on = self.total or max(self.seen, self.min_seen)
        if len(self.bad) / judged_on > self.max_bad_fraction:
            where, reason = next(iter(self.bad.items()))
            of = f"{self.total} samples" if self.total else f"the first {self.seen} samples read"
            raise TooManyBadSamplesError(
                f"{self.what}: {len(self.bad)} of {of} ({self.fraction():.1%}) are unusable, "
                f"more than data.max_bad_fraction {self.max_bad_fraction}; first: {where}: {reason}"
                + (f" (all listed in {self.report})" if self.report else "")
            )

    def summary(self) -> dict:
        return {"bad_samples": len(self.bad), "samples_read": self.seen, "dataset_size": self.total,
                "bad_fraction": self.fraction(), "max_bad_fraction": self.max_bad_fraction}

    def write_report(self) -> None:
        if self.report is None:
            return
        data = self.summary() | {"skipped": [{"where": w, "reason": r} for w, r in self.bad.items()]}
        write_json(self.report, data)


class TrackedBatches:
    """Batches from `batches` (an iterator, e.g. the trainer's BatchStream) passed through
    `tracker`; other attributes (position(), close()) are the wrapped object's. When `batches`
    has a `position()` ({"epoch": ...}), the tracker is told where each epoch ends."""

    def __init__(self, batches, tracker: SkipTracker):
        self._batches, self.tracker = batches, tracker
        position = self._position()
        self._epoch = position.get("epoch")
        if position.get("samples_in_epoch"):  # resumed mid-epoch: this epoch's size is not ours to count
            tracker.epoch_start = None

    def _position(self) -> dict:
        position = getattr(self._batches, "position", None)
        return position() if position is not None else {}

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        raw = next(self._batches)
        position = self._position()
        epoch = position.get("epoch")
        if epoch == self._epoch:
            return self.tracker.update(raw)
        self._epoch = epoch
        if position.get("samples_in_epoch"):  # this batch is the next epoch's first: the last one ended before it
            self.tracker.end_epoch()
            return self.tracker.update(raw)
        batch = self.tracker.update(raw)  # this batch completed the epoch
        self.tracker.end_epoch()
        return batch

    def __getattr__(self, name):
        return getattr(self._batches, name)
