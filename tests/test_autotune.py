"""Auto-tuning (vlmspec.core.autotune): draft-shape choices on made-up cost tables, and the
per-machine verify-cost cache (atomic, reused, keyed by thread count)."""

from __future__ import annotations

import json
import os

import pytest
import torch
from vlmspec.core import autotune
from vlmspec.core.autotune import (
    TreeGrid,
    choose_chain_length,
    choose_tree,
    expected_chain_tokens,
    expected_tree_tokens,
    interpolate_cost,
    load_or_measure,
    measure_verify_costs,
    per_position_acceptance,
)
from vlmspec.errors import InputError

COUNTS = (1, 2, 4, 8, 16)
FLAT = {n: 0.100 for n in COUNTS}  # verification as cheap for 16 tokens as for 1
LINEAR = {n: 0.100 * n for n in COUNTS}  # every token costs a full forward


# ------------------------------------------------------------------ chains
def test_flat_cost_high_acceptance_drafts_long():
    assert choose_chain_length(FLAT, draft_cost_per_token=0.001, acceptance=0.9) == 15


def test_linear_cost_low_acceptance_drafts_short():
    assert choose_chain_length(LINEAR, draft_cost_per_token=0.01, acceptance=0.3) == 0
    assert choose_chain_length(LINEAR, draft_cost_per_token=0.01, acceptance=0.3, min_length=1) == 1


def test_chain_length_grows_with_acceptance_and_shrinks_with_draft_cost():
    mild = {1: 0.10, 2: 0.11, 4: 0.13, 8: 0.18, 16: 0.30}
    lengths = [choose_chain_length(mild, 0.005, a) for a in (0.3, 0.6, 0.8, 0.95)]
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1]
    assert choose_chain_length(mild, 0.05, 0.8) <= choose_chain_length(mild, 0.001, 0.8)


def test_per_position_acceptance_used():
    # first position almost always accepted, later ones almost never: draft exactly one
    assert choose_chain_length(FLAT, 0.01, [0.99, 0.01]) == 1
    assert expected_chain_tokens([1.0, 0.5], 3) == pytest.approx(1 + 1 + 0.5 + 0.25)
    assert expected_chain_tokens(0.5, 4) == pytest.approx((1 - 0.5**5) / 0.5)


def test_per_position_acceptance_from_steps():
    rates = per_position_acceptance([(3, 3)] * 20 + [(3, 0)] * 20, strength=0.0)
    assert rates[0] == pytest.approx(0.5) and rates[1] == pytest.approx(1.0)


def test_interpolation():
    costs = {1: 1.0, 4: 4.0, 8: 6.0}
    assert interpolate_cost(costs, 2) == pytest.approx(2.0)
    assert interpolate_cost(costs, 6) == pytest.approx(5.0)
    assert interpolate_cost(costs, 12) == pytest.approx(8.0)  # slope of the last two points
    with pytest.raises(InputError):
        choose_chain_length({}, 0.0, 0.5)
    with pytest.raises(InputError):
        choose_chain_length(FLAT, 0.0, 1.5)


# ------------------------------------------------------------------ trees
def test_tree_top1_is_a_chain():
    tokens, nodes = expected_tree_tokens([0.6], total_tokens=5, depth=5, top_k=1)
    assert nodes == 5 and tokens == pytest.approx(expected_chain_tokens(0.6, 5))


def test_tree_flat_cost_high_acceptance_goes_big():
    choice = choose_tree(FLAT, 0.001, [0.8, 0.7, 0.7, 0.6], TreeGrid())
    assert choice.total_tokens >= 32 and choice.depth >= 5
    assert choice.expected_tokens > 3


def test_tree_linear_cost_low_acceptance_stays_small():
    choice = choose_tree(LINEAR, 0.01, [0.3], TreeGrid())
    assert choice.nodes <= 2 and choice.depth <= 2


def test_tree_grid_validated():
    with pytest.raises(InputError):
        TreeGrid(top_k=(0,))
    grid = TreeGrid(total_tokens=(8,), depth=(3,), top_k=(2,))
    choice = choose_tree(FLAT, 0.0, [0.5], grid)
    assert (choice.total_tokens, choice.depth, choice.top_k) == (8, 3, 2)


# ------------------------------------------------------------------ measuring + cache
class FakeTarget:
    """A verify callable whose cost is 1 + n/8 ticks of a fake clock."""

    def __init__(self):
        self.calls = 0
        self.now = 0.0

    def __call__(self, n: int) -> None:
        self.calls += 1
        self.now += 1.0 + n / 8

    def clock(self) -> float:
        return self.now


def test_measure_is_median_of_repeats():
    fake = FakeTarget()
    costs = measure_verify_costs(fake, (1, 8), repeats=3, warmup=1, timer=fake.clock)
    assert costs == {1: pytest.approx(1.125), 8: pytest.approx(2.0)}
    assert fake.calls == 2 * (3 + 1)


def test_cache_written_atomically_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("VLMSPEC_HOME", str(tmp_path))
    fake = FakeTarget()
    first = load_or_measure(fake, COUNTS, fingerprint="fake-h1", repeats=2, timer=fake.clock)
    calls = fake.calls
    assert calls > 0
    files = list((tmp_path / "autotune").iterdir())
    assert len(files) == 1 and files[0].suffix == ".json"  # no temp files left behind
    payload = json.loads(files[0].read_text())
    assert payload["key"]["model"] == "fake-h1" and payload["key"]["threads"] == torch.get_num_threads()
    second = load_or_measure(fake, COUNTS, fingerprint="fake-h1", repeats=2, timer=fake.clock)
    assert second == first and fake.calls == calls  # read back, not re-measured
    third = load_or_measure(fake, (1, 2, 32), fingerprint="fake-h1", repeats=2, timer=fake.clock)
    assert set(third) == {1, 2, 32} and fake.calls == calls + 2 + 1  # only 32 measured (2 repeats + 1 warm-up)
    load_or_measure(fake, COUNTS, fingerprint="fake-h1", repeats=2, timer=fake.clock, refresh=True)
    assert fake.calls > calls + 4


def test_cache_key_changes_with_threads_and_model(tmp_path):
    base = autotune.cache_key("m", context_length=256, threads=2)
    assert autotune.cache_path(base, tmp_path) != autotune.cache_path(
        autotune.cache_key("m", context_length=256, threads=4), tmp_path)
    assert autotune.cache_path(base, tmp_path) != autotune.cache_path(
        autotune.cache_key("other", context_length=256, threads=2), tmp_path)
    assert autotune.cache_path(base, tmp_path) != autotune.cache_path(
        autotune.cache_key("m", context_length=256, threads=2, fast_cpu=True), tmp_path)


def test_thread_count_change_remeasures(tmp_path, monkeypatch):
    monkeypatch.setenv("VLMSPEC_HOME", str(tmp_path))
    fake = FakeTarget()
    load_or_measure(fake, (1, 2), fingerprint="fake", repeats=1, warmup=0, timer=fake.clock)
    calls = fake.calls
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1 if old != 1 else 2)
        load_or_measure(fake, (1, 2), fingerprint="fake", repeats=1, warmup=0, timer=fake.clock)
    finally:
        torch.set_num_threads(old)
    assert fake.calls == 2 * calls
    assert len(list((tmp_path / "autotune").iterdir())) == 2


def test_corrupt_cache_is_remeasured(tmp_path, monkeypatch):
    monkeypatch.setenv("VLMSPEC_HOME", str(tmp_path))
    fake = FakeTarget()
    load_or_measure(fake, (1,), fingerprint="fake", repeats=1, warmup=0, timer=fake.clock)
    (path,) = (tmp_path / "autotune").iterdir()
    path.write_text("{not json")
    load_or_measure(fake, (1,), fingerprint="fake", repeats=1, warmup=0, timer=fake.clock)
    assert fake.calls == 2 and json.loads(path.read_text())["costs"]


def test_measure_on_a_real_target(tiny_llava_path, tmp_path):
    from vlmspec import Target

    target = Target.load(tiny_llava_path)
    costs = load_or_measure(target, (1, 4), context_length=32, repeats=2, home=tmp_path)
    assert set(costs) == {1, 4} and all(s > 0 for s in costs.values())
    (path,) = (tmp_path / "autotune").iterdir()
    key = json.loads(path.read_text())["key"]
    assert key["model"].startswith("llava-h64-l2-") and key["fast_cpu"] is False
    assert os.path.getsize(path) > 0


def test_implausible_costs_are_remeasured_and_never_cached(tmp_path, monkeypatch):
    """A load spike (8 tokens measured 3x cheaper than 2) is measured again; still implausible:
    used for the run, warned about, not written to the cache."""
    import vlmspec.core.autotune as autotune
    from vlmspec.errors import OneTimeSetupWarning

    tables = [{1: 0.01, 2: 0.09, 8: 0.03}, {1: 0.01, 2: 0.012, 8: 0.02}]
    calls = []
    monkeypatch.setattr(autotune, "measure_verify_costs",
                        lambda target, counts, **kw: calls.append(1) or dict(tables[min(len(calls) - 1, 1)]))
    got = autotune.load_or_measure(object(), (1, 2, 8), fingerprint="fp", fast_cpu=False, home=tmp_path)
    assert len(calls) == 2 and got == tables[1]  # the second, plausible table is kept and cached
    assert list(tmp_path.rglob("verify-*.json"))
    busy = [{1: 0.01, 2: 0.09, 8: 0.03}]
    monkeypatch.setattr(autotune, "measure_verify_costs", lambda target, counts, **kw: dict(busy[0]))
    with pytest.warns(OneTimeSetupWarning, match="busy machine"):
        got = autotune.load_or_measure(object(), (1, 2, 8), fingerprint="other", fast_cpu=False, home=tmp_path / "b")
    assert got == busy[0] and not list((tmp_path / "b").rglob("verify-*.json"))
    assert autotune.plausible_costs({1: 1.0, 2: 1.1, 4: 1.5}) and not autotune.plausible_costs({1: 1.0, 4: 0.4})
