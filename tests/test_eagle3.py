"""EAGLE-3-style fused target features (EagleConfig.feature_layers) for every drafter kind.

The drafter reads several target layers' states, fused by fc(n * H -> H): greedy output stays
token for token the target's (chains and trees, every kind, single and batched decoding), the
inference path equals the teacher-forced training path, save / load keeps the layers, and a
wrong layer choice is refused with a clear error.
"""

from __future__ import annotations

import pytest
import torch

from vlmspec import InputError, Pipeline, ScheduleConfig, Target
from vlmspec.core.cache import cache_length
from vlmspec.core.drafter import DraftContext, StepFeedback
from vlmspec.core.features import eagle3_layers, select_features
from vlmspec.core.sampling import SamplingParams
from vlmspec.drafters import EagleConfig, EagleDrafter
from vlmspec.drafters.msd import MSDConfig, MSDDrafter
from vlmspec.drafters.specvlm import SpecVLMConfig, SpecVLMDrafter
from vlmspec.drafters.vispec import ViSpecConfig, ViSpecDrafter

from conftest import random_image
from test_eagle import reference_tokens

KINDS = {
    "eagle": (EagleDrafter, EagleConfig),
    "vispec": (ViSpecDrafter, ViSpecConfig),
    "msd": (MSDDrafter, MSDConfig),
    "specvlm": (SpecVLMDrafter, SpecVLMConfig),
}
LAYERS = (0, 1, 2)  # the tiny targets have 2 layers: embeddings, layer 0's output, the last (normed)
PROMPTS = ["Describe this.", "What is in the picture? Answer in detail.", "abc abc abc", "Count the shapes."]


@pytest.fixture(scope="module")
def targets(tiny_llava_path, tiny_llava_next_path):
    return {"llava": Target.load(tiny_llava_path), "llava_next": Target.load(tiny_llava_next_path)}


def fused_drafter(kind: str, target: Target, seed: int, **config) -> EagleDrafter:
    cls, config_cls = KINDS[kind]
    drafter = cls.from_target(target, config_cls(feature_layers=LAYERS, **config), seed=seed)
    with torch.no_grad():  # use every fused layer and both halves of fc's input
        generator = torch.Generator().manual_seed(seed)
        drafter.fuse.weight.copy_(torch.randn(drafter.fuse.weight.shape, generator=generator) * 0.05)
        drafter.fc.weight.add_(torch.randn(drafter.fc.weight.shape, generator=generator) * 0.05)
    return drafter


CASES = [
    (kind, ("llava", "llava_next")[i % 2], shape, i)
    for i, (kind, shape) in enumerate(
        (k, s) for k in KINDS for s in ("chain", "dynamic", "static")
    )
]


@pytest.mark.parametrize("kind,target_name,shape,seed", CASES)
def test_fused_features_greedy_matches_generate(kind, target_name, shape, seed, targets):
    target = targets[target_name]
    config = {"chain": dict(tree="chain", depth=1 + seed % 5),
              "dynamic": dict(tree="dynamic", depth=2 + seed % 4, top_k=2 + seed % 5, total_tokens=4 + 3 * seed),
              "static": dict(tree="static")}[shape]
    drafter = fused_drafter(kind, target, seed, **config)
    pipe = Pipeline(target, drafter, ScheduleConfig.parse(("3", "adaptive", "5")[seed % 3]))
    for j in range(2):
        image = None if (seed + j) % 5 == 4 else random_image(seed * 7 + j)
        prompt = PROMPTS[(seed + j) % len(PROMPTS)]
        max_new_tokens = 8 + (seed * 5 + j * 13) % 24
        expected = reference_tokens(target, pipe.prepare(image, prompt), max_new_tokens)
        assert pipe.generate(image, prompt, max_new_tokens=max_new_tokens).token_ids == expected, (kind, config)


def test_target_returns_the_named_layers_concatenated(targets):
    target = targets["llava"]
    inputs = target.prepare([random_image(1)], "Describe this.")
    state, _ = target.prefill(inputs, need_hidden=True, feature_layers=LAYERS)
    with torch.no_grad():
        out = target.model(**inputs, output_hidden_states=True)
    hidden = target.model.config.get_text_config().hidden_size
    assert state.prompt_hidden.shape[-1] == 3 * hidden
    assert torch.allclose(state.prompt_hidden, torch.cat([out.hidden_states[i] for i in LAYERS], -1), atol=1e-5)
    last, _ = target.prefill(inputs, need_hidden=True)  # default: the last layer, as EAGLE-1/2 read it
    assert torch.allclose(last.prompt_hidden, out.hidden_states[-1], atol=1e-5)
    assert select_features(out.hidden_states, None) is out.hidden_states[-1]


@pytest.mark.parametrize("kind", list(KINDS))
def test_fused_inference_equals_teacher_forcing(kind, targets):
    """After a few verify steps the drafter's root prediction equals forward_train over the whole
    committed sequence on the fused target features (what the trainer feeds it)."""
    target = targets["llava"]
    drafter = fused_drafter(kind, target, seed=5, tree="dynamic", top_k=3, total_tokens=8)
    image = random_image(3)
    inputs = target.prepare([image], "Describe this.")
    state, logits = target.prefill(inputs, need_hidden=True, feature_layers=drafter.feature_layers)
    drafter.begin(DraftContext(target, state, SamplingParams(), None))
    committed = torch.cat([state.prompt_ids[0], logits.argmax(-1)])
    for _ in range(3):
        draft = drafter.propose(committed, 3)
        cached = cache_length(state.cache)
        scored = target.forward(state, torch.cat([committed[-1:], draft.tokens])[None], True, draft.parents,
                                feature_layers=drafter.feature_layers)
        from vlmspec.core.verify import verify_greedy

        accepted = verify_greedy(draft.tokens, scored.logits[0], draft.parents)
        rows = [0] + [n + 1 for n in accepted.path]
        target.keep(state, cached, rows)
        committed = torch.cat([committed, committed.new_tensor(draft.tokens[accepted.path].tolist()
                                                                + [accepted.next_token])])
        drafter.update(StepFeedback(len(accepted.path), accepted.path, committed, scored.hidden[:, rows]))
    with torch.inference_mode():
        root_hidden, root_logits = drafter._catch_up(committed)
    full = dict(inputs, input_ids=committed[None, :-1], attention_mask=torch.ones_like(committed[None, :-1]))
    full_state, _ = target.prefill(full, need_hidden=True, feature_layers=drafter.feature_layers)
    with torch.no_grad():
        features = drafter.fuse_features(full_state.prompt_hidden)  # [1, T, H]
        if kind == "eagle":
            trained_hidden, trained_logits = drafter.forward_train(committed[None, 1:], features)
        else:
            spans = [list(full_state.image_spans)]
            out = drafter.forward_train(committed[None, 1:], features, image_features=[list(full_state.image_features)],
                                        image_spans=spans, prompt_lengths=[state.prompt_ids.shape[1]])
            trained_hidden, trained_logits = out[0], out[1]
    assert torch.allclose(root_hidden[0, 0], trained_hidden[0, -1], atol=1e-4)
    assert torch.allclose(root_logits, trained_logits[0, -1], atol=1e-3)


def test_fused_drafter_save_load_round_trip(targets, tmp_path):
    target = targets["llava"]
    drafter = fused_drafter("vispec", target, seed=2, tree="chain", depth=3)
    drafter.save_pretrained(tmp_path / "d")
    loaded = ViSpecDrafter.from_pretrained(tmp_path / "d", target)
    assert loaded.feature_layers == LAYERS
    assert torch.equal(loaded.fuse.weight, drafter.fuse.weight)
    image = random_image(4)
    a = Pipeline(target, drafter, ScheduleConfig.parse("3")).generate(image, "Describe this.", max_new_tokens=12)
    b = Pipeline(target, loaded, ScheduleConfig.parse("3")).generate(image, "Describe this.", max_new_tokens=12)
    assert a.token_ids == b.token_ids and a.metrics.target_forwards == b.metrics.target_forwards
    with pytest.raises(InputError, match="feature_layers"):  # how it reads the target is not a drafting option
        loaded.with_config(ViSpecConfig(tree="chain", depth=3))


def test_batched_decoding_with_fused_drafters_matches_single(targets):
    target = targets["llava"]
    drafter = fused_drafter("eagle", target, seed=9, tree="dynamic", depth=3, top_k=3, total_tokens=10)
    pipe = Pipeline(target, drafter, ScheduleConfig.parse("3"))
    pairs = [(random_image(11), "Describe this."), (None, "abc abc abc"), (random_image(12), "Count the shapes.")]
    results = pipe.generate_batch(pairs, max_new_tokens=16)
    for (image, prompt), result in zip(pairs, results):
        assert result.token_ids == reference_tokens(target, pipe.prepare(image, prompt), 16)


def test_bad_feature_layers_are_refused_by_name(targets):
    target = targets["llava"]
    for bad in ([2, 1, 0], [1], [-1, 2], "last", [0, 1.5]):
        with pytest.raises(InputError, match="feature_layers"):
            EagleConfig(feature_layers=bad)
    with pytest.raises(InputError, match=r"do not exist in a target of 2 layers"):
        EagleDrafter.from_target(target, EagleConfig(feature_layers=(0, 5)))
    with pytest.raises(InputError, match="at least 7 layers"):
        EagleDrafter.from_target(target, EagleConfig(feature_layers="eagle3"))
    assert eagle3_layers(30) == (2, 15, 27)  # the default model's 30 layers
    drafter = EagleDrafter.from_target(target, EagleConfig(feature_layers=LAYERS))
    with pytest.raises(InputError, match="feature_layers=drafter.feature_layers"):
        drafter.fuse_features(torch.zeros(1, 4, drafter.hidden_size))  # last-layer states given to a fused drafter


# ------------------------------------------------------------------ training
@pytest.mark.parametrize("kind", ["eagle", "vispec"])
def test_fused_drafter_trains_its_fusion_saves_and_stays_lossless(kind, tiny_llava_path, tmp_path):
    """The trainer feeds the named layers (fused by the drafter's own fc, which it trains), runs
    the training-time test without the feature regression, and the saved drafter reads the
    same layers at inference: greedy output is the target's."""
    import json

    import vlmspec
    from vlmspec.training import Trainer, TrainConfig

    from test_training import write_jsonl

    image_path = tmp_path / "0.png"
    random_image(0, 40, 60).save(image_path)
    rows = [{"id": f"r{i}", "image": str(image_path) if i % 2 else None, "prompt": f"Say abc {i}",
             "response": "abc xyz " * 3} for i in range(4)]
    data = write_jsonl(tmp_path / "fixed.jsonl", rows)
    config = TrainConfig.from_dict({
        "target": str(tiny_llava_path), "output_dir": str(tmp_path / "out"), "progress_bar": False,
        "log_every": 1, "checkpoint_every": 0, "eval": {"num_prompts": 0}, "batch_size": 4, "max_steps": 6,
        "seed": 1, "drafter": kind, "drafter_config": {"tree": "chain", "feature_layers": list(LAYERS)},
        "data": {"sources": [{"kind": "jsonl", "path": data}]},
        "loss": {"w_ce": 1.0, "w_feat": 0.0, "ttt_steps": 2, "input_noise": 0.0}, "optim": {"lr": 3e-3},
    })
    trainer = Trainer(config).setup()
    fuse_before = trainer.adapter.drafter.fuse.weight.detach().clone()
    result = trainer.train()
    history = result.history
    assert history[-1]["loss"] < 0.9 * history[0]["loss"], [r["loss"] for r in history]
    assert all(r["loss"] == pytest.approx(sum(0.8**k * r[f"ce{s}"] for k, s in enumerate(["", "@1", "@2"])),
                                          rel=1e-5) for r in history)  # no feature term
    assert not torch.equal(trainer.adapter.drafter.fuse.weight.detach(), fuse_before)  # the fusion is trained
    saved = json.loads((result.drafter_dir / "config.json").read_text())
    assert saved["eagle"]["feature_layers"] == list(LAYERS)
    pipe = vlmspec.load(trainer.target, f"{kind}:{result.drafter_dir}")
    assert pipe.drafter.feature_layers == LAYERS
    for image, prompt in [(random_image(2), "Describe this."), (None, "Say abc 3")]:
        inputs = pipe.prepare(image, prompt)
        assert pipe.generate(image, prompt, max_new_tokens=16).token_ids == reference_tokens(
            trainer.target, inputs, 16)


def test_fused_features_need_ttt_and_no_feature_regression(tiny_llava_path, tmp_path):
    from vlmspec.training import TrainConfig

    base = {"target": str(tiny_llava_path), "output_dir": str(tmp_path), "drafter": "eagle",
            "drafter_config": {"feature_layers": "eagle3"}, "data": {"sources": [{"kind": "synthetic"}]}}
    for loss in ({"w_feat": 1.0, "ttt_steps": 2}, {"w_feat": 0.0, "ttt_steps": 0}):
        with pytest.raises(InputError, match="w_feat to 0 and loss.ttt_steps >= 1"):
            TrainConfig.from_dict({**base, "loss": loss})
    TrainConfig.from_dict({**base, "loss": {"w_feat": 0.0, "ttt_steps": 2}})
