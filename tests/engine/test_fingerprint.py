"""system_fingerprint: the same build and weights give the same value; a change to either does not."""

from __future__ import annotations

from pathlib import Path

from trestle.engine.fingerprint import BLOCK, BLOCKS, system_fingerprint


def test_same_build_and_weights_same_fingerprint_and_a_change_shows(tmp_path: Path):
    small = tmp_path / "small.gguf"
    small.write_bytes(b"GGUF" + bytes(1000))
    fp = system_fingerprint(small, build="llama-cpp-python 1")
    assert fp.startswith("fp_") and len(fp) == 15
    assert system_fingerprint(small, build="llama-cpp-python 1") == fp
    assert system_fingerprint(small, build="llama-cpp-python 2") != fp
    small.write_bytes(b"GGUF" + bytes(999) + b"\x01")
    assert system_fingerprint(small, build="llama-cpp-python 1") != fp


def test_large_weights_are_sampled_at_both_ends(tmp_path: Path):
    big = tmp_path / "big.gguf"
    size = BLOCK * BLOCKS * 2
    big.write_bytes(bytes(size))
    fp = system_fingerprint(big, build="b")
    for offset in (0, size - 1):  # the header and the last tensor bytes are always read
        data = bytearray(size)
        data[offset] = 1
        big.write_bytes(bytes(data))
        assert system_fingerprint(big, build="b") != fp
    big.write_bytes(bytes(size + 1))  # the size is part of it
    assert system_fingerprint(big, build="b") != fp
