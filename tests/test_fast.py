"""The CPU fast path (vlmspec.fast): packed linears compute the same function, keep the
module's parameters / state_dict / tied weights, fall back cleanly, can be switched off,
and greedy speculative decoding through `vlmspec.Pipeline` gives the same tokens."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import vlmspec
from vlmspec import Pipeline, ScheduleConfig, Target
from vlmspec.fast import FastConfig, PackedLinear, accelerate_cpu, available_backends, fast_status, restore
from vlmspec.fast import cpu_linear

from conftest import random_image

USABLE = [name for name, why in available_backends().items() if not why]
pytestmark = pytest.mark.skipif(not USABLE, reason="no packed linear path in this torch build")

PROMPTS = ["Describe this.", "abc abc abc abc", "What is in the picture? Answer in detail."]


def _tiny_lm(tie: bool = True, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=300, tie_word_embeddings=tie)
    return LlamaForCausalLM(cfg).eval()


# ------------------------------------------------------------------ module level
@pytest.mark.parametrize("backend", USABLE)
@pytest.mark.parametrize("bias", [False, True])
def test_packed_linear_close_for_all_row_counts(backend, bias):
    torch.manual_seed(0)
    layer = nn.Linear(96, 200, bias=bias)
    model = nn.Sequential(layer)
    report = accelerate_cpu(model, FastConfig(backend=backend, min_params=0, stock_rows=0))
    assert report.enabled and report.replaced == {"0": f"1-:{backend}"}
    assert type(layer) is PackedLinear and isinstance(layer, nn.Linear)
    with torch.inference_mode():
        for rows in (1, 2, 3, 8, 17, 40):
            x = torch.randn(1, rows, 96)  # [1, rows, in]
            got = layer(x)
            want = torch.nn.functional.linear(x, layer.weight, layer.bias)
            assert got.shape == want.shape
            assert (got - want).abs().max().item() < 1e-4
    assert restore(model) == 1 and type(layer) is nn.Linear


def test_auto_plans_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("VLMSPEC_HOME", str(tmp_path))
    calls = []
    real_tune = cpu_linear._tune_shape

    def counting_tune(*args, **kwargs):
        calls.append(1)
        return real_tune(*args, **kwargs)

    monkeypatch.setattr(cpu_linear, "_tune_shape", counting_tune)
    config = FastConfig(backend="auto", min_params=0, tune_repeats=1)
    model = _tiny_lm(tie=False)
    report = accelerate_cpu(model, config)
    assert calls and report.shape_choice and not report.fallbacks
    assert all(p.split()[0].endswith(":stock") for p in report.shape_choice.values())  # 1 row: stock_rows=1
    tuned = len(calls)
    assert list((tmp_path / "fast").iterdir())
    restore(model)
    again = accelerate_cpu(model, config)
    assert len(calls) == tuned and again.shape_choice == report.shape_choice  # read from the cache
    ids = torch.randint(0, 300, (1, 6))
    with torch.inference_mode():
        got = model(ids).logits
        restore(model)
        assert (got - model(ids).logits).abs().max().item() < 1e-4


def test_state_dict_tied_weights_and_repack():
    model = _tiny_lm(tie=True)
    keys = list(model.state_dict())
    report = accelerate_cpu(model, FastConfig(backend="mkldnn", min_params=0, stock_rows=0))
    assert "lm_head" in report.replaced
    assert list(model.state_dict()) == keys  # same keys, no packed copies in the state dict
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tie kept
    ids = torch.randint(0, 300, (1, 6))
    with torch.inference_mode():
        before = model(ids).logits
    # load new weights: the packed copies must follow (version / pointer change)
    other = _tiny_lm(tie=True, seed=1)
    model.load_state_dict(other.state_dict())
    with torch.inference_mode():
        after = model(ids).logits
        want = other(ids).logits
    assert (after - want).abs().max().item() < 1e-4
    assert (after - before).abs().max().item() > 1e-2
    # deepcopy repacks too (the MKL packed buffer cannot move)
    clone = copy.deepcopy(model)
    with torch.inference_mode():
        assert (clone(ids).logits - want).abs().max().item() < 1e-4


def test_save_pretrained_roundtrip(tmp_path):
    from transformers import LlamaForCausalLM

    model = _tiny_lm(tie=False)
    accelerate_cpu(model, FastConfig(backend="mkldnn", min_params=0))
    model.save_pretrained(tmp_path)
    loaded = LlamaForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(0, 300, (1, 5))
    with torch.inference_mode():
        assert (loaded(ids).logits - model(ids).logits).abs().max().item() < 1e-4


def test_grad_uses_stock_path():
    model = _tiny_lm()
    accelerate_cpu(model, FastConfig(backend="mkldnn", min_params=0, stock_rows=0))
    model.train()
    loss = model(torch.randint(0, 300, (1, 4)), labels=torch.randint(0, 300, (1, 4))).loss
    loss.backward()
    assert model.model.layers[0].mlp.up_proj.weight.grad is not None


# ------------------------------------------------------------------ switches and fallbacks
def test_off_switch_and_config_validation():
    model = _tiny_lm()
    report = accelerate_cpu(model, FastConfig(enabled=False))
    assert not report.enabled and "disabled" in report.reason
    assert not any(type(m) is PackedLinear for m in model.modules())
    report = accelerate_cpu(model, FastConfig(backend="stock"))
    assert not report.enabled
    with pytest.raises(ValueError):
        FastConfig(backend="fastest")
    with pytest.raises(ValueError):
        FastConfig(modules=("decoder",))
    with pytest.raises(ValueError):
        FastConfig(min_params=-1)
    with pytest.raises(ValueError):
        FastConfig(enabled="yes")


def test_non_cpu_model_is_a_noop():
    model = _tiny_lm().to("meta")
    report = accelerate_cpu(model)
    assert not report.enabled and "meta" in report.reason


def test_module_groups_and_min_params(tiny_llava_path):
    target = Target.load(tiny_llava_path)
    report = accelerate_cpu(target.model, FastConfig(backend="mkldnn", min_params=0, modules=("lm_head",)))
    assert set(report.replaced) == {"lm_head"}
    restore(target.model)
    report = accelerate_cpu(target.model, FastConfig(backend="mkldnn", min_params=10**9))
    assert not report.enabled and report.skipped
    restore(target.model)
    report = accelerate_cpu(target.model, FastConfig(backend="mkldnn", min_params=0))
    assert not any("vision_tower" in name for name in report.replaced)  # vision is opt-in
    assert any("multi_modal_projector" in name for name in report.replaced)


def test_missing_op_reported_and_stock_used(monkeypatch):
    def broken_pack(backend, weight, rows):
        raise RuntimeError(f"simulated: no {backend} op")

    monkeypatch.setattr(cpu_linear, "_pack", broken_pack)
    model = _tiny_lm()
    for backend in ("auto", "mkldnn", "mkl"):
        report = accelerate_cpu(model, FastConfig(backend=backend, min_params=0, tune_cache=False))
        assert not report.enabled and "not usable" in report.reason and "simulated" in report.reason
        assert not any(type(m) is PackedLinear for m in model.modules())


def test_per_layer_fallback_at_pack_time(monkeypatch):
    real_pack = cpu_linear._pack

    def pack_but_not_lm_head(backend, weight, rows):
        if weight.shape[0] == 300:  # the LM head
            raise RuntimeError("simulated refusal")
        return real_pack(backend, weight, rows)

    monkeypatch.setattr(cpu_linear, "_pack", pack_but_not_lm_head)
    model = _tiny_lm(tie=False)
    report = accelerate_cpu(model, FastConfig(backend="mkldnn", min_params=0))
    assert report.enabled and "lm_head" in report.fallbacks and "lm_head" not in report.replaced
    assert type(model.lm_head) is nn.Linear and type(model.model.layers[0].mlp.up_proj) is PackedLinear


def test_runtime_fallback(monkeypatch):
    model = _tiny_lm()
    ids = torch.randint(0, 300, (1, 7))
    with torch.inference_mode():
        want = model(ids).logits
    accelerate_cpu(model, FastConfig(backend="mkldnn", min_params=0, stock_rows=0))

    def broken_run(*args, **kwargs):
        raise RuntimeError("simulated op failure")

    monkeypatch.setattr(cpu_linear, "_run", broken_run)
    with torch.inference_mode():
        got = model(ids).logits
    assert torch.equal(got, want)  # every layer fell back to F.linear: bit-identical
    assert all("simulated" in path for path in fast_status(model).values())


# ------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def stock_and_fast(tiny_llava_path):
    stock = Target.load(tiny_llava_path)
    fast = Target.load(tiny_llava_path)
    # oneDNN for every row count: the most different from stock, so the strictest check
    report = accelerate_cpu(fast.model, FastConfig(backend="mkldnn", min_params=0, stock_rows=0))
    assert report.enabled
    return stock, fast


@pytest.mark.parametrize("backend", USABLE)
def test_logits_close(tiny_llava_path, stock_and_fast, backend):
    stock = stock_and_fast[0]
    fast = Target.load(tiny_llava_path)
    accelerate_cpu(fast.model, FastConfig(backend=backend, min_params=0, stock_rows=0))
    inputs = stock.prepare([random_image(3)], "Describe this.")
    with torch.inference_mode():
        a = stock.model(**inputs).logits  # [1, seq, vocab]
        b = fast.model(**inputs).logits
    assert (a - b).abs().max().item() < 1e-3
    assert torch.equal(a.argmax(-1), b.argmax(-1))


@pytest.mark.parametrize("draft_length", [1, 3, 8])
@pytest.mark.parametrize("prompt_index", range(len(PROMPTS)))
def test_greedy_identical_through_pipeline(stock_and_fast, draft_length, prompt_index):
    stock, fast = stock_and_fast
    image = random_image(prompt_index + 10 * draft_length)
    prompt = PROMPTS[prompt_index]
    schedule = ScheduleConfig(kind="fixed", draft_length=draft_length)
    outs = []
    for target in (stock, fast):
        drafter = vlmspec.build_drafter("prompt-lookup", target)
        pipe = Pipeline(target, drafter, schedule)
        outs.append(pipe.generate(image, prompt, max_new_tokens=24).token_ids)
    # plain greedy decoding of the accelerated target, for the lossless property itself
    inputs = fast.prepare([image], prompt)
    with torch.inference_mode():
        ref = fast.model.generate(**inputs, max_new_tokens=24, do_sample=False, pad_token_id=0,
                                  eos_token_id=fast.eos_token_ids)
    reference = ref[0, inputs["input_ids"].shape[1]:].tolist()
    assert outs[0] == outs[1] == reference


def test_model_drafter_accelerated_too(tiny_llava_path, stock_and_fast):
    stock, fast = stock_and_fast
    outs = []
    for target, accelerate in ((stock, False), (fast, True)):
        drafter = vlmspec.ModelDrafter.from_pretrained(tiny_llava_path)
        if accelerate:
            accelerate_cpu(drafter.model, FastConfig(backend="mkldnn", min_params=0))
        pipe = Pipeline(target, drafter, ScheduleConfig(kind="fixed", draft_length=4))
        outs.append(pipe.generate(random_image(7), "What is in the picture?", max_new_tokens=20).token_ids)
    assert outs[0] == outs[1]


# ------------------------------------------------------------------ measured on / off decision
def test_should_keep_rule():
    from vlmspec.fast import DecideConfig, should_keep

    stock = {1: 0.030, 2: 0.050, 4: 0.060, 8: 0.080}
    assert should_keep(stock, {1: 0.030, 2: 0.031, 4: 0.032, 8: 0.035})[0]  # flat multi-token cost: keep
    assert not should_keep(stock, dict(stock))[0]  # no gain: off
    assert not should_keep(stock, {1: 0.040, 2: 0.031, 4: 0.032, 8: 0.035})[0]  # plain decoding dearer: off
    with pytest.raises(ValueError):
        DecideConfig(token_counts=(2, 4))


def test_accelerate_target_decides_and_caches(tiny_llava_path, tmp_path, monkeypatch):
    from vlmspec.core import autotune
    from vlmspec.fast import DecideConfig, accelerate_target

    monkeypatch.setenv("VLMSPEC_HOME", str(tmp_path))
    measured = []
    real = autotune.measure_verify_costs

    def counting(*args, **kwargs):
        measured.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(autotune, "measure_verify_costs", counting)
    target = Target.load(tiny_llava_path)
    decide = DecideConfig(token_counts=(1, 4), context_length=16, repeats=1)
    config = FastConfig(backend="mkldnn", min_params=0, stock_rows=0)
    report = accelerate_target(target, config, decide)
    assert set(report.verify_ms) == {"stock", "fast"} and len(measured) == 2
    assert report.kept == any(type(m) is PackedLinear for m in target.model.modules())
    again = accelerate_target(target, config, decide)
    assert len(measured) == 2 and again.kept == report.kept  # both tables read back from the cache
    restore(target.model)
    off = accelerate_target(target, FastConfig(enabled=False), decide)
    assert not off.kept and "disabled" in off.reason


def test_dtype_change_after_packing_uses_stock():
    model = _tiny_lm()
    accelerate_cpu(model, FastConfig(backend="mkldnn", min_params=0, stock_rows=0))
    model = model.to(torch.bfloat16)
    ids = torch.randint(0, 300, (1, 5))
    with torch.inference_mode():
        got = model(ids).logits
        restore(model)
        want = model(ids).logits
    assert torch.equal(got, want)


@pytest.mark.parametrize("backend", USABLE)
def test_pack_now_packs_at_load_not_on_the_first_forward(backend):
    from vlmspec.fast.cpu_linear import pack_now

    model = _tiny_lm()
    accelerate_cpu(model, FastConfig(backend=backend, min_params=0, stock_rows=0))
    packed = [m for m in model.modules() if type(m) is PackedLinear]
    for m in packed:  # as after a copy or a reload: unpacked until the first forward
        m._vlmspec_fast.packed = None
    assert pack_now(model) == len(packed)
    assert all(m._vlmspec_fast.packed is not None for m in packed)
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.inference_mode():
        before = [m._vlmspec_fast.packed for m in packed]
        got = model(ids).logits
        assert all(m._vlmspec_fast.packed is b for m, b in zip(packed, before))  # the forward reused them
    restore(model)
    with torch.inference_mode():
        assert (got - model(ids).logits).abs().max().item() < 1e-4


def test_measuring_verify_costs_says_so_once(tiny_llava_path, tmp_path):
    from vlmspec.core.autotune import load_or_measure
    from vlmspec.errors import OneTimeSetupWarning

    target = Target.load(tiny_llava_path)
    with pytest.warns(OneTimeSetupWarning, match="once: cached in"):
        load_or_measure(target, (1, 2), home=tmp_path, repeats=1, context_length=8)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", OneTimeSetupWarning)
        load_or_measure(target, (1, 2), home=tmp_path, repeats=1, context_length=8)  # cached: silent


def test_a_bf16_model_is_timed_and_packed_in_bf16_and_fp32_is_never_cast():
    model = _tiny_lm().to(torch.bfloat16)
    report = accelerate_cpu(model, FastConfig(backend="auto", min_params=0, stock_rows=0, tune_cache=False))
    assert report.shape_choice and all(shape.endswith("-bfloat16") for shape in report.shape_choice)
    assert not any("not in FastConfig.dtypes" in why for why in report.skipped.values())
    ids = torch.randint(0, 300, (1, 6))
    with torch.inference_mode():
        got = model(ids).logits.float()
        restore(model)
        want = model(ids).logits.float()
    assert torch.allclose(got, want, atol=0.1, rtol=0.05)  # bf16 rounding, not another function
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    fp32 = _tiny_lm()
    accelerate_cpu(fp32, FastConfig(backend="mkldnn", min_params=0, stock_rows=0))
    assert all(p.dtype == torch.float32 for p in fp32.parameters())
    only_fp32 = accelerate_cpu(_tiny_lm().to(torch.bfloat16), FastConfig(dtypes=(torch.float32,), min_params=0))
    assert not only_fp32.replaced and any("not in FastConfig.dtypes" in why for why in only_fp32.skipped.values())
