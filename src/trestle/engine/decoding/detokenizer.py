"""Token ids to text, one token at a time, never splitting a multi-byte UTF-8 character.

Incomplete UTF-8 bytes are held until the character completes; if the sequence ends first
(`max_tokens` cut it mid-character) they are dropped, so a text never ends in U+FFFD. `skip_special_tokens` drops control tokens such as `<|im_end|>`;
otherwise they are rendered, with a space on each side when `spaces_between_special_tokens`
(the vLLM convention: special and ordinary text are joined with " ").
"""

from __future__ import annotations

import codecs
from typing import Callable


class Detokenizer:
    def __init__(
        self,
        piece: Callable[[int, bool], bytes],
        is_control: Callable[[int], bool],
        *,
        skip_special_tokens: bool = True,
        spaces_between_special_tokens: bool = True,
    ):
        self._piece = piece
        self._is_control = is_control
        self._skip = skip_special_tokens
        self._spaces = spaces_between_special_tokens
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._any_text = False
        self._after_special = False

    def feed(self, token: int) -> str:
        """The text this token completes (may be empty while a character is incomplete)."""
        if self._is_control(token):
            if self._skip:
                return ""
            text = self._decoder.decode(self._piece(token, True))
            if self._spaces and self._any_text:
                text = " " + text
            self._any_text = True
            self._after_special = True
            return text
        text = self._decoder.decode(self._piece(token, False))
        if text and self._after_special and self._spaces:
            text = " " + text
        if text:
            self._after_special = False
            self._any_text = True
        return text

    def flush(self) -> str:
        """The end of the sequence: the bytes of a character it did not finish are dropped."""
        self._decoder.reset()
        return ""
