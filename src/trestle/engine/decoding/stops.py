"""Stop strings matched across token boundaries, with no leak of a stop's prefix.

`StopMatcher.feed(text)` returns the text that is safe to emit now: anything that could still be
the beginning of a stop string is held back until the next token settles it. When a stop
string completes, the text before it (plus the stop itself when `include_stop_str_in_output`)
is returned and `stopped` is set; the rest is dropped.
"""

from __future__ import annotations


class StopMatcher:
    def __init__(self, stops: list[str], *, include_stop_str_in_output: bool = False):
        self.stops = [s for s in stops if s]
        self.include = include_stop_str_in_output
        self._held = ""
        self.stopped: str | None = None  # the stop string that matched

    def feed(self, text: str) -> str:
        if self.stopped is not None:
            return ""
        if not self.stops:
            return text
        buf = self._held + text
        # Earliest complete match wins.
        best = None
        for s in self.stops:
            i = buf.find(s)
            if i >= 0 and (best is None or i < best[0]):
                best = (i, s)
        if best is not None:
            i, s = best
            self.stopped = s
            self._held = ""
            return buf[: i + len(s)] if self.include else buf[:i]
        # Hold back the longest suffix of buf that is a proper prefix of some stop.
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(buf)), hold, -1):
                if buf.endswith(s[:k]):
                    hold = k
                    break
        self._held = buf[len(buf) - hold :] if hold else ""
        return buf[: len(buf) - hold]

    def flush(self) -> str:
        """At the end of generation the held text was not a stop after all."""
        held, self._held = self._held, ""
        return "" if self.stopped is not None else held
