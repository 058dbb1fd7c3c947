"""The drafter's CPU fast path (vlmspec/fast/drafter.py): bf16 copies of float32 weights are
opt-in (reduced_precision) and never reach a target; a drafter packed that way, chain or tree,
still gives exactly the target's greedy tokens; build_drafter packs a drafter only when the
target's own fast path is on, and never touches the target's modules."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from vlmspec import NoDrafter, Pipeline, Target, TargetConfig
from vlmspec.drafters.eagle import EagleConfig, EagleDrafter
from vlmspec.drafters.registry import build_drafter
from vlmspec.fast import FastConfig, PackedLinear, accelerate_cpu, accelerate_drafter, available_backends, fast_status
from vlmspec.fast import cpu_linear

from conftest import random_image

pytestmark = pytest.mark.skipif(bool(available_backends()["mkldnn"]), reason="no oneDNN linear in this torch build")
FORCED_BF16 = FastConfig(backend="mkldnn-bf16", reduced_precision=True, stock_rows=0, min_params=0,
                         modules=("language_model", "lm_head"))


def test_bf16_path_is_close_keeps_fp32_weights_and_is_opt_in():
    torch.manual_seed(0)
    layer = nn.Linear(96, 200, bias=True)
    reference = layer.weight.detach().clone()
    report = accelerate_cpu(nn.Sequential(layer), FORCED_BF16)
    assert report.replaced == {"0": "1-:mkldnn-bf16"} and type(layer) is PackedLinear
    assert layer.weight.dtype == torch.float32 and torch.equal(layer.weight, reference)  # only the packed copy is bf16
    with torch.inference_mode():
        for rows in (1, 3, 12):
            x = torch.randn(1, rows, 96)
            got, want = layer(x), nn.functional.linear(x, layer.weight, layer.bias)
            assert got.dtype == torch.float32
            assert (got - want).abs().max().item() < 3e-2 * (want.abs().max().item() + 1.0)
    with pytest.raises(ValueError, match="reduced_precision=True"):
        FastConfig(backend="mkldnn-bf16")
    with pytest.raises(ValueError, match="reduced_precision must be a bool"):
        FastConfig(reduced_precision="yes")


@pytest.mark.parametrize("reduced", [False, True])
def test_auto_times_bf16_only_when_allowed(monkeypatch, tmp_path, reduced):
    monkeypatch.setenv("VLMSPEC_HOME", str(tmp_path))
    seen = []

    def fake_tune(weight, bias, packed_paths, config):
        seen.append(tuple(packed_paths))
        return ((cpu_linear._INF, packed_paths[-1]),), {}

    monkeypatch.setattr(cpu_linear, "_tune_shape", fake_tune)
    model = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 32))
    report = accelerate_cpu(model, FastConfig(min_params=0, stock_rows=0, reduced_precision=reduced))
    assert seen == ([("mkldnn", "mkldnn-bf16")] * 2 if reduced else [("mkldnn",)] * 2)
    assert all(k.endswith("-bf16ok") == reduced for k in report.shape_choice)  # separate cached plans
    assert set(fast_status(model).values()) == {"1-:mkldnn-bf16" if reduced else "1-:mkldnn"}


def test_a_cached_bf16_plan_never_applies_without_reduced_precision(monkeypatch):
    layer = nn.Linear(64, 64, bias=False)
    shape = "64x64-float32"
    monkeypatch.setattr(cpu_linear, "_load_plans", lambda config: {shape: [[cpu_linear._INF, "mkldnn-bf16"]]})
    report = accelerate_cpu(nn.Sequential(layer), FastConfig(min_params=0, stock_rows=0))
    assert not report.replaced and "bf16" in report.skipped["0"] and type(layer) is nn.Linear


@pytest.fixture(scope="module")
def target(tiny_llava_path):
    return Target.load(tiny_llava_path, TargetConfig(fast_cpu=False))


def _drafter(target, config: EagleConfig, seed: int) -> EagleDrafter:
    vocab = torch.arange(0, int(target.model.get_output_embeddings().weight.shape[0]), 2)  # a trimmed head
    return EagleDrafter.from_target(target, config, draft_vocab=vocab if seed % 2 else None, seed=seed,
                                    init_layer_from_target=True)


SHAPES = [dict(tree="chain", depth=3), dict(tree="chain", depth=6), dict(tree="dynamic", depth=4, top_k=4, total_tokens=12),
          dict(tree="dynamic", depth=3, top_k=3, total_tokens=8), dict(tree="static", static_paths=((0,), (1,), (0, 0), (1, 0)))]


@pytest.mark.parametrize("index", range(10))
def test_bf16_packed_drafter_is_token_identical_to_greedy(target, index):
    drafter = _drafter(target, EagleConfig(**SHAPES[index % len(SHAPES)]), seed=index)
    report = accelerate_drafter(drafter, FORCED_BF16)
    assert report.enabled and all(plan == "1-:mkldnn-bf16" for plan in report.replaced.values())
    assert any(name.startswith("[1].") for name in report.replaced) == (index % 2 == 1)  # the trimmed head
    assert not any(type(m) is PackedLinear for m in target.model.modules())  # the target is never touched
    drafted, plain = Pipeline(target, drafter), Pipeline(target, NoDrafter())
    image = None if index % 5 == 4 else random_image(100 + index)
    prompt = ("Describe this.", "What is in the picture? Answer in detail.", "abc abc abc")[index % 3]
    max_new_tokens = 12 + 3 * index
    result = drafted.generate(image, prompt, max_new_tokens=max_new_tokens)
    assert result.token_ids == plain.generate(image, prompt, max_new_tokens=max_new_tokens).token_ids
    assert result.metrics.tau >= 1.0


def test_build_drafter_follows_the_targets_fast_path(tiny_llava_path, tmp_path, monkeypatch):
    monkeypatch.setenv("VLMSPEC_HOME", str(tmp_path))
    stock = Target.load(tiny_llava_path, TargetConfig(fast_cpu=False))
    drafter = build_drafter(_drafter(stock, EagleConfig(), seed=1), stock)
    assert getattr(drafter, "fast_cpu_report", None) is None and not fast_status(drafter)  # target stock: drafter too
    fast = Target.load(tiny_llava_path, TargetConfig(fast_cpu=False))
    accelerate_cpu(fast.model, FastConfig(backend="mkldnn", min_params=0))  # the target's fast path on
    target_plans = fast_status(fast.model)
    assert target_plans
    drafter = build_drafter(_drafter(fast, EagleConfig(), seed=1), fast)
    assert drafter.fast_cpu_report.startswith("CPU fast path")  # measured per shape: on or off, said either way
    assert fast_status(fast.model) == target_plans  # the target's own modules are left as they were
    assert not any("bf16" in plan for plan in target_plans.values())
    again = build_drafter(drafter, fast)  # an instance built twice keeps its first report
    assert again.fast_cpu_report == drafter.fast_cpu_report


def test_accelerate_target_refuses_reduced_precision(target):
    from vlmspec.fast import accelerate_target

    with pytest.raises(ValueError, match="drafters only"):
        accelerate_target(target, FastConfig(reduced_precision=True))


def test_an_optional_bf16_path_this_cpu_refuses_is_left_out(monkeypatch, tmp_path):
    monkeypatch.setenv("VLMSPEC_HOME", str(tmp_path))
    real_pack = cpu_linear._pack

    def pack(backend, weight, rows):
        if backend == cpu_linear.REDUCED_PATH:
            raise RuntimeError("no bf16 kernels on this CPU")
        return real_pack(backend, weight, rows)

    monkeypatch.setattr(cpu_linear, "_pack", pack)
    model = nn.Sequential(nn.Linear(256, 512))
    rng_before = torch.random.get_rng_state()
    report = accelerate_cpu(model, FastConfig(stock_rows=0, reduced_precision=True))
    assert not report.fallbacks  # the fp32 packed path is still timed and may be kept
    assert all("bf16" not in plan for plan in report.shape_choice.values())
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # timing inputs come from a local generator


def test_a_rebind_to_an_equal_target_keeps_the_packed_trimmed_head(target):
    drafter = _drafter(target, EagleConfig(), seed=1)
    accelerate_drafter(drafter, FORCED_BF16)
    packed_head = drafter._shared.trimmed
    assert type(packed_head) is PackedLinear
    twin = Target(target.model, target.processor)  # another Target object over the same model
    drafter.check_compatible(twin)
    assert drafter._shared.trimmed is packed_head and drafter.target is twin
