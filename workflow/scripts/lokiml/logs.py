"""Logging set-up for rule scripts.

``redirect_to_log`` sends file descriptors 1 and 2 to the rule's log at the
OS level, *before* TensorFlow or other native libraries are imported, so that
their own messages land in the log too.
"""

from __future__ import annotations

import atexit
import logging
import os
import resource
import sys
import time


def redirect_to_log(log_path) -> None:
    """Point stdout and stderr (fd 1 and 2) at ``log_path`` (appending) and set up logging."""
    if log_path:
        os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
        sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    setup_logging()
    atexit.register(_log_usage, time.monotonic())


def peak_rss_mb() -> float:
    """Peak resident memory of this process (MB).

    Linux's ``VmHWM`` (the high-water mark of this process's own memory). Not getrusage's
    ``ru_maxrss``: Linux keeps that across fork and exec, so a job started by Snakemake
    reported Snakemake's own size at the fork (128 MB for every job at 10 000 objects).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # other systems: KiB on Linux, bytes on macOS


def _log_usage(start: float) -> None:
    # Exact, unlike Snakemake's benchmark files, which sample memory every 0.5 s or more
    # and so miss the peak of short jobs. benchmarks/bench_scale.py reads this line.
    logging.getLogger("lokiml").info("job finished: %.1f s, peak memory %.0f MB", time.monotonic() - start,
                                     peak_rss_mb())


def setup_logging(level=logging.INFO) -> None:
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
    root.addHandler(handler)
    root.setLevel(level)


class Progress:
    """Log count, rate and time left every ``every`` seconds."""

    def __init__(self, total: int, what: str, logger: logging.Logger, every: float = 10.0):
        self.total = total
        self.what = what
        self.log = logger
        self.every = every
        self.start = time.monotonic()
        self.last = self.start
        self.done = 0

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every or self.done == self.total:
            self.last = now
            self._emit(now)

    def _emit(self, now: float) -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        self.log.info(
            "%s: %d/%d (%.1f%%), %.1f/s, %.0f s elapsed, about %.0f s left",
            self.what, self.done, self.total, 100.0 * self.done / max(self.total, 1), rate, elapsed, left,
        )
