"""The only module that imports `llama_cpp`: a GGUF model, its vocabulary and a batched context
(and `LlamaVocab`, a GGUF's vocabulary alone, which the OpenAI bridge counts tokens with).

The scheduler speaks to llama.cpp through `LlamaModel` alone:

    model = LlamaModel.load(path, context_length=2048, slots=8, threads=2)
    ids = model.tokenize("hello", add_special=False, parse_special=True)
    rows = model.decode([(seq_id, tokens, start_pos, want_logits), ...])  # {seq_id: logits row}
    model.remove_sequence(seq_id)

Facts this relies on: `n_ctx` is split between sequences, so it is sized
as per-sequence context x slots; `kv_unified` stays False and flash attention at its default, so
a sequence's greedy output in a batch equals its output alone; `llama_get_logits_ith` takes the
position in the batch.
"""

from __future__ import annotations

import ctypes
import logging
from pathlib import Path

import llama_cpp
import numpy as np

from trestle.engine.fingerprint import system_fingerprint
from trestle.engine.model import ModelInfo
from trestle.errors import TrestleError

log = logging.getLogger(__name__)

_backend_ready = False


def _quiet_llama_logs() -> None:
    """Route llama.cpp's own logging to ours (debug level) instead of raw stderr."""

    @llama_cpp.llama_log_callback
    def _cb(level, text, _user):  # pragma: no cover - called from C
        if text:
            log.debug("llama.cpp: %s", text.decode("utf-8", "replace").rstrip())

    global _log_cb
    _log_cb = _cb  # keep a reference: C holds only the pointer
    llama_cpp.llama_log_set(_cb, ctypes.c_void_p(0))


class LlamaModel:
    """A loaded GGUF with one context of `slots` sequences: the `EngineModel` (engine/model.py)
    on llama.cpp. Not thread-safe: one engine thread."""

    def __init__(self, model, ctx, vocab, info: ModelInfo, n_batch: int):
        self._model = model
        self._ctx = ctx
        self._vocab = vocab
        self._mem = llama_cpp.llama_get_memory(ctx)
        self.info = info
        self.n_batch = n_batch
        self._batch = llama_cpp.llama_batch_init(n_batch, 0, 1)
        n = info.n_vocab
        self.eog_ids = np.array(
            [t for t in range(n) if llama_cpp.llama_vocab_is_eog(vocab, t)], dtype=np.int64
        )
        self.control_ids = frozenset(
            t for t in range(n) if llama_cpp.llama_vocab_is_control(vocab, t)
        ) | frozenset(int(t) for t in self.eog_ids)
        # Byte pieces of every token, rendered with and without special tokens.
        self._pieces = [self._piece(t, special=False) for t in range(n)]
        self._special_pieces = [self._piece(t, special=True) for t in range(n)]

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def load(cls, path: Path, *, context_length: int, slots: int, threads: int,
             gpu_layers: int = 0) -> "LlamaModel":
        global _backend_ready
        if not _backend_ready:
            _quiet_llama_logs()
            llama_cpp.llama_backend_init()
            _backend_ready = True
        mparams = llama_cpp.llama_model_default_params()
        # No "extra" weight buffers (CPU repacking, AMX): on CPUs with AMX, llama.cpp's AMX
        # matmul crashes this build in the first llama_decode (SIGSEGV in
        # ggml_backend_amx_mul_mat, seen with SmolLM2 Q4_1 on a Sapphire Rapids host).
        mparams.use_extra_bufts = False
        if gpu_layers and not llama_cpp.llama_supports_gpu_offload():
            raise TrestleError("engine.gpu_layers needs a GPU build of llama-cpp-python; this one "
                               "runs on the CPU only (set gpu_layers to 0, or reinstall it with "
                               "GPU support)")
        mparams.n_gpu_layers = 0x7FFFFFFF if gpu_layers == -1 else gpu_layers  # -1: every layer
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), mparams)
        if not model:
            raise TrestleError(f"llama.cpp could not load the model file {path}")
        n_batch = max(512, min(context_length, 2048))
        cparams = llama_cpp.llama_context_default_params()
        cparams.n_ctx = context_length * slots
        cparams.n_batch = n_batch
        cparams.n_ubatch = n_batch
        cparams.n_seq_max = slots
        cparams.n_threads = threads
        cparams.n_threads_batch = threads
        cparams.kv_unified = False
        cparams.no_perf = True
        ctx = llama_cpp.llama_init_from_model(model, cparams)
        if not ctx:
            llama_cpp.llama_model_free(model)
            raise TrestleError("llama.cpp could not create a context (context_length x max_batch too big?)")
        vocab = llama_cpp.llama_model_get_vocab(model)
        tmpl = llama_cpp.llama_model_chat_template(model, None)
        n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)

        def text_of(tok: int) -> str:
            if tok < 0 or tok >= n_vocab:
                return ""
            raw = llama_cpp.llama_vocab_get_text(vocab, tok)
            return raw.decode("utf-8", "replace") if raw else ""

        info = ModelInfo(
            n_vocab=n_vocab,
            n_ctx_seq=llama_cpp.llama_n_ctx_seq(ctx),
            slots=slots,
            chat_template=tmpl.decode("utf-8") if tmpl else None,
            bos_token=text_of(llama_cpp.llama_vocab_bos(vocab)),
            eos_token=text_of(llama_cpp.llama_vocab_eos(vocab)),
            bos_id=int(llama_cpp.llama_vocab_bos(vocab)),
            add_bos=bool(llama_cpp.llama_vocab_get_add_bos(vocab)),
            fingerprint=system_fingerprint(Path(path), build=f"llama-cpp-python {llama_cpp.__version__}"),
        )
        log.info(
            "loaded %s: vocab %d, %d tokens per sequence x %d slots, %d threads",
            Path(path).name, n_vocab, info.n_ctx_seq, slots, threads,
        )
        return cls(model, ctx, vocab, info, n_batch)

    def close(self) -> None:
        if self._ctx:
            llama_cpp.llama_batch_free(self._batch)
            llama_cpp.llama_free(self._ctx)
            llama_cpp.llama_model_free(self._model)
            self._ctx = None

    # -- vocabulary ------------------------------------------------------------------------
    def _piece(self, token: int, *, special: bool) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def piece(self, token: int, *, special: bool) -> bytes:
        """The bytes of one token; control tokens are empty unless `special`."""
        return (self._special_pieces if special else self._pieces)[token]

    @property
    def vocab_handle(self):
        """llama.cpp's vocabulary pointer, for libraries that read it (llguidance's tokenizer)."""
        return self._vocab

    def is_control(self, token: int) -> bool:
        return token in self.control_ids

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        return _tokenize(self._vocab, text, add_special=add_special, parse_special=parse_special)

    # -- decoding --------------------------------------------------------------------------
    def decode(self, work: list[tuple[int, list[int], int, bool]]) -> dict[int, np.ndarray]:
        """Run one llama_decode over several sequences.

        `work` holds `(seq_id, tokens, first_pos, want_logits)`; the tokens of all entries
        together must fit `n_batch`. Returns a copy of the logits row after the last token of
        each entry that asked for it.
        """
        b = self._batch
        i = 0
        wanted: list[tuple[int, int]] = []
        # In seq_id order: with one KV stream per sequence llama.cpp splits a batch whose
        # sequences are out of order into more micro-batches (measured: 8 streams ~140 tok/s
        # unordered vs ~205 ordered on 2 cores).
        for seq_id, tokens, pos, want in sorted(work, key=lambda w: w[0]):
            for k, tok in enumerate(tokens):
                b.token[i] = tok
                b.pos[i] = pos + k
                b.n_seq_id[i] = 1
                b.seq_id[i][0] = seq_id
                b.logits[i] = 0
                i += 1
            if want:
                b.logits[i - 1] = 1
                wanted.append((seq_id, i - 1))
        b.n_tokens = i
        rc = llama_cpp.llama_decode(self._ctx, b)
        if rc != 0:
            raise TrestleError(f"llama_decode failed with code {rc}")
        n = self.info.n_vocab
        out = {}
        for seq_id, idx in wanted:
            ptr = llama_cpp.llama_get_logits_ith(self._ctx, idx)
            out[seq_id] = np.ctypeslib.as_array(ptr, shape=(n,)).copy()
        return out

    def remove_sequence(self, seq_id: int) -> None:
        llama_cpp.llama_memory_seq_rm(self._mem, seq_id, -1, -1)

    def keep_prefix(self, seq_id: int, n: int) -> None:
        """Drop every cached position of `seq_id` from `n` on."""
        llama_cpp.llama_memory_seq_rm(self._mem, seq_id, n, -1)

    def copy_prefix(self, src: int, dst: int, n: int) -> None:
        """Make `dst` start with the first `n` cached positions of `src`.

        With `kv_unified` False each sequence has its own stream, and llama.cpp copies between
        streams only whole (the copy is done at the start of the next decode); the tail past
        `n` is then dropped.
        """
        llama_cpp.llama_memory_seq_rm(self._mem, dst, -1, -1)
        llama_cpp.llama_memory_seq_cp(self._mem, src, dst, -1, -1)
        llama_cpp.llama_memory_seq_rm(self._mem, dst, n, -1)


def _tokenize(vocab, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
    data = text.encode("utf-8")
    cap = len(data) + 8
    buf = (llama_cpp.llama_token * cap)()
    n = llama_cpp.llama_tokenize(vocab, data, len(data), buf, cap, add_special, parse_special)
    if n < 0:
        cap = -n
        buf = (llama_cpp.llama_token * cap)()
        n = llama_cpp.llama_tokenize(vocab, data, len(data), buf, cap, add_special, parse_special)
    return list(buf[:n])


class LlamaVocab:
    """A GGUF's vocabulary and chat template alone (llama.cpp's `vocab_only` load: no weights, no
    context), for counting tokens outside the engine. Tokenizing is thread-safe."""

    def __init__(self, model, chat_template: str | None, bos_token: str, eos_token: str):
        self._model = model
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        self.chat_template = chat_template
        self.bos_token = bos_token
        self.eos_token = eos_token

    @classmethod
    def load(cls, path: Path) -> "LlamaVocab":
        global _backend_ready
        if not _backend_ready:
            _quiet_llama_logs()
            llama_cpp.llama_backend_init()
            _backend_ready = True
        mparams = llama_cpp.llama_model_default_params()
        mparams.vocab_only = True
        mparams.n_gpu_layers = 0
        model = llama_cpp.llama_model_load_from_file(str(path).encode(), mparams)
        if not model:
            raise TrestleError("llama.cpp could not read the file as a GGUF")
        vocab = llama_cpp.llama_model_get_vocab(model)
        n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)

        def text_of(tok: int) -> str:
            raw = llama_cpp.llama_vocab_get_text(vocab, tok) if 0 <= tok < n_vocab else None
            return raw.decode("utf-8", "replace") if raw else ""

        tmpl = llama_cpp.llama_model_chat_template(model, None)
        return cls(model, tmpl.decode("utf-8") if tmpl else None,
                   text_of(llama_cpp.llama_vocab_bos(vocab)), text_of(llama_cpp.llama_vocab_eos(vocab)))

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        return _tokenize(self._vocab, text, add_special=add_special, parse_special=parse_special)

    def close(self) -> None:
        if self._model:
            llama_cpp.llama_model_free(self._model)
            self._model = None
