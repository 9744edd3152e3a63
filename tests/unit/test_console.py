"""The console of a long job: progress with the time left, rate-limited, named after the job (lokiml.logs,
lokiml.fit_progress)."""

import io
import logging

import numpy as np
import pytest

from lokiml import logs


@pytest.fixture()
def console(monkeypatch):
    """The job's console, captured: what redirect_to_log keeps of the stderr the job started with."""
    stream = io.StringIO()
    monkeypatch.setattr(logs, "_CONSOLE", {"stream": stream, "label": "train_model/demo", "last": None})
    monkeypatch.setenv("LOKIML_CONSOLE_EVERY", "30")
    return stream


def test_job_label_from_the_log_path():
    assert logs.job_label("logs/normalise_images/96px_shard0.log") == "normalise_images/96px_shard0"
    assert logs.job_label("/x/y/logs/read_export.log") == "read_export"


def test_durations_read_like_a_person_would_say_them():
    assert [logs.duration(s) for s in (4.2, 200, 5400, 7300)] == ["4 s", "3 min", "90 min", "2 h 2 min"]
    assert logs.duration(float("inf")) == "unknown"


def test_progress_says_how_much_is_left_and_the_console_gets_it_at_most_every_30_s(console, monkeypatch, caplog):
    clock = [1000.0]
    monkeypatch.setattr(logs.time, "monotonic", lambda: clock[0])
    p = logs.Progress(1000, "normalise 96px", logging.getLogger("t"), every=10.0, unit="images")
    with caplog.at_level(logging.INFO):
        for _ in range(10):  # 100 images every 10 s: 10/s
            clock[0] += 10.0
            p.update(100)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 10  # the log: every 10 s
    assert lines[0] == "normalise 96px: 100/1000 images (10%), 10.0/s, 10 s so far, about 90 s left"
    assert lines[-1].startswith("normalise 96px: 1000/1000 images done in")
    shown = console.getvalue().splitlines()
    assert 3 <= len(shown) <= 4, shown  # the console: at most one line per 30 s, not the final one
    assert all(s.split("] ", 1)[1].startswith("train_model/demo: normalise 96px: ") for s in shown)
    assert "about 90 s left" in shown[0]


def test_forced_lines_always_reach_the_console(console):
    assert logs.console("first") and not logs.console("too soon")
    assert logs.console("data: 100 rows", force=True)
    assert console.getvalue().count("\n") == 2


def test_nothing_goes_to_a_console_outside_a_rule_script(monkeypatch):
    monkeypatch.setattr(logs, "_CONSOLE", {})
    assert logs.console("hello", force=True) is False


@pytest.mark.slow
def test_training_logs_progress_inside_an_epoch_with_the_time_left(console, monkeypatch, caplog):
    """A Keras fit with the callback train.py gives it: batch progress, epoch end, time left for the phase."""
    import keras

    from lokiml.fit_progress import EpochProgress

    monkeypatch.setenv("LOKIML_CONSOLE_EVERY", "0")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile("sgd", "sparse_categorical_crossentropy")
    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    cb = EpochProgress("head", 3, 10, previous_seconds=[60.0, 60.0], every=0.0)
    with caplog.at_level(logging.INFO, logger="lokiml.fit_progress"):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[cb])
    msgs = [r.getMessage() for r in caplog.records]
    assert msgs and msgs[0].startswith("head epoch 3/10: batch 1/8 (12%)")
    assert "epoch ends in about" in msgs[0]
    # 7 epochs after this one at 60 s each (the previous epochs' pace)
    assert "about 7 min left for this phase" in msgs[-1] or "about 8 min left for this phase" in msgs[-1]
    out = console.getvalue()
    assert "train_model/demo: head epoch 3/10 in " in out and "loss" in out
