"""Unit tests of the speculative core pieces: verification, warping, schedules, metrics, stopping, lookup."""

from __future__ import annotations

import pytest
import torch

from vlmspec import InputError, PromptLookupDrafter, SamplingParams, ScheduleConfig
from vlmspec.core.metrics import MetricsRecorder
from vlmspec.core.schedule import AdaptiveLength, CostAwareLength
from vlmspec.core.sampling import warp_probs
from vlmspec.core.stopping import StopCriteria, StopTracker
from vlmspec.core.verify import verify_greedy, verify_sampling
from vlmspec.drafters.prompt_lookup import PromptLookupConfig


def one_hot_logits(choices: list[int], vocab: int = 6) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(choices), vocab).float() * 5.0  # [n, vocab]


# ------------------------------------------------------------------ greedy verification
@pytest.mark.parametrize(
    "draft,target_choice,accepted,next_token",
    [
        ([1, 2, 3], [1, 2, 3, 4], 3, 4),  # all accepted + bonus
        ([1, 2, 3], [1, 5, 3, 4], 1, 5),  # mismatch at position 1 -> correction
        ([1, 2, 3], [0, 2, 3, 4], 0, 0),  # first token rejected
        ([], [2], 0, 2),  # no draft: plain decoding
    ],
)
def test_verify_greedy(draft, target_choice, accepted, next_token):
    result = verify_greedy(torch.tensor(draft, dtype=torch.long), one_hot_logits(target_choice))
    assert (result.num_accepted, result.next_token) == (accepted, next_token)


# ------------------------------------------------------------------ sampling verification
def test_sampling_accepts_when_draft_equals_target():
    p = torch.tensor([[0.2, 0.8], [0.5, 0.5]])
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        result = verify_sampling(torch.tensor([1]), p[:1].clone(), p, gen)
        assert result.num_accepted == 1


def test_sampling_never_accepts_tokens_the_target_forbids():
    p = torch.tensor([[1.0, 0.0, 0.0], [0.3, 0.3, 0.4]])
    q = torch.tensor([[0.0, 1.0, 0.0]])
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        result = verify_sampling(torch.tensor([1]), q, p, gen)
        assert (result.num_accepted, result.next_token) == (0, 0)


def test_sampling_residual_excludes_point_mass_token():
    p = torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]])
    gen = torch.Generator().manual_seed(1)
    outcomes = [verify_sampling(torch.tensor([0]), None, p, gen) for _ in range(200)]
    rejected = [o.next_token for o in outcomes if o.num_accepted == 0]
    assert rejected and set(rejected) == {1}
    assert 60 < sum(o.num_accepted for o in outcomes) < 140


# ------------------------------------------------------------------ warping
def test_warp_top_k_and_top_p():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    top2 = warp_probs(logits, SamplingParams(temperature=1.0, top_k=2))
    assert torch.allclose(top2, torch.tensor([0.625, 0.375, 0.0, 0.0]))
    top_p = warp_probs(logits, SamplingParams(temperature=1.0, top_p=0.7))  # 0.5 + 0.3 reaches 0.7
    assert torch.allclose(top_p, torch.tensor([0.625, 0.375, 0.0, 0.0]))
    tiny_p = warp_probs(logits, SamplingParams(temperature=1.0, top_p=0.01))  # always keeps the best token
    assert torch.allclose(tiny_p, torch.tensor([1.0, 0.0, 0.0, 0.0]))
    greedy = warp_probs(logits, SamplingParams())
    assert greedy.tolist() == [1.0, 0.0, 0.0, 0.0]


def test_warp_matches_transformers_logits_processors():
    from transformers import TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper

    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    params = SamplingParams(temperature=0.7, top_k=20, top_p=0.8)
    reference = TopPLogitsWarper(0.8)(None, TopKLogitsWarper(20)(None, TemperatureLogitsWarper(0.7)(None, logits)))
    assert torch.allclose(warp_probs(logits, params), reference.softmax(-1), atol=1e-6)


# ------------------------------------------------------------------ schedules
def test_schedule_config_parsing_and_validation():
    assert ScheduleConfig.parse(3).build().next_length() == 3
    assert ScheduleConfig.parse("7").draft_length == 7
    assert ScheduleConfig.parse("adaptive").kind == "adaptive"
    with pytest.raises(InputError, match="draft schedule must be one of"):
        ScheduleConfig.parse("sometimes")
    with pytest.raises(InputError, match="draft_length"):
        ScheduleConfig(draft_length=-1)


def test_adaptive_grows_on_full_acceptance_and_shrinks_on_early_rejection():
    schedule = AdaptiveLength(start=4, low=1, high=6)
    schedule.observe(4, 4, 0.0, 0.0)
    schedule.observe(5, 5, 0.0, 0.0)
    schedule.observe(6, 6, 0.0, 0.0)
    assert schedule.next_length() == 6  # capped at high
    schedule.observe(6, 0, 0.0, 0.0)
    schedule.observe(5, 1, 0.0, 0.0)
    assert schedule.next_length() == 4
    schedule.observe(4, 3, 0.0, 0.0)  # late rejection: keep the length
    assert schedule.next_length() == 4


def test_cost_aware_prefers_long_drafts_when_verify_is_flat_and_acceptance_high():
    schedule = CostAwareLength(start=2, low=1, high=10)
    for k in (2, 3, 4):
        schedule.observe(k, k, 0.001 * k, 0.050)  # cheap drafts, verify cost flat in tokens
    assert schedule.next_length() >= 8


def test_cost_aware_prefers_short_drafts_when_verify_cost_grows_and_acceptance_low():
    schedule = CostAwareLength(start=4, low=1, high=10)
    for _ in range(10):
        schedule.observe(4, 0, 0.02, 0.050 * 5)  # verify cost linear in tokens, nothing accepted
        schedule.observe(1, 0, 0.005, 0.050 * 2)
    assert schedule.next_length() <= 2


# ------------------------------------------------------------------ metrics
def test_tau_counts_the_prefill_and_the_bonus():
    recorder = MetricsRecorder()
    recorder.prefill_done(0.01)  # 1 token from the prefill
    recorder.step(drafted=4, accepted=4, draft_seconds=0.0, verify_seconds=0.0)  # 5 tokens
    recorder.step(drafted=4, accepted=1, draft_seconds=0.0, verify_seconds=0.0)  # 2 tokens
    recorder.step(drafted=2, accepted=0, draft_seconds=0.0, verify_seconds=0.0)  # 1 token
    m = recorder.finish(new_tokens=9)
    assert m.target_forwards == 4 and m.tau == pytest.approx(9 / 4)
    assert m.acceptance_per_position == [2 / 3, 1 / 3, 1 / 2, 1 / 2]
    assert m.acceptance_rate == pytest.approx(5 / 10)
    assert m.mean_draft_length == pytest.approx(10 / 3)


# ------------------------------------------------------------------ stopping
def test_stop_tracker_cuts_at_eos_and_budget():
    tracker = StopTracker(StopCriteria(max_new_tokens=10, eos_token_ids=frozenset({9})))
    assert tracker.add([1, 2, 9, 4]) == [1, 2, 9] and tracker.finish_reason == "eos"
    tracker = StopTracker(StopCriteria(max_new_tokens=3))
    assert tracker.add([1, 2]) == [1, 2] and not tracker.done
    assert tracker.add([3, 4, 5]) == [3] and tracker.finish_reason == "length"


def test_stop_tracker_stop_strings():
    decode = lambda ids: "".join(chr(96 + i) for i in ids)  # 1 -> 'a', 2 -> 'b', ...
    tracker = StopTracker(StopCriteria(max_new_tokens=10, stop_strings=("cd",), decode=decode))
    assert tracker.add([1, 2, 3, 4, 5]) == [1, 2, 3, 4] and tracker.finish_reason == "stop_string"


# ------------------------------------------------------------------ prompt lookup
def test_prompt_lookup_proposes_the_continuation_of_the_latest_match():
    drafter = PromptLookupDrafter(PromptLookupConfig(max_ngram=2))
    committed = torch.tensor([5, 6, 7, 8, 5, 6, 9, 1, 5, 6])
    assert drafter.propose(committed, 3).tokens.tolist() == [9, 1, 5]  # latest earlier "5 6" is followed by 9 1 5
    assert drafter.propose(committed, 0).tokens.numel() == 0
    assert drafter.propose(torch.tensor([1, 2, 3]), 4).tokens.numel() == 0  # no earlier occurrence
    assert drafter.propose(torch.tensor([4, 4]), 4).tokens.tolist() == [4]


def test_prompt_lookup_config_validation():
    with pytest.raises(InputError, match="min_ngram <= max_ngram"):
        PromptLookupConfig(max_ngram=1, min_ngram=2)


def test_cost_aware_schedule_starts_from_measured_verify_costs():
    flat = ScheduleConfig(kind="cost-aware", draft_length=2, max_length=8,
                          verify_costs=tuple((n, 0.05) for n in range(1, 10))).build()
    flat.observe(2, 2, 0.0001, 0.05)  # cheap drafts, everything accepted so far
    assert flat.next_length() == 8
    steep = ScheduleConfig(kind="cost-aware", draft_length=2, max_length=8,
                           verify_costs=tuple((n, 0.05 * n) for n in range(1, 10))).build()
    steep.observe(2, 0, 0.01, 0.15)
    assert steep.next_length() == 1


def test_cache_kwargs_names_the_keyword_the_forward_takes():
    from vlmspec.core.cache import cache_kwargs

    class NewStyle(torch.nn.Module):  # transformers 5.24+: `cache`
        def forward(self, input_ids, cache=None, use_cache=False):
            return cache

    class OldStyle(torch.nn.Module):  # earlier 5.x: `past_key_values`
        def forward(self, input_ids, past_key_values=None, use_cache=False):
            return past_key_values

    marker = object()
    assert cache_kwargs(NewStyle(), marker) == {"cache": marker}
    assert cache_kwargs(OldStyle(), marker) == {"past_key_values": marker}
    assert OldStyle()(None, **cache_kwargs(OldStyle(), marker)) is marker
    assert NewStyle()(None, **cache_kwargs(NewStyle(), marker)) is marker
