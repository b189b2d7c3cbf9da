"""Choosing and emitting tokens, per sequence: sampling (`sampler`), constrained decoding with
llguidance (`grammar`, the only module that imports it), stop strings (`stops`) and token ids to
text (`detokenizer`)."""
