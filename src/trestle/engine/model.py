"""What the engine asks of a loaded model: the `EngineModel` protocol and its `ModelInfo`.

The scheduler, the sequences, the request preparation and the OpenAI rendering speak to the
model only through these members; `engine/llama.py` (`LlamaModel`) is the implementation.

    model.info                                  # ModelInfo: vocabulary size, context, template
    model.tokenize("hi", add_special=False, parse_special=True) -> [token ids]
    model.piece(token, special=False) -> bytes  # one token's bytes
    model.vocab_handle                          # llama.cpp's vocabulary, for llguidance
    model.decode([(seq_id, tokens, first_pos, want_logits), ...]) -> {seq_id: logits row}
    model.keep_prefix(seq_id, n)                # KV cache of seq_id: keep the first n positions
    model.copy_prefix(src, dst, n)              # dst starts with src's first n positions
    model.remove_sequence(seq_id)               # forget seq_id's KV cache
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class ModelInfo:
    n_vocab: int
    n_ctx_seq: int  # tokens per sequence
    slots: int
    chat_template: str | None
    bos_token: str
    eos_token: str
    bos_id: int
    add_bos: bool
    fingerprint: str = ""  # `system_fingerprint`: engine build + weights (engine/fingerprint.py)


class EngineModel(Protocol):
    """A loaded model with one context of `info.slots` sequences, driven by one engine thread."""

    info: ModelInfo
    n_batch: int  # most tokens one `decode` call takes, over all its sequences
    eog_ids: np.ndarray  # end-of-generation token ids

    # -- vocabulary (any thread) -------------------------------------------------------------
    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]: ...

    def piece(self, token: int, *, special: bool) -> bytes:
        """The bytes of one token; control tokens are empty unless `special`."""
        ...

    def is_control(self, token: int) -> bool: ...

    @property
    def vocab_handle(self):
        """llama.cpp's vocabulary pointer: llguidance builds its tokenizer from it (grammar.py)."""
        ...

    # -- the engine thread only --------------------------------------------------------------
    def decode(self, work: list[tuple[int, list[int], int, bool]]) -> dict[int, np.ndarray]:
        """One forward pass over `(seq_id, tokens, first_pos, want_logits)` entries; the logits
        row after the last token of each entry that wants one."""
        ...

    def remove_sequence(self, seq_id: int) -> None: ...

    def keep_prefix(self, seq_id: int, n: int) -> None: ...

    def copy_prefix(self, src: int, dst: int, n: int) -> None: ...

    def close(self) -> None: ...
