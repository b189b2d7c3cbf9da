"""Stop strings across token boundaries: the matched stop (and any prefix of it) never leaks."""

from trestle.engine.decoding.stops import StopMatcher


def feed_all(m: StopMatcher, pieces) -> str:
    out = "".join(m.feed(p) for p in pieces)
    return out + m.flush()


def test_stop_split_over_pieces_is_cut():
    m = StopMatcher(["END"])
    assert m.feed("hello E") == "hello "  # "E" could start END: held back
    assert m.feed("N") == ""
    assert m.feed("Dgarbage") == ""
    assert m.stopped == "END"
    assert m.flush() == ""


def test_include_stop_str_in_output():
    assert feed_all(StopMatcher(["END"], include_stop_str_in_output=True), ["a E", "ND b"]) == "a END"


def test_false_prefix_is_released():
    m = StopMatcher(["END"])
    assert m.feed("x E") == "x "
    assert m.feed("Ny") == "ENy"
    assert m.stopped is None


def test_held_prefix_comes_out_at_the_end():
    assert feed_all(StopMatcher(["END"]), ["abc EN"]) == "abc EN"


def test_earliest_of_several_stops_wins():
    m = StopMatcher(["world", "lo"])
    assert m.feed("hello world") == "hel"
    assert m.stopped == "lo"


def test_no_stops_passes_through():
    assert feed_all(StopMatcher([]), ["a", "b"]) == "ab"
