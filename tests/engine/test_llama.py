"""The llama.cpp wrapper with the real model: batching and KV prefix reuse give the same logits."""

import numpy as np
import pytest

from trestle.engine.builtin import SMOLLM2_WEIGHTS, resolve_weights
from trestle.engine.llama import LlamaModel

from support import EXAMPLES

TEXT = "<|im_start|>user\nName three rivers in Europe and say where they flow.<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def model():
    m = LlamaModel.load(resolve_weights(SMOLLM2_WEIGHTS, EXAMPLES), context_length=128, slots=3, threads=2)
    yield m
    m.close()


def greedy(model, seq, first_row, start, n=8):
    out, row, pos = [], first_row, start
    for _ in range(n):
        tok = int(np.argmax(row))
        out.append(tok)
        row = model.decode([(seq, [tok], pos, True)])[seq]
        pos += 1
    return out


def test_chat_template_and_special_tokens(model):
    assert "<|im_start|>" in model.info.chat_template
    ids = model.tokenize(TEXT, add_special=False, parse_special=True)
    assert ids[0] == model.info.bos_id and 2 in ids  # <|im_start|> and <|im_end|> are single tokens
    assert set(model.eog_ids.tolist()) >= {2}


def test_batched_and_prefix_copied_sequences_match_a_solo_run(model):
    ids = model.tokenize(TEXT, add_special=False, parse_special=True)
    for s in range(3):
        model.remove_sequence(s)
    solo = greedy(model, 0, model.decode([(0, ids, 0, True)])[0], len(ids))
    model.remove_sequence(0)

    # seq 0 prefills the whole prompt; seq 1 copies all but the last 5 tokens from it
    row0 = model.decode([(0, ids, 0, True)])[0]
    model.copy_prefix(0, 1, len(ids) - 5)
    row1 = model.decode([(1, ids[-5:], len(ids) - 5, True)])[1]
    assert np.allclose(row0, row1, atol=1e-3)
    assert greedy(model, 1, row1, len(ids)) == solo

    # a slot that keeps the prefix of its own cache
    model.keep_prefix(0, len(ids) - 3)
    row0 = model.decode([(0, ids[-3:], len(ids) - 3, True)])[0]
    assert greedy(model, 0, row0, len(ids)) == solo
    for s in range(3):
        model.remove_sequence(s)
