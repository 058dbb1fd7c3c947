"""Tests for Speculative Verdict (vlmspec/verdict.py): consensus math, config, boxed-answer
extraction, batched answer scoring, and the whole pipeline on tiny random LLaVA models."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest
import torch

from vlmspec.errors import InputError, ModelLoadError, PromptError
from vlmspec.testing import TinyLlavaConfig, build_tiny_llava, save_tiny_llava
from vlmspec.verdict import (
    MODE_LABEL,
    SCORING_PROMPT,
    VerdictConfig,
    VerdictRunner,
    add_verdict_parser,
    consensus_scores,
    extract_boxed,
    fallback_answer,
    run_verdict_command,
    run_verdict_method,
    score_answers,
    select_consensus,
    verdict,
)

FAST = dict(max_answer_tokens=6, max_reasoning_tokens=12, max_verdict_tokens=16)


# --------------------------------------------------------------------------- consensus math


def test_consensus_scores_match_hand_computation():
    # scorer j (row) x answer i (column); diagonal = each expert's own answer
    nll = [
        [1.0, 2.0, 1.5],
        [3.0, 2.5, 2.0],
        [0.5, 4.0, 1.0],
    ]
    # score(0) = |3.0-2.5| + |0.5-1.0| = 1.0
    # score(1) = |2.0-1.0| + |4.0-1.0| = 4.0
    # score(2) = |1.5-1.0| + |2.0-2.5| = 1.0
    assert consensus_scores(nll) == pytest.approx([1.0, 4.0, 1.0])
    assert select_consensus(consensus_scores(nll), 2) == [0, 2]  # tie 0/2 -> lower index first
    assert select_consensus(consensus_scores(nll), 1) == [0]


def test_consensus_known_ranking_and_tensor_input():
    # experts 1, 2, 3 agree closely with each other; expert 0 is the outlier
    nll = torch.tensor(
        [
            [0.2, 3.0, 3.0, 3.0],
            [5.0, 1.0, 1.1, 1.2],
            [5.5, 1.1, 1.0, 1.05],
            [6.0, 1.3, 1.2, 1.0],
        ]
    )
    scores = consensus_scores(nll)
    # e.g. score(3) = |3.0-0.2| + |1.2-1.0| + |1.05-1.0|
    assert scores == pytest.approx([4.0 + 4.5 + 5.0, 2.8 + 0.1 + 0.3, 2.8 + 0.1 + 0.2, 2.8 + 0.2 + 0.05])
    assert select_consensus(scores, 3) == [3, 2, 1]
    assert select_consensus(scores, 4)[-1] == 0


def test_consensus_ties_broken_by_index_and_all_equal():
    nll = np.full((4, 4), 2.0)
    scores = consensus_scores(nll)
    assert scores == [0.0, 0.0, 0.0, 0.0]
    assert select_consensus(scores, 3) == [0, 1, 2]
    assert select_consensus([1.0, 0.5, 0.5, 0.5], 2) == [1, 2]


def test_consensus_single_expert_and_nan_for_empty_answers():
    assert consensus_scores([[1.7]]) == [0.0]
    nan = math.nan
    # answer 1 is empty (NaN column): it ranks last; scorer 1 abstains for the others
    nll = [
        [1.0, nan, 2.0],
        [4.0, nan, 9.0],
        [1.5, nan, 1.0],
    ]
    scores = consensus_scores(nll)
    assert scores == pytest.approx([0.5, math.inf, 1.0])
    assert select_consensus(scores, 3) == [0, 2, 1]


def test_consensus_rejects_bad_matrices():
    with pytest.raises(InputError, match="square"):
        consensus_scores([[1.0, 2.0]])
    with pytest.raises(InputError, match="square"):
        consensus_scores([])
    with pytest.raises(InputError, match="infinite"):
        consensus_scores([[1.0, math.inf], [1.0, 1.0]])
    with pytest.raises(InputError, match="between 1 and the number of answers \\(2\\)"):
        select_consensus([0.1, 0.2], 3)
    with pytest.raises(InputError):
        select_consensus([0.1, 0.2], 0)


# --------------------------------------------------------------------------- boxed answers


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so the bar is 42. \\boxed{42}", "42"),
        ("first \\boxed{1} then \\boxed{ 7 }", "7"),
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\text{blue car}}", "blue car"),
        ("\\boxed{12} then an empty \\boxed{}", "12"),
        ("\\fbox{B}", "B"),
    ],
)
def test_extract_boxed_found(text, expected):
    assert extract_boxed(text) == (expected, True)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("It shows cats.\nFinal answer: 3 cats.", "3 cats"),
        ("reasoning...\nThe answer is red", "red"),
        ("cut off \\boxed{19", "cut off 19"),
        ("  \n\n", ""),
        ("just this", "just this"),
    ],
)
def test_extract_boxed_fallback(text, expected):
    assert extract_boxed(text) == (expected, False)
    assert fallback_answer(text) == expected


# --------------------------------------------------------------------------- config


def test_config_validation_messages(tmp_path):
    with pytest.raises(InputError, match="m=3 .* only 2 were given"):
        VerdictConfig(experts=["a", "b"], verdict="v", m=3)
    with pytest.raises(InputError, match="No experts"):
        VerdictConfig(experts=[], verdict="v", m=1)
    with pytest.raises(InputError, match="list of models"):
        VerdictConfig(experts="a", verdict="v", m=1)
    with pytest.raises(InputError, match="verdict"):
        VerdictConfig(experts=["a"], verdict=None, m=1)
    with pytest.raises(InputError, match="memory"):
        VerdictConfig(experts=["a"], verdict="v", m=1, memory="lazy")
    with pytest.raises(InputError, match="max_verdict_tokens"):
        VerdictConfig(experts=["a"], verdict="v", m=1, max_verdict_tokens=0)
    with pytest.raises(InputError, match="Unknown verdict config keys \\['k'\\]"):
        VerdictConfig.from_dict({"experts": ["a"], "verdict": "v", "k": 1})
    with pytest.raises(InputError, match="not found"):
        VerdictConfig.from_file(tmp_path / "missing.json")


def test_config_from_file_resolves_relative_paths(tmp_path):
    (tmp_path / "e1").mkdir()
    path = tmp_path / "verdict.json"
    path.write_text(json.dumps({"experts": ["e1", "hub/name", "/abs/e3"], "verdict": "v", "m": 2, "memory": "sequential"}))
    config = VerdictConfig.from_file(path)
    assert config.experts == (str(tmp_path / "e1"), "hub/name", "/abs/e3")
    assert (config.m, config.memory, config.verdict) == (2, "sequential", "v")
    assert config.to_dict()["experts"] == list(config.experts)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        VerdictConfig.from_file(bad)


# --------------------------------------------------------------------------- tiny models


def _save_boxed_verdict_model(path, answer: str = "42"):
    """A tiny LLaVA that always writes `\\boxed{<answer>}`: a bigram model built by hand.

    With every attention output and MLP output projection zeroed, the residual stream at a
    position is its own token embedding, so the next token depends on the current token
    only; lm_head then maps '\\n' (end of the generation prompt) -> '\\', '\\' -> 'b', ...,
    '}' -> end of turn. Each character of the output must be distinct.
    """
    model, processor = build_tiny_llava(TinyLlavaConfig(), seed=123)
    tokenizer = processor.tokenizer
    output = "\\boxed{" + answer + "}"
    chain = ["\n", *output]
    assert len(set(chain)) == len(chain), "the bigram trick needs distinct characters"
    chain_ids = [tokenizer.convert_tokens_to_ids(c) for c in chain] + [tokenizer.convert_tokens_to_ids("<|im_end|>")]
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "language_model" in name and (name.endswith("o_proj.weight") or name.endswith("down_proj.weight")):
                param.zero_()
        language_model = model.get_decoder()
        embeddings = model.get_input_embeddings().weight  # [vocab, hidden]
        lm_head = model.get_output_embeddings().weight  # [vocab, hidden]
        final_norm = language_model.norm
        lm_head.zero_()
        for source, target in zip(chain_ids[:-1], chain_ids[1:]):
            hidden = final_norm(embeddings[source][None])[0]  # [hidden]
            lm_head[target] += 10.0 * hidden / hidden.norm()
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread (no oversubscription on a shared 2-core box)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("verdict_models")
    experts = [
        str(save_tiny_llava(root / "expert0", TinyLlavaConfig(), seed=1)),
        str(save_tiny_llava(root / "expert1", TinyLlavaConfig(kind="llava_next"), seed=2)),
        str(save_tiny_llava(root / "expert2", TinyLlavaConfig(), seed=3)),
    ]
    return {
        "experts": experts,
        "random_verdict": str(save_tiny_llava(root / "verdict_random", TinyLlavaConfig(), seed=4)),
        "boxed_verdict": str(_save_boxed_verdict_model(root / "verdict_boxed", "42")),
    }


@pytest.fixture(scope="module")
def image():
    return (np.random.RandomState(0).rand(40, 48, 3) * 255).astype("uint8")


def _comparable(result) -> dict:
    data = result.to_dict()
    data.pop("cost")
    for item in data["expert_answers"]:
        item.pop("seconds")
    return data


def test_score_answers_batched_equals_one_at_a_time(tiny_models, image):
    import vlmspec
    from vlmspec.images import load_image

    pil = load_image(image)
    for path in tiny_models["experts"][:2]:  # llava and llava_next
        pipe = vlmspec.load(target=path)
        answers = ["blue", "", "a red car", "7"]
        nll, forwards, scored_tokens = score_answers(pipe, pil, "What color?", answers)
        assert forwards == 2 and scored_tokens == len("blue") + len("a red car") + 1
        assert math.isnan(nll[1])
        model, tokenizer = pipe.target.model, pipe.target.tokenizer
        for i in (0, 2, 3):
            prefix = pipe.prepare(pil, SCORING_PROMPT.format(question="What color?"))
            ids = torch.tensor(tokenizer(answers[i], add_special_tokens=False)["input_ids"])[None]  # [1, len]
            full = dict(prefix)
            full["input_ids"] = torch.cat([prefix["input_ids"], ids], 1)
            full["attention_mask"] = torch.ones_like(full["input_ids"])
            with torch.no_grad():
                logprobs = model(**full).logits[0].float().log_softmax(-1)  # [seq, vocab]
            start = prefix["input_ids"].shape[1]
            positions = torch.arange(start - 1, start - 1 + ids.shape[1])
            reference = -logprobs[positions, ids[0]].mean().item()
            assert nll[i] == pytest.approx(reference, abs=1e-4)


def test_end_to_end_boxed_verdict(tiny_models, image):
    result = verdict(
        image, "What is the largest value?", experts=tiny_models["experts"], verdict=tiny_models["boxed_verdict"], m=2, **FAST
    )
    assert result.lossless is False and result.mode == MODE_LABEL
    assert result.answer == "42" and result.boxed_found and result.answer_source == "boxed"
    assert result.verdict_text.strip() == "\\boxed{42}"
    assert len(result.expert_answers) == 3 and len(result.nll) == 3 and all(len(row) == 3 for row in result.nll)
    assert result.selected == select_consensus(consensus_scores(result.nll), 2)
    assert len(result.selected) == 2 and result.selected_experts == [tiny_models["experts"][i] for i in result.selected]
    assert len(result.reasoning) == 2 and len(result.reasoning_answers) == 2
    cost = result.cost.to_dict()
    assert set(cost) == {"answer", "score", "reason", "verdict", "total"}
    assert cost["score"]["forwards"] <= 6 and cost["score"]["tokens"] == 0
    assert cost["answer"]["tokens"] == sum(a.tokens for a in result.expert_answers) > 0
    assert cost["verdict"]["tokens"] == len("\\boxed{42}") + 1  # + end of turn
    assert cost["total"]["forwards"] == sum(cost[s]["forwards"] for s in ("answer", "score", "reason", "verdict"))
    assert cost["total"]["seconds"] >= 0 and cost["total"]["loads"] == 4
    json.dumps(result.to_dict())  # JSON-ready
    assert "not lossless" in result.summary()


def test_sequential_memory_matches_resident(tiny_models, image):
    import vlmspec

    loads_while_holding = []

    def counting_load(spec, *, drafter, device, dtype):
        loads_while_holding.append(len(runner.pool.loaded_indices))
        return vlmspec.load(target=spec, drafter=drafter, device=device, dtype=dtype)

    base = dict(experts=tiny_models["experts"], verdict=tiny_models["random_verdict"], m=2, **FAST)
    resident = verdict(image, "How many bars?", memory="resident", **base)
    runner = VerdictRunner(VerdictConfig(memory="sequential", **base), load_pipeline=counting_load)
    with runner:
        sequential = runner.run(image, "How many bars?")
        assert len(runner.pool.loaded_indices) == 1
    assert runner.pool.loaded_indices == []
    assert max(loads_while_holding) == 0  # never two models at once
    assert _comparable(sequential) == _comparable(resident)
    # 3 (answer) + 2 (score: the last expert is reused) + <= 2 (reason) + 1 (verdict)
    assert sequential.cost.answer.loads == 3 and sequential.cost.score.loads == 2
    assert sequential.cost.reason.loads <= 2 and sequential.cost.verdict.loads == 1
    assert resident.cost.total.loads == 4


def test_verdict_without_box_falls_back(tiny_models, image):
    result = verdict(
        image, "What is written?", experts=tiny_models["experts"], verdict=tiny_models["random_verdict"], m=3, **FAST
    )
    assert result.boxed_found is False
    assert result.answer_source in ("last_line", "consensus")
    if result.answer_source == "last_line":
        assert result.answer == fallback_answer(result.verdict_text)
    else:
        assert result.answer == result.answers[result.selected[0]]
    assert sorted(result.selected) == [0, 1, 2]


def test_fewer_experts_than_m(tiny_models, image):
    with pytest.raises(InputError, match="m=3 experts but only 2 were given"):
        verdict(image, "q", experts=tiny_models["experts"][:2], verdict=tiny_models["random_verdict"], m=3)


def test_expert_that_fails_to_load_is_named(tiny_models, image, tmp_path):
    missing = str(tmp_path / "no_such_expert")
    experts = [tiny_models["experts"][0], missing, tiny_models["experts"][2]]
    with pytest.raises(ModelLoadError, match="expert 1 .*no_such_expert"):
        verdict(image, "q", experts=experts, verdict=tiny_models["random_verdict"], m=2, **FAST)
    with pytest.raises(ModelLoadError, match="verdict model .*no_such_expert"):
        verdict(image, "q", experts=tiny_models["experts"], verdict=missing, m=2, memory="sequential", **FAST)
    not_a_checkpoint = tmp_path / "empty_dir"
    not_a_checkpoint.mkdir()
    experts = [tiny_models["experts"][0], str(not_a_checkpoint), tiny_models["experts"][2]]
    with pytest.raises(ModelLoadError, match="expert 1 .*empty_dir"):
        verdict(image, "q", experts=experts, verdict=tiny_models["random_verdict"], m=2, **FAST)


def test_empty_question_is_rejected(tiny_models, image):
    with pytest.raises(PromptError, match="question is empty"):
        verdict(image, "  ", experts=tiny_models["experts"], verdict=tiny_models["random_verdict"], m=2)


def test_run_verdict_method_for_the_eval_harness(tiny_models, image, tmp_path):
    config_path = tmp_path / "verdict.json"
    config_path.write_text(
        json.dumps({"experts": tiny_models["experts"], "verdict": tiny_models["boxed_verdict"], "m": 2, **FAST})
    )
    with VerdictRunner(config_path) as runner:  # the harness keeps one runner per benchmark
        answer, cost = run_verdict_method(config_path, image, "Which is largest?", runner=runner, baselines=True)
        assert answer == "42"
        assert cost["lossless"] is False and cost["mode"] == MODE_LABEL
        assert cost["forwards"] == cost["stages"]["total"]["forwards"] > 0
        assert [e["expert"] for e in cost["experts"]] == tiny_models["experts"]
        assert cost["verdict_alone"]["answer"] == "\\boxed"  # cut off at max_answer_tokens=6
        assert cost["verdict_alone"]["cost"]["tokens"] == 6
        assert runner.pool.loaded_indices == [0, 1, 2, 3]  # resident: kept for the next example
    answer_again, _ = run_verdict_method(str(config_path), image, "Which is largest?")
    assert answer_again == "42"


def test_cli_json_and_error(tiny_models, image, tmp_path, capsys):
    from PIL import Image

    image_path = tmp_path / "chart.png"
    Image.fromarray(image).save(image_path)
    parser = argparse.ArgumentParser(prog="vlmspec")
    add_verdict_parser(parser.add_subparsers(dest="command"))
    argv = ["verdict", "--image", str(image_path), "--question", "Largest value?", "--verdict", tiny_models["boxed_verdict"]]
    for path in tiny_models["experts"]:
        argv += ["--expert", path]
    argv += ["--m", "2", "--memory", "sequential", "--max-answer-tokens", "4", "--max-reasoning-tokens", "8"]
    args = parser.parse_args(argv + ["--json"])
    assert args.func is run_verdict_command
    assert run_verdict_command(args) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["answer"] == "42" and data["lossless"] is False and data["mode"] == MODE_LABEL
    assert run_verdict_command(parser.parse_args(argv)) == 0
    assert "not lossless" in capsys.readouterr().out
    args = parser.parse_args(argv[:7] + ["--expert", tiny_models["experts"][0], "--m", "3"])
    assert run_verdict_command(args) == 2
    assert "m=3 experts but only 1 were given" in capsys.readouterr().err
    assert "NOT LOSSLESS" in parser._subparsers._group_actions[0].choices["verdict"].format_help()


def test_drafter_changes_cost_not_result(tiny_models, image):
    base = dict(experts=tiny_models["experts"], verdict=tiny_models["boxed_verdict"], m=2, **FAST)
    plain = verdict(image, "Which is largest?", expert_drafter="none", verdict_drafter="none", **base)
    speculative = verdict(image, "Which is largest?", **base)  # prompt-lookup by default
    assert _comparable(plain) == _comparable(speculative)
    assert plain.cost.verdict.forwards == plain.cost.verdict.tokens  # one forward per token without a drafter
    with pytest.raises(InputError, match="verdict model .*Unknown drafter"):
        verdict(image, "q", verdict_drafter="no-such-drafter", **base)


def test_verdict_prompt_too_long_names_the_fix(tiny_models, image):
    with pytest.raises(PromptError, match="verdict model .*lower max_reasoning_tokens or m"):
        verdict(
            image,
            "q",
            experts=tiny_models["experts"],
            verdict=tiny_models["boxed_verdict"],
            m=2,
            max_answer_tokens=2,
            max_reasoning_tokens=2,
            max_verdict_tokens=1020,
        )


def test_preloaded_models_match_paths(tiny_models, image):
    import vlmspec
    from transformers import AutoModelForImageTextToText, AutoProcessor

    path0, path1, path2 = tiny_models["experts"]
    pair = (AutoModelForImageTextToText.from_pretrained(path0), AutoProcessor.from_pretrained(path0))
    pipeline = vlmspec.load(target=path1, drafter="prompt-lookup")
    base = dict(verdict=tiny_models["boxed_verdict"], m=2, **FAST)
    from_objects = verdict(image, "Largest?", experts=[pair, pipeline, path2], **base)
    from_paths = verdict(image, "Largest?", experts=tiny_models["experts"], **base)
    assert [a.answer for a in from_objects.expert_answers] == [a.answer for a in from_paths.expert_answers]
    assert from_objects.selected == from_paths.selected and from_objects.answer == "42"
    assert from_objects.experts[0] == path0  # named after the checkpoint it came from


def test_a_verdict_model_that_is_also_an_expert_is_loaded_once(tiny_models, image):
    """The demo config names the same checkpoint as an expert and as the verdict model: one load."""
    experts = tiny_models["experts"]
    result = verdict(image, "How many bars?", experts=experts, verdict=experts[1], m=2, **FAST)
    assert result.cost.total.loads == 3
    alone = verdict(image, "How many bars?", experts=experts, verdict=str(experts[1]) + "", m=2, memory="sequential",
                    **FAST)
    assert alone.answer == result.answer


def test_default_model_candidate_specs_resolve_against_the_config_folder(tmp_path):
    from vlmspec.verdict.config import VerdictConfig

    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "c.safetensors").write_bytes(b"")
    config = VerdictConfig.from_dict({"experts": ["vlmspec-default", "vlmspec-default@w/c.safetensors"],
                                      "verdict": "vlmspec-default@w/missing.safetensors", "m": 2},
                                     base_dir=tmp_path)
    assert config.experts[1] == f"vlmspec-default@{tmp_path / 'w' / 'c.safetensors'}"
    assert config.verdict == "vlmspec-default@w/missing.safetensors"  # left as written: the load names it


def test_a_missing_candidate_weights_file_is_one_clear_error(tmp_path):
    import vlmspec
    from vlmspec.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="no such weights file"):
        vlmspec.load(f"vlmspec-default@{tmp_path / 'nope.safetensors'}", "none")
    (tmp_path / "w.safetensors").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="training report w.json is missing"):
        vlmspec.load(f"vlmspec-default@{tmp_path / 'w.safetensors'}", "none")
