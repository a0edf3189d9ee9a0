"""Rank 0's progress display: bar, log lines, ETA."""

import io
import logging

from mpicolor.job.progress import Progress, format_duration


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_bar_shows_tarballs_frames_rate_and_eta():
    clock, stream = Clock(), io.StringIO()
    progress = Progress(4, stream=stream, clock=clock, mode="bar")
    clock.now += 10
    progress.update(1, 250, 1000)
    text = stream.getvalue()
    assert text.startswith("\r[#######") and "data set 1/4" in text and "frames 250/1000" in text
    assert "25.0 frames/s" in text and "ETA 0:00:30" in text


def test_log_lines_only_every_interval():
    clock, lines = Clock(), []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logger = logging.getLogger("mpicolor.job.progress")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        progress = Progress(2, stream=io.StringIO(), clock=clock, mode="log", interval=10)
        for _ in range(5):
            clock.now += 3
            progress.update(0, 10, 100)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    assert lines == ["data set 0/2, frames 10/100, 0.8 frames/s, elapsed 0:00:12, ETA 0:01:48"]


def test_durations():
    assert format_duration(3723.4) == "1:02:03"
    assert format_duration(None) == "?" and format_duration(float("inf")) == "?"
