"""The gateway's log lines: `LineFormatter` writes what Python's own formatter writes."""

from __future__ import annotations

import logging

import pytest

from trestle.requestid import LOG_FORMAT, LineFormatter


def record(created: float) -> logging.LogRecord:
    rec = logging.LogRecord("trestle.access", logging.INFO, __file__, 1, "%s %s %d",
                            ("POST", "/model/m/production/predict", 200), None)
    rec.created, rec.msecs = created, int((created - int(created)) * 1000) + 0.0
    rec.request_id = "req-1"
    return rec


@pytest.mark.parametrize("datefmt", [None, "%H:%M:%S"])
def test_lines_are_those_of_pythons_formatter_across_seconds(datefmt):
    ours, python = LineFormatter(LOG_FORMAT, datefmt), logging.Formatter(LOG_FORMAT, datefmt)
    # the same second twice (the cached stamp), the next second, one before, and a later day
    for created in (1700000000.25, 1700000000.999, 1700000001.0, 1699999999.5, 1700090000.125):
        rec = record(created)
        assert ours.format(rec) == python.format(rec)
