"""Logging set-up for rule scripts.

``redirect_to_log`` sends file descriptors 1 and 2 to the rule's log at the
OS level, *before* TensorFlow or other native libraries are imported, so that
their own messages land in the log too.

It keeps the console too (the stderr the job was started with: Snakemake's terminal on a
workstation, the SLURM job's log on a cluster): :func:`console` writes one line there, named
after the job, and :class:`Progress` uses it to say how far a long job is and how long it has
left, at most once every ``LOKIML_CONSOLE_EVERY`` seconds (30) per job, so that a run of a few
jobs side by side stays readable. Everything also goes to the job's log, more often (10 s).
"""

from __future__ import annotations

import atexit
import logging
import os
import resource
import sys
import time


_CONSOLE: dict = {}


def job_label(log_path) -> str:
    """How the console names a job: its log's path under logs/, without .log (`normalise_images/96px_shard0`)."""
    parts = os.path.normpath(str(log_path)).split(os.sep)
    if "logs" in parts:
        parts = parts[len(parts) - parts[::-1].index("logs"):]
    label = "/".join(parts)
    return label[:-4] if label.endswith(".log") else label


def redirect_to_log(log_path) -> None:
    """Point stdout and stderr (fd 1 and 2) at ``log_path`` (appending) and set up logging.

    The original stderr stays open for :func:`console`.
    """
    if log_path:
        os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        sys.stdout.flush()
        sys.stderr.flush()
        if not _CONSOLE:
            try:
                stream = os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", errors="replace")
            except OSError:
                stream = None
            _CONSOLE.update(stream=stream, label=job_label(log_path), last=None)
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


def console_every() -> float:
    try:
        return max(0.0, float(os.environ.get("LOKIML_CONSOLE_EVERY", "30")))
    except ValueError:
        return 30.0


def console(message: str, force: bool = False) -> bool:
    """Write ``message`` as one line to the job's console, named after the job; True if it was written.

    Progress lines (``force=False``) are written at most once every ``LOKIML_CONSOLE_EVERY``
    seconds per job; ``force`` is for the few lines a user should see whatever the rate (a summary).
    Nothing happens outside a rule script (no :func:`redirect_to_log`).
    """
    stream = _CONSOLE.get("stream")
    if stream is None:
        return False
    now = time.monotonic()
    last = _CONSOLE.get("last")
    if not force and last is not None and now - last < console_every():
        return False
    _CONSOLE["last"] = now
    try:
        stream.write(f"[{time.strftime('%H:%M:%S')}] {_CONSOLE['label']}: {message}\n")
        stream.flush()
    except (OSError, ValueError):
        return False
    return True


def duration(seconds: float) -> str:
    """A rounded human duration: `45 s`, `3 min`, `1 h 20 min`."""
    if seconds != seconds or seconds == float("inf"):
        return "unknown"
    seconds = max(0.0, seconds)
    if seconds < 100:
        return f"{seconds:.0f} s"
    minutes = seconds / 60
    if minutes < 100:
        return f"{minutes:.0f} min"
    hours, minutes = divmod(round(minutes), 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


class Progress:
    """Log count, rate and time left every ``every`` seconds; the same on the console, less often.

    ``unit`` names what is counted in the message (`images`, `objects`).
    """

    def __init__(self, total: int, what: str, logger: logging.Logger, every: float = 10.0, unit: str = ""):
        self.total = total
        self.what = what
        self.log = logger
        self.every = every
        self.unit = f" {unit}" if unit else ""
        self.start = time.monotonic()
        self.last = self.start
        self.done = 0

    def update(self, n: int = 1) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last >= self.every or self.done == self.total:
            self.last = now
            self._emit(now)

    def message(self, now: float | None = None) -> str:
        now = time.monotonic() if now is None else now
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        if self.done >= self.total:
            return f"{self.what}: {self.done}/{self.total}{self.unit} done in {duration(elapsed)} ({rate:.1f}/s)"
        return (f"{self.what}: {self.done}/{self.total}{self.unit} ({100.0 * self.done / max(self.total, 1):.0f}%), "
                f"{rate:.1f}/s, {duration(elapsed)} so far, about {duration(left)} left")

    def _emit(self, now: float) -> None:
        msg = self.message(now)
        self.log.info("%s", msg)
        if self.done < self.total:
            console(msg)
