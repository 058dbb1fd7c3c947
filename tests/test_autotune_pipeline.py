"""Pipeline.autotune: fits the draft length or tree shape; outputs stay exact."""

from __future__ import annotations

from vlmspec import ModelDrafter, Pipeline, ScheduleConfig, Target, tuning
from vlmspec.drafters import EagleConfig, EagleDrafter

from conftest import random_image


def test_autotune_chain_and_tree_keep_outputs_exact(tiny_llava_path, tmp_path, monkeypatch):
    monkeypatch.setenv("VLMSPEC_HOME", str(tmp_path))
    target = Target.load(tiny_llava_path)
    pairs = [(random_image(1), "Describe this."), (random_image(2), "What is it?")]
    reference = Pipeline(target, ModelDrafter.from_pretrained(tiny_llava_path), ScheduleConfig.parse(3))
    expected = [reference.generate(i, p, max_new_tokens=20).token_ids for i, p in pairs]

    chain = Pipeline(target, ModelDrafter.from_pretrained(tiny_llava_path), ScheduleConfig.parse(3))
    summary = chain.autotune(pairs, max_new_tokens=16)
    assert summary.startswith("chain draft length") and chain.schedule.kind == "fixed"
    # here the "drafter" is a full copy of the target, as costly per token as verifying: any k
    # in range is a legal choice (choose_chain_length itself is unit-tested in test_autotune.py)
    assert 0 <= chain.schedule.draft_length <= chain.schedule.max_length
    assert [chain.generate(i, p, max_new_tokens=20).token_ids for i, p in pairs] == expected

    eagle = EagleDrafter.from_target(target, EagleConfig(tree="chain"), init_layer_from_target=True)
    tree = Pipeline(target, eagle, ScheduleConfig.parse(3))
    summary = tree.autotune(pairs, max_new_tokens=16)
    # a tree-capable drafter: the best chain and the best tree are both timed, the faster kept
    assert "tok/s chain vs" in summary and "tok/s tree" in summary
    if summary.startswith("dynamic tree"):
        assert tree.drafter.config.tree == "dynamic" and tree.schedule.draft_length == tree.drafter.config.depth
    else:
        assert summary.startswith("chain draft length") and tree.drafter.config.tree == "chain"
        assert tree.schedule.draft_length == 0 or tree.drafter.config.depth == tree.schedule.draft_length
    assert [tree.generate(i, p, max_new_tokens=20).token_ids for i, p in pairs] == expected


def test_autotune_keeps_the_shape_measured_faster(tiny_llava_path, tmp_path, monkeypatch):
    """Whichever of chain and tree the timing pass reports faster is the one kept."""
    monkeypatch.setenv("VLMSPEC_HOME", str(tmp_path))
    target = Target.load(tiny_llava_path)
    pairs = [(random_image(3), "Describe this.")]
    for faster in ("chain", "tree"):
        eagle = EagleDrafter.from_target(target, EagleConfig(tree="chain"), init_layer_from_target=True)
        pipe = Pipeline(target, eagle, ScheduleConfig.parse(3))
        speeds = {"chain": 1.0, "tree": 1.0, faster: 2.0}
        monkeypatch.setattr(tuning, "measure_speed",
                            lambda pipe, drafter, schedule, pairs, n: speeds[drafter.config.tree == "dynamic" and "tree" or "chain"])
        summary = pipe.autotune(pairs, max_new_tokens=8)
        assert pipe.drafter.config.tree == ("dynamic" if faster == "tree" else "chain"), summary
