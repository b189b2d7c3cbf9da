"""A deployment log's lines as JSON records: what `trestle deployments logs` prints.

The log (`worker.log`, see `trestle.deploy.logs.logfile`) holds three kinds of lines, in order:

    2026-11-22T13:00:00 [trestle] building a virtualenv with 1 requirement(s)     trestle's own
    Collecting unidecode ...                                                       pip's output
    {"time": "2026-11-22T13:00:05.123Z", "level": "INFO", "request_id": "req-42",
     "logger": "trestle.runtime", "message": "POST ...", "replica": 0}            a worker's
    2026-11-22 13:00:05,123 INFO [req-42] trestle.runtime (replica 0): POST ...    (older text form)

Each line becomes one record, always with the same keys:

    {"time": "2026-11-22T13:00:05.123000+00:00", "source": "worker", "level": "INFO",
     "request_id": "req-42", "replica": 0, "logger": "trestle.runtime", "message": "POST ..."}

`source` is `trestle` (deployment events: pushed, building, active, deactivated ...), `build`
(the output of a virtualenv build), `worker` (a worker's log lines: loading, requests) or
`output` (anything else a worker printed). `request_id` is null outside a request, `replica`
where the line does not say. A line without a time of its own (a traceback, pip's output, a
print) takes the time of the line before it; a traceback's lines also take its request id and
replica.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta

from trestle.errors import BadRequest
from trestle.requestid import NO_REQUEST

_WORKER = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
    r"\[([^\]\s]*)\] ([\w.]+)(?: \(replica (\d+)\))?: (.*)$"
)
_TRESTLE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d) \[trestle\] (.*)$")
# trestle's own lines that start or go on with a build: the lines without a stamp after them
# are the build's output (pip's, the build commands')
_BUILD_LINES = ("building a virtualenv", "installing requirements", "reusing the virtualenv",
                "build command")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(s|m|h|d)$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_LINE_CHARS = 16 * 1024  # a longer line is cut (the record says so)


@dataclass
class LogRecord:
    time: datetime | None
    source: str
    message: str
    level: str | None = None
    request_id: str | None = None
    replica: int | None = None
    logger: str | None = None

    def to_json(self) -> str:
        data = asdict(self)
        data["time"] = self.time.isoformat() if self.time else None
        return json.dumps(data, ensure_ascii=False)


def _local(text: str, fmt: str) -> datetime:
    """A timestamp written in the machine's local time, as an aware UTC datetime."""
    return datetime.strptime(text, fmt).astimezone().astimezone(UTC)


class LineParser:
    """Turns lines into records, one at a time, remembering what continuation lines need."""

    def __init__(self) -> None:
        self.last: LogRecord | None = None
        self.building = False

    def parse(self, line: str) -> LogRecord:
        if len(line) > MAX_LINE_CHARS:
            line = line[:MAX_LINE_CHARS] + " [line cut]"
        record = self._parse(line)
        self.last = record
        return record

    def _parse(self, line: str) -> LogRecord:
        if line.startswith("{") and (record := _json_line(line)) is not None:
            self.building = False
            return record
        m = _WORKER.match(line)
        if m:
            self.building = False
            stamp, level, rid, logger, replica, message = m.groups()
            try:
                time = _local(stamp, "%Y-%m-%d %H:%M:%S,%f")
            except ValueError:
                time = None
            return LogRecord(time, "worker", message, level=level,
                             request_id=None if rid == NO_REQUEST else rid,
                             replica=int(replica) if replica is not None else None, logger=logger)
        m = _TRESTLE.match(line)
        if m:
            self.building = m.group(2).startswith(_BUILD_LINES)
            try:
                time = _local(m.group(1), "%Y-%m-%dT%H:%M:%S")
            except ValueError:
                time = None
            return LogRecord(time, "trestle", m.group(2))
        last = self.last
        time = last.time if last else None
        if self.building:
            return LogRecord(time, "build", line)
        if last is not None and last.source in ("worker", "output") and _continues(line, last):
            return LogRecord(time, "output", line, request_id=last.request_id, replica=last.replica)
        return LogRecord(time, "output", line)


def _json_line(line: str) -> LogRecord | None:
    """A worker's JSON log line (`trestle.runtime.logs.JsonLines`), or None for other JSON."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    if not isinstance(data, dict) or not {"time", "level", "message"} <= data.keys():
        return None
    try:
        time = datetime.fromisoformat(str(data["time"]).replace("Z", "+00:00"))
    except ValueError:
        time = None
    replica = data.get("replica")
    return LogRecord(time, "worker", str(data["message"]), level=str(data["level"]),
                     request_id=data.get("request_id") or None,
                     replica=replica if isinstance(replica, int) else None,
                     logger=data.get("logger"))


def _continues(line: str, last: LogRecord) -> bool:
    """A traceback's line after the log line that announced it."""
    return (line[:1].isspace() or line.startswith("Traceback") or last.message.endswith(":") or
            (last.source == "output" and last.message[:1].isspace()))


def records(data: bytes, since: datetime | None = None) -> list[LogRecord]:
    """The records of the complete lines in `data`, those at or after `since` when given."""
    parser = LineParser()
    out = []
    for raw in data.decode(errors="replace").splitlines():
        record = parser.parse(raw)
        if since is None or (record.time is not None and record.time >= since):
            out.append(record)
    return out


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`30s`, `5m`, `2h`, `1d` (that long ago), or an ISO 8601 time (UTC unless it says)."""
    now = now or datetime.now(UTC)
    m = _DURATION.match(text.strip())
    if m:
        return now - timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest("since must be a duration (30s, 5m, 2h, 1d) or an ISO 8601 time "
                         "(2026-11-22T13:00:00Z)", param="since") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)
