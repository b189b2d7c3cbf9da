"""A deployment log's lines read back as JSON records (trestle.deploy.logs.logrecords)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from trestle.deploy.logs.logrecords import LineParser, parse_since, records
from trestle.errors import BadRequest

LOG = b"""2026-11-22T13:00:00 [trestle] pushed as deployment d1 of model m (m1)
2026-11-22T13:00:00 [trestle] building a virtualenv with 1 requirement(s)
Collecting unidecode==1.3.8
Successfully installed unidecode-1.3.8
2026-11-22 13:00:05,123 INFO [-] trestle.runtime (replica 1): serving /x (deployment=d1)
2026-11-22 13:00:06,000 ERROR [req-7] trestle.runtime (replica 1): Model.predict raised:
Traceback (most recent call last):
  File "model/model.py", line 3, in predict
RuntimeError: boom
2026-11-22 13:00:07,500 INFO [req-8] trestle.runtime: POST /predict -> 200 (3 ms)
hello from print
2026-11-22T13:00:08 [trestle] deployment is active
"""


def test_each_kind_of_line_becomes_a_record_with_the_same_keys():
    out = records(LOG)
    assert [r.source for r in out] == ["trestle", "trestle", "build", "build", "worker", "worker",
                                       "output", "output", "output", "worker", "output", "trestle"]
    serving = out[4]
    assert (serving.level, serving.request_id, serving.replica, serving.logger) == \
        ("INFO", None, 1, "trestle.runtime")
    traceback = out[5:9]
    assert {(r.request_id, r.replica) for r in traceback} == {("req-7", 1)}
    assert out[9].request_id == "req-8" and out[9].replica is None
    assert out[10].request_id is None  # a print after a request line is not part of it
    keys = {frozenset(json.loads(r.to_json())) for r in out}
    assert keys == {frozenset({"time", "source", "level", "request_id", "replica", "logger", "message"})}
    assert out[2].time == out[1].time  # a line without a time takes the one before it


def test_pip_output_after_the_install_line_is_build_output():
    out = records(b"""2026-11-22T13:00:00 [trestle] building a virtualenv with 1 requirement(s)
2026-11-22T13:00:00 [trestle] installing requirements into a new virtualenv (88dd15420887)
Collecting unidecode==1.3.8
2026-11-22T13:00:03 [trestle] build command 1/1: make assets
made
2026-11-22T13:00:04 [trestle] deployment is active
printed later
""")
    assert [r.source for r in out] == ["trestle", "trestle", "build", "trestle", "build", "trestle",
                                       "output"]


def test_since_keeps_what_came_at_or_after():
    local = datetime(2026, 11, 22, 13, 0, 7).astimezone()  # log times are the machine's local time
    kept = records(LOG, since=local)
    assert [r.message for r in kept][-3:] == ["POST /predict -> 200 (3 ms)", "hello from print",
                                              "deployment is active"]


def test_since_reads_durations_and_times():
    now = datetime(2026, 11, 22, 13, 0, tzinfo=UTC)
    assert parse_since("90s", now) == now - timedelta(seconds=90)
    assert parse_since("2h", now) == now - timedelta(hours=2)
    assert parse_since("2026-11-22T12:00:00Z", now) == now - timedelta(hours=1)
    assert parse_since("2026-11-22T12:00:00", now) == now - timedelta(hours=1)
    with pytest.raises(BadRequest) as info:
        parse_since("yesterday", now)
    assert info.value.param == "since"


def test_an_overlong_line_is_cut():
    record = LineParser().parse("x" * 100_000)
    assert len(record.message) < 20_000 and record.message.endswith("[line cut]")
