"""Incremental detokenization with the real SmolLM2 vocabulary."""

from trestle.engine.decoding.detokenizer import Detokenizer


def make(vocab, **kw) -> Detokenizer:
    return Detokenizer(lambda t, special: vocab.piece(t, special=special), vocab.is_control, **kw)


def test_multibyte_characters_are_never_split(vocab):
    text = "naïve 世界 🙂🚀 ok"
    ids = vocab.tokenize(text, add_special=False, parse_special=False)
    assert len(ids) > len(text.split())  # the emoji take several byte tokens
    d = make(vocab)
    pieces = [d.feed(t) for t in ids]
    assert all("\ufffd" not in p for p in pieces)
    assert "".join(pieces) + d.flush() == text
    assert "" in pieces  # some token ended mid-character and was held


def test_special_tokens_skipped_or_rendered_with_spaces(vocab):
    ids = vocab.tokenize("a<|im_end|><|im_start|>b", add_special=False, parse_special=True)
    d = make(vocab)
    assert "".join(d.feed(t) for t in ids) == "ab"
    d = make(vocab, skip_special_tokens=False)
    assert "".join(d.feed(t) for t in ids) == "a <|im_end|> <|im_start|> b"
    d = make(vocab, skip_special_tokens=False, spaces_between_special_tokens=False)
    assert "".join(d.feed(t) for t in ids) == "a<|im_end|><|im_start|>b"


def test_a_character_left_unfinished_at_the_end_is_dropped(vocab):
    ids = vocab.tokenize("ok 🚀🌟", add_special=False, parse_special=False)
    pieces = [vocab.piece(t, special=False) for t in ids]
    # the first prefix of tokens that stops inside a character (the emoji take byte tokens)
    n = next(k for k in range(1, len(ids)) if _unfinished(b"".join(pieces[:k])))
    d = make(vocab)
    text = "".join(d.feed(t) for t in ids[:n])
    assert d.flush() == ""  # not "\ufffd"
    assert text == b"".join(pieces[:n]).decode("utf-8", "ignore")


def _unfinished(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False
