"""Pipeline.autotune: fits the draft length or tree shape; outputs stay exact."""

from __future__ import annotations

from vlmspec import ModelDrafter, Pipeline, ScheduleConfig, Target
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
    assert summary.startswith("dynamic tree") and tree.drafter.config.tree == "dynamic"
    assert tree.schedule.draft_length == tree.drafter.config.depth
    assert [tree.generate(i, p, max_new_tokens=20).token_ids for i, p in pairs] == expected
