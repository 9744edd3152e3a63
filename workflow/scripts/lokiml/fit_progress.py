"""Progress inside a training epoch, with the time left, as a Keras callback.

``train.py`` runs ``model.fit`` one epoch at a time; with a large image size an epoch can take an
hour, so one line per epoch says nothing for that long. :class:`EpochProgress` logs the batches
done, the rate, when the epoch ends and, from the epochs before, how long the phase has left
(early stopping may end it sooner), every ``every`` seconds in the job's log and, less often, on
the console (:func:`lokiml.logs.console`). At the end of the epoch it writes the epoch's scores to
the console (rate-limited too, so a run of many one-second epochs does not flood it).
"""

from __future__ import annotations

import logging
import time

import keras

from .logs import console, duration

log = logging.getLogger(__name__)


class EpochProgress(keras.callbacks.Callback):
    """Log the progress of one ``fit(epochs=1)`` call: epoch ``index`` of ``n_epochs`` of ``phase``.

    ``previous_seconds``: durations of the phase's epochs before this one (for the time left).
    """

    def __init__(self, phase: str, index: int, n_epochs: int, previous_seconds=(), every: float = 10.0):
        super().__init__()
        self.phase = phase
        self.index = index
        self.n_epochs = n_epochs
        self.previous = [float(s) for s in previous_seconds]
        self.every = every
        self.start = self.last = time.monotonic()
        self.steps = None
        self.first = None

    def on_epoch_begin(self, epoch, logs=None):
        self.start = self.last = time.monotonic()
        self.first = None  # the end of the first batch: the rate is measured from there (tracing excluded)
        self.steps = (self.params or {}).get("steps")

    def _left_after_this_epoch(self, this_epoch: float) -> float:
        per_epoch = sum(self.previous[-5:]) / len(self.previous[-5:]) if self.previous else this_epoch
        return per_epoch * (self.n_epochs - self.index)

    def on_train_batch_end(self, batch, logs=None):
        now = time.monotonic()
        if self.first is None:
            self.first = (now, batch + 1)
        done = batch + 1
        if now - self.last < self.every or (self.steps and done >= self.steps):
            return  # the epoch's end has its own line
        self.last = now
        elapsed = now - self.start
        # the first batch also builds the graph (seconds to minutes): after it, count from its end
        t0, n0 = self.first if done > self.first[1] else (self.start, 0)
        rate = (done - n0) / (now - t0) if now > t0 else 0.0
        where = f"{self.phase} epoch {self.index}/{self.n_epochs}"
        if self.steps:
            epoch_left = (self.steps - done) / rate if rate > 0 else float("inf")
            total_left = epoch_left + self._left_after_this_epoch(elapsed + epoch_left)
            msg = (f"{where}: batch {done}/{self.steps} ({100.0 * done / self.steps:.0f}%), {rate:.2f} batches/s, "
                   f"epoch ends in about {duration(epoch_left)}; about {duration(total_left)} left for this phase "
                   f"(less if early stopping ends it)")
        else:  # a dataset of unknown length
            msg = f"{where}: batch {done}, {rate:.2f} batches/s, {duration(elapsed)} into the epoch"
        log.info("%s", msg)
        console(msg)

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.monotonic() - self.start
        logs = logs or {}
        scores = ", ".join(f"{k} {float(logs[k]):.3f}" for k in ("loss", "val_loss", "val_accuracy") if k in logs)
        left = self._left_after_this_epoch(seconds)
        tail = f"; about {duration(left)} left for this phase" if self.index < self.n_epochs else ""
        console(f"{self.phase} epoch {self.index}/{self.n_epochs} in {duration(seconds)}: {scores}{tail}")
