"""Speculative sampling must leave the target's distribution unchanged.

The joint distribution of the first three generated tokens (top-k 3, so at most 27
outcomes) is computed exactly from the target and compared by a chi-square test with the
empirical distribution of thousands of fixed-seed speculative generations. The first
token comes from the prefill; tokens 2 and 3 come out of a verify step (accepted draft,
residual resample or bonus). The drafter is a noisy copy of the target, so drafts are accepted
sometimes and rejected often. The same test run with a deliberately wrong residual (resample from p instead
of norm(max(0, p - q))) must fail: that shows the test can detect the classic bug.
"""

from __future__ import annotations

import collections
import copy
import itertools

import pytest
import torch

import vlmspec.core.verify as verify_module
from vlmspec import ModelDrafter, Pipeline, PromptLookupDrafter, SamplingParams, ScheduleConfig, Target
from vlmspec.core.sampling import warp_probs
from vlmspec.core.verify import Acceptance, sample_token

from conftest import random_image

PROMPT = "Describe this."
SAMPLING = dict(temperature=1.3, top_k=3)


def chi_square_p_value(observed: dict, expected_probs: dict, draws: int) -> float:
    """Pearson chi-square goodness of fit; cells with expected count < 5 are pooled."""
    cells = sorted(expected_probs, key=lambda c: expected_probs[c])
    pooled_obs, pooled_exp, obs_acc, exp_acc = [], [], 0.0, 0.0
    for cell in cells:
        obs_acc += observed.get(cell, 0)
        exp_acc += expected_probs[cell] * draws
        if exp_acc >= 5:
            pooled_obs.append(obs_acc)
            pooled_exp.append(exp_acc)
            obs_acc = exp_acc = 0.0
    if exp_acc:
        pooled_obs[-1] += obs_acc
        pooled_exp[-1] += exp_acc
    outside = sum(v for c, v in observed.items() if c not in expected_probs)
    assert outside == 0, f"{outside} draws fell outside the target's support"
    stat = sum((o - e) ** 2 / e for o, e in zip(pooled_obs, pooled_exp))
    dof = len(pooled_obs) - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64),
                                         torch.tensor(stat / 2, dtype=torch.float64)))


def exact_joint(target: Target, inputs: dict, length: int) -> dict:
    """P(t_1..t_length) under the warped target distribution, by enumerating the top-k tree."""
    params = SamplingParams(**SAMPLING)
    state, first_logits = target.prefill(inputs)
    joint = {}
    frontier = [((), 1.0)]
    for _ in range(length):
        next_frontier = []
        for prefix, prob in frontier:
            if prefix:  # score the prefix on a private copy of the prompt cache
                branch = copy.copy(state)
                branch.cache = copy.deepcopy(state.cache)
                logits = target.forward(branch, inputs["input_ids"].new_tensor([prefix])).logits[0, -1]
            else:
                logits = first_logits[0]
            probs = warp_probs(logits, params)
            for token in probs.nonzero().flatten().tolist():
                next_frontier.append((prefix + (token,), prob * float(probs[token])))
        frontier = next_frontier
    for prefix, prob in frontier:
        joint[prefix] = prob
    return joint


def sample_joint(pipe: Pipeline, image, draws: int, length: int) -> tuple[collections.Counter, float]:
    counts, rejected_steps, steps = collections.Counter(), 0, 0
    for seed in range(draws):
        result = pipe.generate(image, PROMPT, max_new_tokens=length, seed=seed, **SAMPLING)
        counts[tuple(result.token_ids)] += 1
        m = result.metrics
        steps += m.target_forwards - 1
        rejected_steps += round((1 - m.acceptance_rate) * (m.target_forwards - 1)) if m.mean_draft_length else 0
    return counts, rejected_steps / max(steps, 1)


def distribution_setup(target: Target, length: int = 3):
    """(copy of `target` that never stops early, image, inputs, exact joint of the first `length` tokens)."""
    quiet = copy.copy(target)
    quiet.eos_token_ids = []  # every draw exactly `length` tokens long
    image = random_image(42)
    inputs = quiet.prepare([image], PROMPT)
    return quiet, image, inputs, exact_joint(quiet, inputs, length)


@pytest.fixture(scope="module")
def setup(tiny_llava_path):
    target, image, _, expected = distribution_setup(Target.load(tiny_llava_path))
    copy_of_target = ModelDrafter.from_pretrained(tiny_llava_path)
    return target, image, expected, _NoisyDrafter(copy_of_target, scale=1.5)


def test_speculative_sampling_matches_target_distribution(setup):
    target, image, expected, bad_drafter = setup
    pipe = Pipeline(target, bad_drafter, ScheduleConfig.parse(2))
    draws = 2000
    counts, rejection_share = sample_joint(pipe, image, draws, 3)
    assert rejection_share > 0.2, "the drafter must be bad enough for rejections to matter"
    assert chi_square_p_value(counts, expected, draws) > 1e-3


def test_point_mass_drafts_keep_the_distribution(setup):
    """Prompt lookup proposes deterministically (q is a point mass): still exact."""
    target, image, expected, _ = setup
    support = sorted({token for cell in expected for token in cell})
    pipe = Pipeline(target, _GuessDrafter(support), ScheduleConfig.parse(2))
    draws = 2000
    counts, rejection_share = sample_joint(pipe, image, draws, 3)
    assert rejection_share > 0.2
    assert chi_square_p_value(counts, expected, draws) > 1e-3


def test_the_chi_square_test_catches_a_wrong_residual(setup, monkeypatch):
    """Power check: resampling from p instead of norm(max(0, p - q)) after a rejection must be detected."""

    def wrong_verify_sampling(draft_tokens, draft_probs, target_probs, generator, parents=None):
        for i, token in enumerate(draft_tokens.tolist()):
            q = float(draft_probs[i, token])
            if float(torch.rand((), generator=generator)) * q < float(target_probs[i, token]):
                continue
            return Acceptance(list(range(i)), sample_token(target_probs[i], generator))  # the bug
        return Acceptance(list(range(len(draft_tokens))), sample_token(target_probs[-1], generator))

    monkeypatch.setattr(verify_module, "verify_sampling", wrong_verify_sampling)
    target, image, expected, bad_drafter = setup
    pipe = Pipeline(target, bad_drafter, ScheduleConfig.parse(2))
    draws = 2000
    counts, rejection_share = sample_joint(pipe, image, draws, 3)
    assert rejection_share > 0.2
    assert chi_square_p_value(counts, expected, draws) < 1e-6


class _NoisyDrafter(ModelDrafter):
    """A copy of the target whose logits get fixed per-token noise: q overlaps p but differs from it,
    so drafts are accepted sometimes and rejected often (a drafter whose support were disjoint
    from p would make the residual equal p and hide residual bugs)."""

    def __init__(self, copy: ModelDrafter, scale: float):
        super().__init__(copy.model, copy.tokenizer)
        generator = torch.Generator().manual_seed(7)
        self.noise = torch.randn(copy.model.config.get_text_config().vocab_size, generator=generator) * scale

    def _fit_vocab(self, logits):
        return super()._fit_vocab(logits + self.noise)


class _GuessDrafter(PromptLookupDrafter):
    """Proposes tokens picked at random from `candidates` but declares them as point masses.

    Verification is exact for any point-mass proposal, however it was chosen, so the
    output distribution must still be the target's; guesses land in and out of the
    target's top-k, so both acceptances and rejections happen.
    """

    def __init__(self, candidates):
        super().__init__()
        self.candidates = torch.tensor(candidates)
        self.rng = torch.Generator().manual_seed(1234)

    def propose(self, committed, k):
        from vlmspec import Draft

        picks = torch.randint(len(self.candidates) + 2, (k,), generator=self.rng)
        tokens = torch.where(picks < len(self.candidates), self.candidates[picks.clamp_max(len(self.candidates) - 1)], 40)
        return Draft(tokens.to(committed.device))


def test_chi_square_helper_on_known_distributions():
    expected = {(a,): p for a, p in zip(range(4), [0.1, 0.2, 0.3, 0.4])}
    fair = {(0,): 100, (1,): 200, (2,): 300, (3,): 400}
    skewed = {(0,): 250, (1,): 250, (2,): 250, (3,): 250}
    assert chi_square_p_value(fair, expected, 1000) > 0.99
    assert chi_square_p_value(skewed, expected, 1000) < 1e-10


def test_joint_enumeration_sums_to_one(setup):
    _, _, expected, _ = setup
    assert sum(expected.values()) == pytest.approx(1.0, abs=1e-5)
    assert len(expected) == 27 and all(len(cell) == 3 for cell in itertools.islice(expected, 3))
