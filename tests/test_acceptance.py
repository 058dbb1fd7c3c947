"""Acceptance predictor, learned draft stop (lossless) and approximate verification (SPRINTER, lossy).

- The gate and `verify_draft(trusted=...)` do what they say on hand-made drafts.
- `draft_length="learned"` is token-identical to `model.generate` for any predictor (random
  ones included: where drafting stops never changes the output), over seeds, prompts, images,
  thresholds and drafters, and keeps the sampling distribution (chi-square).
- Approximate mode at threshold 1.0 equals the lossless output; below it, the output is
  labelled "approximate (not lossless)" everywhere it appears.
- Training the predictor lowers held-out BCE below a constant's; collection + training run end
  to end on a tiny target and write the predictor, its card and the calibration report.
"""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from vlmspec import ModelDrafter, Pipeline, Target
from vlmspec.drafters.eagle import EagleConfig, EagleDrafter
from vlmspec.core.acceptance import AcceptanceGate, GateConfig, acceptance_features
from vlmspec.core.drafter import Draft
from vlmspec.core.sampling import SamplingParams
from vlmspec.core.verify import verify_draft
from vlmspec.drafters.acceptance import AcceptancePredictor, drafter_fingerprint
from vlmspec.errors import DrafterMismatchError, InputError, ModelLoadError
from vlmspec.gating import setup_gate
from vlmspec.training.acceptance import AcceptanceTrainConfig, auroc, bce, fit, train_acceptance

from conftest import random_image
from test_lossless_greedy import PROMPTS, reference_tokens
from test_lossless_sampling import SAMPLING, _NoisyDrafter, chi_square_p_value, distribution_setup, sample_joint


# ---------------------------------------------------------------- unit level
def test_features_read_the_draft_distribution():
    probs = torch.tensor([0.7, 0.2, 0.1, 0.0])
    f = acceptance_features(probs, depth=2)
    assert f.shape == (4,)
    assert f[0] == pytest.approx(0.7) and f[2] == pytest.approx(0.5) and f[3] == pytest.approx(2 / 16)
    assert 0 < f[1] < 1  # entropy in units of log(vocab)
    assert acceptance_features(probs, 1, torch.ones(6)).shape == (10,)


def test_stop_gate_stops_after_the_token_whose_survival_drops_below_the_threshold():
    scores = iter([0.9, 0.8, 0.5, 0.9])
    gate = AcceptanceGate(lambda f: next(scores), GateConfig(mode="stop", threshold=0.5))
    answers = [gate.keep_drafting(torch.zeros(4)) for _ in range(3)]
    assert answers == [True, True, False]  # survival 0.9, 0.72, 0.36
    assert gate.trusted_prefix(3) == 0  # stop mode never trusts a token


def test_stop_gate_with_a_next_token_output_stops_before_an_unlikely_next_token():
    # (a_i, n_i): the survival after the token, times the predicted chance the next one is accepted
    scores = iter([(0.9, 0.9), (0.9, 0.5), (0.9, 0.9)])
    gate = AcceptanceGate(lambda f: next(scores), GateConfig(mode="stop", threshold=0.5))
    assert [gate.keep_drafting(torch.zeros(4)) for _ in range(2)] == [True, False]  # 0.81; 0.81 * 0.5 < 0.5
    assert gate.survival == pytest.approx(0.81) and gate.scores == [0.9, 0.9]
    gate.start()
    scores = iter([(0.6, 0.99)])  # survival 0.6 alone would go on; so does 0.6 * 0.99
    assert gate.keep_drafting(torch.zeros(4)) is True
    gate.start()
    scores = iter([(0.6, 0.8)])  # 0.48 < 0.5: the next forward is not worth paying for
    assert gate.keep_drafting(torch.zeros(4)) is False
    for shaped in ([0.6, 0.8], torch.tensor([0.6, 0.8])):  # a list or a tensor reads the same
        gate.start()
        scores = iter([shaped])
        assert gate.keep_drafting(torch.zeros(4)) is False


def test_collected_rows_label_this_token_and_the_next():
    from vlmspec.training.acceptance import _RecordingSchedule

    sink = []
    schedule = _RecordingSchedule(4, sink)
    schedule.next_length()
    for _ in range(4):
        schedule.gate.keep_drafting(torch.zeros(3))
    schedule.observe(drafted=4, accepted=2, draft_seconds=0.0, verify_seconds=0.0)
    schedule.next_length()
    for _ in range(3):
        schedule.gate.keep_drafting(torch.zeros(3))
    schedule.observe(drafted=3, accepted=3, draft_seconds=0.0, verify_seconds=0.0)
    rows = [(y, d, n) for _, y, d, n in sink]
    nan = float("nan")
    expected = [(1.0, 1, 1.0), (1.0, 2, 0.0), (0.0, 3, nan), (1.0, 1, 1.0), (1.0, 2, 1.0), (1.0, 3, nan)]
    assert len(rows) == len(expected)
    for (y, d, n), (ey, ed, en) in zip(rows, expected):
        assert (y, d) == (ey, ed) and (n == en or (n != n and en != en))


def test_approximate_gate_trusts_approved_tokens_up_to_the_first_flag():
    scores = iter([0.9, 0.6, 0.3, 0.9])
    gate = AcceptanceGate(lambda f: next(scores), GateConfig(mode="approximate", threshold=0.5))
    assert [gate.keep_drafting(torch.zeros(4)) for _ in range(3)] == [True, True, False]
    assert gate.trusted_prefix(3) == 2
    never = AcceptanceGate(lambda f: 1.0, GateConfig(mode="approximate", threshold=1.0))
    assert not never.keep_drafting(torch.zeros(4)) and never.trusted_prefix(1) == 0


def test_approximate_gate_drafts_the_verify_tail_after_the_flag_and_trusts_none_of_it():
    scores = iter([0.9, 0.3, 0.9, 0.9, 0.9])  # approved, flagged, then tail tokens the predictor likes
    gate = AcceptanceGate(lambda f: next(scores), GateConfig(mode="approximate", threshold=0.5, verify_tail=2))
    assert [gate.keep_drafting(torch.zeros(4)) for _ in range(4)] == [True, True, True, False]
    assert gate.trusted_prefix(4) == 1  # only the token before the flag
    gate.start()  # a new draft starts with no tail pending
    scores = iter([0.2])
    assert gate.keep_drafting(torch.zeros(4)) is True and gate.trusted_prefix(1) == 0


def test_gate_config_is_checked():
    with pytest.raises(InputError, match="mode"):
        GateConfig(mode="sometimes")
    with pytest.raises(InputError, match="threshold"):
        GateConfig(threshold=1.5)
    with pytest.raises(InputError, match="max_length"):
        GateConfig(max_length=0)
    with pytest.raises(InputError, match="verify_tail"):
        GateConfig(mode="approximate", verify_tail=-1)


def test_shipped_acceptance_recipe_loads_and_trains_on_rows_no_drafter_saw():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    data = json.loads((root / "train" / "acceptance" / "default.json").read_text())
    config = AcceptanceTrainConfig.from_dict(data)  # "_comment" is a note, not a field
    recipes = [json.loads(p.read_text()) for p in (root / "train" / "drafters" / "cpu").glob("*.json")]
    drafter_seeds = {s["seed"] for r in recipes for s in r["data"]["sources"]}
    assert config.seed not in drafter_seeds  # the predictor's labels come from prompts its drafter never saw
    with pytest.raises(InputError, match="unknown acceptance-training fields"):
        AcceptanceTrainConfig.from_dict({**data, "epoch": 3})


def test_cost_derived_threshold_is_the_break_even_point_per_position():
    gate = AcceptanceGate(lambda f: 1.0, GateConfig(mode="stop"))
    verify = {1: 0.040, 2: 0.042, 3: 0.044, 4: 0.046}
    gate.set_costs(0.006, lambda n: verify[n], tokens_per_second=25.0)
    # after 2 drafted tokens a third adds one draft step and the verify of 4 rows instead of 3
    assert gate.breakeven(2) == pytest.approx((0.006 + 0.002) * 25.0)
    assert gate.threshold_after(2) == pytest.approx(0.2)


def test_learned_stop_drafts_through_flat_verify_costs_and_stops_at_a_jump():
    # verifying 2-4 rows costs what 1 does here; 5 rows switch to a slower kernel
    verify = {1: 0.030, 2: 0.030, 3: 0.030, 4: 0.030, 5: 0.050, 6: 0.051, 7: 0.052}
    drafts = []
    for confidence in (0.9, 0.999):
        gate = AcceptanceGate(lambda f: (confidence, confidence), GateConfig(mode="stop", max_length=6))
        gate.set_costs(0.001, lambda n: verify[n], tokens_per_second=50.0)
        gate.start()
        n = 1
        while n < 6 and gate.keep_drafting(torch.zeros(4)):
            n += 1
        drafts.append(n)
    # 0.9: worth 0.9^4 = 0.66 of a token cannot pay the 20 ms jump (bar 0.95) -> stops at 3 drafted;
    # a near-certain draft clears it and runs to the cap
    assert drafts == [3, 6]
    fixed = AcceptanceGate(lambda f: (0.9, 0.9), GateConfig(mode="stop", threshold=0.3))
    fixed.set_costs(0.001, lambda n: verify[n], tokens_per_second=50.0)  # a given threshold is kept
    assert fixed.threshold_after(3) == 0.3


def test_verify_with_trusted_prefix_accepts_it_unchecked():
    draft = Draft(torch.tensor([5, 6, 7]))
    logits = torch.zeros(4, 10)
    logits[0, 1] = logits[1, 2] = logits[2, 7] = logits[3, 9] = 5.0  # target agrees with token 3 only
    greedy = SamplingParams()
    assert verify_draft(draft, logits, greedy, None).path == []  # lossless: nothing accepted
    approx = verify_draft(draft, logits, greedy, None, trusted=2)
    assert approx.path == [0, 1, 2] and approx.next_token == 9  # 2 trusted + the checked third + bonus
    assert verify_draft(draft, logits, greedy, None, trusted=1).path == [0] and \
        verify_draft(draft, logits, greedy, None, trusted=1).next_token == 2


# ------------------------------------------------------------ predictor file
def test_predictor_roundtrip_and_fingerprint(tiny_llava_path, other_tiny_llava_path, tmp_path):
    drafter = ModelDrafter.from_pretrained(tiny_llava_path)
    predictor = AcceptancePredictor(drafter.acceptance_features_size)
    predictor.fingerprint = drafter_fingerprint(drafter)
    predictor.save(tmp_path / "p")
    loaded = AcceptancePredictor.load(tmp_path / "p", drafter)
    x = torch.randn(7, 4)
    assert torch.allclose(loaded(x), predictor(x))
    with pytest.raises(DrafterMismatchError, match="another drafter"):
        AcceptancePredictor.load(tmp_path / "p", ModelDrafter.from_pretrained(other_tiny_llava_path))
    with pytest.raises(ModelLoadError, match="No acceptance predictor"):
        AcceptancePredictor.load(tmp_path / "missing")
    two = AcceptancePredictor(drafter.acceptance_features_size, outputs=2)
    two.fingerprint = drafter_fingerprint(drafter)
    two.save(tmp_path / "two")
    loaded_two = AcceptancePredictor.load(tmp_path / "two", drafter)
    assert loaded_two.outputs == 2 and loaded.outputs == 1
    pair = loaded_two.predict(x[0])
    assert isinstance(pair, tuple) and pair == pytest.approx(two.predict(x[0]))
    assert isinstance(loaded.predict(x[0]), float)
    card = json.loads((tmp_path / "p" / "acceptance_predictor.json").read_text())
    card.pop("outputs")
    card["format_version"] = 1  # a file written before the next-token output existed
    (tmp_path / "p" / "acceptance_predictor.json").write_text(json.dumps(card))
    assert AcceptancePredictor.load(tmp_path / "p", drafter).outputs == 1
    card["format_version"] = 99
    (tmp_path / "p" / "acceptance_predictor.json").write_text(json.dumps(card))
    with pytest.raises(ModelLoadError, match="reads 1 and 2"):
        AcceptancePredictor.load(tmp_path / "p")
    (tmp_path / "p" / "acceptance_predictor.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="not valid JSON"):
        AcceptancePredictor.load(tmp_path / "p")


def test_training_lowers_heldout_bce_below_a_constant():
    g = torch.Generator().manual_seed(0)

    def sample(n):
        feats = torch.rand(n, 6, generator=g)
        labels = (torch.rand(n, generator=g) < feats[:, 0] ** 2).float()  # acceptance grows with top-1 prob
        return {"features": feats, "labels": labels}

    train, heldout = sample(3000), sample(1000)
    predictor, _ = fit(train, AcceptanceTrainConfig(epochs=200, hidden=16), sample(500))
    base = float(train["labels"].mean())
    with torch.inference_mode():
        probs = predictor(heldout["features"])
    assert bce(probs, heldout["labels"]) < bce(torch.full_like(probs, base), heldout["labels"]) - 0.05
    assert auroc(probs.double(), heldout["labels"]) > 0.7


def test_next_token_output_learns_what_the_next_token_does():
    g = torch.Generator().manual_seed(1)

    def sample(n):
        feats = torch.rand(n, 6, generator=g)
        labels = (torch.rand(n, generator=g) < feats[:, 0]).float()
        nexts = (torch.rand(n, generator=g) < feats[:, 1] ** 2).float()  # the next token reads feature 1
        nexts[labels == 0] = float("nan")  # no next label after a rejection
        return {"features": feats, "labels": labels, "next_labels": nexts}

    train, heldout = sample(3000), sample(1000)
    predictor, _ = fit(train, AcceptanceTrainConfig(epochs=200, hidden=16), sample(500))
    assert predictor.outputs == 2
    has = ~torch.isnan(heldout["next_labels"])
    with torch.inference_mode():
        probs = torch.sigmoid(predictor.next_logits(heldout["features"]))[has]
    labels = heldout["next_labels"][has]
    base = float(train["next_labels"][~torch.isnan(train["next_labels"])].mean())
    assert bce(probs, labels) < bce(torch.full_like(probs, base), labels) - 0.05
    one, _ = fit({k: v for k, v in train.items() if k != "next_labels"}, AcceptanceTrainConfig(epochs=5))
    assert one.outputs == 1 and one.next_logits(heldout["features"]) is None
    unlabelled = {**train, "next_labels": torch.full_like(train["labels"], float("nan"))}  # e.g. chains of 1
    assert fit(unlabelled, AcceptanceTrainConfig(epochs=5))[0].outputs == 1  # no untrained second head


def test_auroc_on_known_orders():
    labels = torch.tensor([0.0, 0.0, 1.0, 1.0])
    assert auroc(torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64), labels) == 1.0
    assert auroc(torch.tensor([0.4, 0.3, 0.2, 0.1], dtype=torch.float64), labels) == 0.0
    assert auroc(torch.tensor([0.5, 0.5, 0.5, 0.5], dtype=torch.float64), labels) == 0.5
    assert auroc(torch.tensor([0.1, 0.2], dtype=torch.float64), torch.tensor([1.0, 1.0])) is None


# ----------------------------------------------------------- lossless: greedy
@pytest.fixture(scope="module")
def target(tiny_llava_path):
    return Target.load(tiny_llava_path)


@pytest.fixture(scope="module")
def drafters(tiny_llava_path, other_tiny_llava_path, target):
    copy = ModelDrafter.from_pretrained(tiny_llava_path)
    return {
        "copy": copy,  # accepts (nearly) everything
        "noisy": _NoisyDrafter(ModelDrafter.from_pretrained(tiny_llava_path), scale=1.0),  # accepts some
        "other": ModelDrafter.from_pretrained(other_tiny_llava_path),
        "eagle": EagleDrafter.from_target(target, EagleConfig(tree="chain"), seed=3),
    }


def random_predictor(drafter, seed: int, outputs: int = 1) -> AcceptancePredictor:
    """Any predictor: where drafting stops must never change a lossless output."""
    torch.manual_seed(seed)
    predictor = AcceptancePredictor(drafter.acceptance_features_size, hidden=8, outputs=outputs)
    with torch.no_grad():
        for p in predictor.net.parameters():
            p.mul_(4.0)  # spread the outputs over (0, 1)
    predictor.fingerprint = drafter_fingerprint(drafter)
    return predictor.eval()


GREEDY_CASES = list(itertools.product(["copy", "noisy", "other", "eagle"], [None, 0.2, 0.6, 0.95], [4, 8]))


@pytest.mark.parametrize("kind,threshold,max_length", GREEDY_CASES)
def test_learned_stop_is_token_identical_to_generate(kind, threshold, max_length, target, drafters):
    seed = GREEDY_CASES.index((kind, threshold, max_length))
    drafter = drafters[kind]
    chain, gate = setup_gate(target, drafter, learned=True, threshold=threshold,
                             predictor=random_predictor(drafter, seed, outputs=1 + seed % 2),
                             max_length=max_length, measure_costs=False)
    pipe = Pipeline(target, chain, gate=gate)
    image, prompt = random_image(100 + seed), PROMPTS[seed % len(PROMPTS)]
    max_new_tokens = 6 + (seed * 11) % 40
    expected = reference_tokens(target, pipe.prepare(image, prompt), max_new_tokens, target.eos_token_ids)
    result = pipe.generate(image, prompt, max_new_tokens=max_new_tokens)
    assert result.token_ids == expected
    assert result.lossless and result.verification == "exact (lossless)"
    assert result.metrics.unchecked_tokens == 0
    assert result.metrics.mean_draft_length <= max_length


def test_learned_stop_drafts_less_where_the_predictor_says_so(target, drafters):
    drafter = drafters["copy"]
    image = random_image(3)

    def run(score):
        predictor = random_predictor(drafter, 0)
        predictor.predict = lambda features: score  # a constant belief
        chain, gate = setup_gate(target, drafter, learned=True, threshold=0.5, predictor=predictor, max_length=8,
                                 measure_costs=False)
        return Pipeline(target, chain, gate=gate).generate(image, "Describe this.", max_new_tokens=30)

    sure, doubtful = run(0.99), run(0.6)  # survival 0.6 < 0.5 after 2 tokens
    assert sure.token_ids == doubtful.token_ids
    assert doubtful.metrics.mean_draft_length <= 2.0 < sure.metrics.mean_draft_length


# ---------------------------------------------------------- lossless: sampling
def test_learned_stop_keeps_the_sampling_distribution(tiny_llava_path):
    quiet, image, _, expected = distribution_setup(Target.load(tiny_llava_path))
    noisy = _NoisyDrafter(ModelDrafter.from_pretrained(tiny_llava_path), scale=1.5)
    chain, gate = setup_gate(quiet, noisy, learned=True, threshold=0.5, predictor=random_predictor(noisy, 1, outputs=2),
                             max_length=3, measure_costs=False)
    pipe = Pipeline(quiet, chain, gate=gate)
    draws = 2000
    counts, rejection_share = sample_joint(pipe, image, draws, 3)
    assert rejection_share > 0.2
    assert chi_square_p_value(counts, expected, draws) > 1e-3


# ------------------------------------------------------------- approximate
def test_approximate_at_threshold_one_equals_lossless(target, drafters):
    for seed, kind in enumerate(["noisy", "other", "eagle", "copy"]):
        drafter = drafters[kind]
        chain, gate = setup_gate(target, drafter, learned=False, verification="approximate", threshold=1.0,
                                 predictor=random_predictor(drafter, seed))
        pipe = Pipeline(target, chain, gate=gate)
        image, prompt = random_image(200 + seed), PROMPTS[seed]
        expected = reference_tokens(target, pipe.prepare(image, prompt), 30, target.eos_token_ids)
        result = pipe.generate(image, prompt, max_new_tokens=30)
        assert result.token_ids == expected
        assert result.metrics.unchecked_tokens == 0
        assert not result.lossless  # the mode is still labelled: it is not a lossless mode


def test_approximate_at_threshold_one_drafts_and_outputs_the_lossless_chain(target, drafters):
    """The default tail is the drafter's chain length - 1: trusting nothing gives its lossless chain."""
    k = 3
    drafter = EagleDrafter.from_target(target, EagleConfig(tree="chain", depth=k), seed=3)  # its own depth cap
    chain, gate = setup_gate(target, drafter, learned=False, verification="approximate", threshold=1.0,
                             predictor=random_predictor(drafter, 5))
    assert gate.config.verify_tail == k - 1
    image, prompt = random_image(260), PROMPTS[1]
    approx = Pipeline(target, chain, gate=gate).generate(image, prompt, max_new_tokens=30)
    lossless = Pipeline(target, drafter).generate(image, prompt, max_new_tokens=30)  # a chain of its cap, k
    assert approx.token_ids == lossless.token_ids
    assert approx.metrics.target_forwards == lossless.metrics.target_forwards  # the same drafts, step by step
    assert approx.metrics.unchecked_tokens == 0
    sprinter, gate = setup_gate(target, drafter, learned=False, verification="approximate", threshold=1.0,
                                predictor=random_predictor(drafter, 5), verify_tail=0)
    assert gate.config.verify_tail == 0
    assert Pipeline(target, sprinter, gate=gate).generate(image, prompt, max_new_tokens=30).token_ids == lossless.token_ids


def test_approximate_output_is_labelled_everywhere(target, drafters):
    drafter = drafters["noisy"]
    predictor = random_predictor(drafter, 0)
    predictor.predict = lambda features: 0.9  # trusts everything it drafts
    chain, gate = setup_gate(target, drafter, learned=False, verification="approximate", threshold=0.5,
                             predictor=predictor, max_length=6)
    pipe = Pipeline(target, chain, gate=gate)
    image = random_image(9)
    result = pipe.generate(image, "Describe this.", max_new_tokens=40)
    expected = reference_tokens(target, pipe.prepare(image, "Describe this."), 40, target.eos_token_ids)
    assert result.metrics.unchecked_tokens > 0
    assert result.token_ids != expected  # a bad drafter trusted blindly: not the target's output
    assert result.verification == "approximate (not lossless)" and result.to_dict()["lossless"] is False
    assert result.to_dict()["verification"] == "approximate (not lossless)"
    assert result.metrics.to_dict()["verification"] == "approximate"
    with pytest.raises(InputError, match="one sequence at a time"):
        pipe.generate_batch([(image, "Describe this.")])


def test_modes_refuse_what_they_cannot_do(target, tiny_llava_path):
    from vlmspec import PromptLookupDrafter

    with pytest.raises(InputError, match="no acceptance features"):
        setup_gate(target, PromptLookupDrafter(), learned=True)
    with pytest.raises(InputError, match="pick one"):
        setup_gate(target, ModelDrafter.from_pretrained(tiny_llava_path), learned=True, verification="approximate")
    with pytest.raises(InputError, match="verification must be"):
        setup_gate(target, ModelDrafter.from_pretrained(tiny_llava_path), learned=False, verification="fuzzy")
    with pytest.raises(ModelLoadError, match="No acceptance predictor"):  # nothing saved beside the drafter
        setup_gate(target, ModelDrafter.from_pretrained(tiny_llava_path), learned=True)


def test_cli_line_says_not_lossless(tiny_llava_path, tmp_path, capsys):
    from vlmspec import cli

    drafter = ModelDrafter.from_pretrained(tiny_llava_path)
    predictor = random_predictor(drafter, 0)
    predictor.save(tmp_path / "pred")
    random_image(1).save(tmp_path / "img.png")
    code = cli.main(["generate", "--target", str(tiny_llava_path), "--drafter", f"model:{tiny_llava_path}",
                     "--image", str(tmp_path / "img.png"), "--prompt", "Describe this.", "--max-new-tokens", "12",
                     "--verification", "approximate", "--predictor", str(tmp_path / "pred"), "--fast-cpu", "off"])
    assert code == 0
    assert "approximate (not lossless)" in capsys.readouterr().err
    code = cli.main(["generate", "--target", str(tiny_llava_path), "--drafter", f"model:{tiny_llava_path}",
                     "--image", str(tmp_path / "img.png"), "--prompt", "Describe this.", "--max-new-tokens", "12",
                     "--verification", "approximate", "--predictor", str(tmp_path / "pred"), "--fast-cpu", "off",
                     "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["lossless"] is False and out["verification"] == "approximate (not lossless)"


# ------------------------------------------------------------- end to end
def test_train_acceptance_end_to_end(target, tiny_llava_path, tmp_path):
    drafter = _NoisyDrafter(ModelDrafter.from_pretrained(tiny_llava_path), scale=1.0)
    pipe = Pipeline(target, drafter)
    config = AcceptanceTrainConfig(train_prompts=6, heldout_prompts=3, max_new_tokens=16, draft_length=4,
                                   epochs=50, output_dir=str(tmp_path / "acc"), progress_bar=False)
    summary = train_acceptance(config, pipe=pipe)
    out = tmp_path / "acc"
    for name in ("acceptance_predictor.safetensors", "acceptance_predictor.json", "acceptance_calibration.json",
                 "acceptance_calibration.png", "acceptance_calibration.md"):
        assert (out / name).is_file(), name
    report = json.loads((out / "acceptance_calibration.json").read_text())
    assert report["heldout"]["samples"] > 0 and 0 <= report["heldout"]["brier"] <= 1
    assert 0 <= report["best_epoch"] < config.epochs and report["validation"]["samples"] > 0
    assert summary["heldout"]["samples"] == report["heldout"]["samples"]
    assert "next" in report["heldout"] and 0 <= report["heldout"]["next"]["brier"] <= 1
    assert "next-token output, held out" in (out / "acceptance_calibration.md").read_text()
    predictor = AcceptancePredictor.load(out, drafter)
    assert predictor.outputs == 2
    chain, gate = setup_gate(target, drafter, learned=True, predictor=predictor, threshold=0.3, measure_costs=False)
    image = random_image(4)
    result = Pipeline(target, chain, gate=gate).generate(image, "Describe this.", max_new_tokens=20)
    assert result.token_ids == reference_tokens(target, pipe.prepare(image, "Describe this."), 20,
                                                target.eos_token_ids)


def test_eval_method_names_for_both_modes():
    from vlmspec.evaluation.runner import parse_method

    assert parse_method("learned:auto").kind == "learned"
    spec = parse_method("approximate@0.7:vispec:/some/dir")
    assert spec.kind == "approximate" and spec.argument == "vispec:/some/dir"
    assert parse_method("approximate:auto").kind == "approximate"
    with pytest.raises(InputError, match="threshold"):
        parse_method("approximate@1.7:auto")
    with pytest.raises(InputError, match="name the drafter"):
        parse_method("learned")


def test_eval_rows_of_approximate_output_carry_the_label(target, drafters, tiny_llava_path, tmp_path):
    from vlmspec.evaluation.runner import MemoryProbe, VlmspecMethod
    from vlmspec.evaluation.runner import Sampling

    drafter = drafters["noisy"]
    predictor = random_predictor(drafter, 0)
    predictor.predict = lambda features: 0.9
    chain, gate = setup_gate(target, drafter, learned=False, verification="approximate", threshold=0.5,
                             predictor=predictor)
    method = VlmspecMethod("approximate:x", Pipeline(target, chain, gate=gate), MemoryProbe(target.device))
    generation = method.generate(target.prepare([random_image(2)], "Describe this."), Sampling(max_new_tokens=12, temperature=0.0, top_p=None, top_k=None, seed=0))
    assert generation.extra["mode"] == "approximate (not lossless)"


def test_gated_length_prices_a_draft_token_at_its_marginal_cost_and_the_loops_rate():
    from vlmspec.core.schedule import GatedLength

    seen = {}

    class _Gate:
        config = GateConfig(mode="stop", max_length=4)

        def set_costs(self, draft, verify, rate):
            seen.update(draft=draft, verify=verify(5), rate=rate)

    schedule = GatedLength(_Gate(), {1: 0.030, 2: 0.030, 3: 0.031, 4: 0.032, 5: 0.040})
    for drafted in (1, 2, 3, 1, 2, 3):  # each draft: 10 ms of catch-up work + 1 ms per token
        schedule.observe(drafted, accepted=1, draft_seconds=0.010 + 0.001 * drafted, verify_seconds=0.030)
    assert seen["draft"] == pytest.approx(0.001)  # the slope, not the 4-11 ms mean per token
    assert seen["verify"] == pytest.approx(0.040)  # an unobserved length keeps its measured cost
    assert 0 < seen["rate"] < 2 / 0.041  # two tokens per step over about 41-43 ms
