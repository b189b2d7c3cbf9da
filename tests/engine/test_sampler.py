"""The numpy sampler on hand-made logits rows: each field changes which tokens can come out."""

import numpy as np
import pytest

from trestle.engine.decoding.sampler import Sampler, SamplingParams

N = 100
EOG = np.array([0], dtype=np.int64)


def row(*top: float) -> np.ndarray:
    """Logits where token i (i < len(top)) has logit top[i] and every other token -10."""
    x = np.full(N, -10.0, dtype=np.float32)
    x[: len(top)] = top
    return x


def draws(params: SamplingParams, logits: np.ndarray, n: int = 300, prompt=()) -> set[int]:
    s = Sampler(params, N, EOG, list(prompt))
    return {s.sample(logits.copy()).token for _ in range(n)}


def test_temperature_zero_is_argmax():
    assert draws(SamplingParams(temperature=0), row(1, 5, 3), n=20) == {1}


def test_temperature_one_samples_several_tokens():
    assert len(draws(SamplingParams(temperature=1, top_k=-1), row(1, 1.2, 1.1, 0.9))) >= 3


def test_top_k_limits_candidates():
    flat = row(3, 2.9, 2.8, 2.7, 2.6, 2.5)
    assert draws(SamplingParams(top_k=2), flat) == {0, 1}
    assert len(draws(SamplingParams(top_k=-1), flat)) > 2


def test_top_p_keeps_the_nucleus():
    logits = row(*np.log([0.5, 0.3, 0.15, 0.05]))
    assert draws(SamplingParams(top_p=0.7, top_k=-1), logits) == {0, 1}
    assert 2 in draws(SamplingParams(top_p=1.0, top_k=-1), logits)


def test_min_p_drops_unlikely_tokens():
    logits = row(*np.log([0.4, 0.3, 0.15, 0.15]))
    assert draws(SamplingParams(min_p=0.5, top_k=-1), logits) == {0, 1}


def test_top_p_min_decays_top_p_to_its_floor():
    logits = row(*np.log([0.3, 0.25, 0.25, 0.2]))
    s = Sampler(SamplingParams(top_p=1.0, top_p_min=0.05, top_k=-1, seed=1), N, EOG, [])
    assert len({s.sample(logits.copy()).token for _ in range(200)}) > 1  # step 0: full nucleus
    for _ in range(60):
        s.observe(5)
    assert {s.sample(logits.copy()).token for _ in range(200)} == {0}  # 0.9**60 < 0.3: only the best
    plain = Sampler(SamplingParams(top_p=1.0, top_k=-1, seed=1), N, EOG, [])
    for _ in range(60):
        plain.observe(5)
    assert len({plain.sample(logits).token for _ in range(200)}) > 1


def test_logit_bias_forces_and_forbids():
    assert draws(SamplingParams(temperature=0, logit_bias={7: 100}), row(5, 4), n=5) == {7}
    assert draws(SamplingParams(temperature=0, logit_bias={0: -100}), row(5, 4), n=5) == {1}


def test_bad_token_ids_are_never_drawn():
    assert 0 not in draws(SamplingParams(bad_token_ids=[0], top_k=-1), row(10, 1, 1))


@pytest.mark.parametrize("field", ["frequency_penalty", "presence_penalty"])
def test_additive_penalties_push_away_from_seen_tokens(field):
    s = Sampler(SamplingParams(temperature=0, **{field: 2.0}), N, EOG, [])
    logits = row(2, 3, 1)
    assert s.sample(logits.copy()).token == 1
    s.observe(1)
    assert s.sample(logits.copy()).token == 0  # 3 - 2 < 2


def test_frequency_penalty_grows_with_count():
    s = Sampler(SamplingParams(temperature=0, frequency_penalty=0.6), N, EOG, [])
    logits = row(2, 3)
    s.observe(1)
    assert s.sample(logits.copy()).token == 1  # 3 - 0.6 > 2
    s.observe(1)
    assert s.sample(logits.copy()).token == 0  # 3 - 1.2 < 2


def test_repetition_penalty_covers_prompt_and_output():
    logits = row(2, 3)
    assert draws(SamplingParams(temperature=0, repetition_penalty=2.0), logits, n=3, prompt=[1]) == {0}
    s = Sampler(SamplingParams(temperature=0, repetition_penalty=2.0), N, EOG, [])
    assert s.sample(logits.copy()).token == 1
    s.observe(1)
    assert s.sample(logits.copy()).token == 0
    # below 1 it encourages: a seen positive logit is divided by 0.1 (2 -> 20 beats 3)
    assert draws(SamplingParams(temperature=0, repetition_penalty=0.1), row(3, 2), n=3, prompt=[1]) == {1}


def test_min_tokens_masks_end_and_stop_tokens_until_reached():
    s = Sampler(SamplingParams(temperature=0, min_tokens=2, stop_token_ids=[3]), N, EOG, [])
    logits = row(9, 1, 1, 8)
    assert s.sample(logits.copy()).token == 1
    s.observe(1)
    assert s.sample(logits.copy()).token == 1
    s.observe(1)
    assert s.sample(logits.copy()).token == 0


def test_ignore_eos_masks_end_tokens():
    assert draws(SamplingParams(temperature=0, ignore_eos=True), row(9, 1), n=3) == {1}


def test_same_seed_same_draws_different_seed_different():
    logits = row(1, 1, 1, 1, 1, 1, 1, 1)
    def seq(seed):
        s = Sampler(SamplingParams(seed=seed, top_k=-1), N, EOG, [])
        return [s.sample(logits.copy()).token for _ in range(30)]
    assert seq(42) == seq(42)
    assert seq(42) != seq(43)
    # the API allows any int64 seed, negative ones included
    assert seq(-1) == seq(-1)
    assert seq(-1) != seq(-2)


def test_logprobs_are_the_models_and_top_is_sorted():
    logits = row(3, 2, 1)
    s = Sampler(SamplingParams(temperature=0, logprobs=True, top_logprobs=3), N, EOG, [])
    out = s.sample(logits.copy())
    lse = np.log(np.exp(logits.astype(np.float64)).sum())
    assert out.logprob == pytest.approx(3 - lse)
    assert [t for t, _ in out.top] == [0, 1, 2]
    assert [lp for _, lp in out.top] == pytest.approx([3 - lse, 2 - lse, 1 - lse])


def test_rejected_tokens_are_resampled():
    s = Sampler(SamplingParams(temperature=0), N, EOG, [])
    assert s.sample(row(5, 4, 3), accept=lambda t: t not in (0, 1)).token == 2


def test_everything_masked_is_an_error():
    with pytest.raises(ValueError, match="every token is excluded"):
        Sampler(SamplingParams(bad_token_ids=list(range(N))), N, EOG, []).sample(row(1))


def test_nucleus_over_a_large_flat_vocabulary():
    """Without top_k the nucleus search first looks among the best tokens; when they do not hold
    top_p of the mass (a flat distribution), every token is sorted and stays reachable."""
    n = 50_000
    flat = np.zeros(n, dtype=np.float32)
    s = Sampler(SamplingParams(top_k=-1, top_p=0.9, seed=0), n, EOG, [])
    seen = {s.sample(flat.copy()).token for _ in range(200)}
    assert len(seen) > 190 and max(seen) > 2048
    peaked = np.full(n, -20.0, dtype=np.float32)
    peaked[[5, 7000, 40000]] = [3.0, 2.9, 2.8]
    s = Sampler(SamplingParams(top_k=-1, top_p=0.5, seed=0), n, EOG, [])
    assert {s.sample(peaked.copy()).token for _ in range(200)} == {5, 7000}
