"""The 7B recipes (train/drafters/llava-1.5-7b, llava-next-7b): their configs load through the
trainer's own config loading, the LLaVA-format converter writes rows the jsonl source reads, and
train/drafters/gpu_smoke.sh runs end to end on the CPU with a tiny random target of each kind
(about 20 s each on two loaded cores)."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vlmspec.training.cli import _add_arguments, _config_from_args
from vlmspec.training.config import SourceConfig, TrainConfig
from vlmspec.training.data import load_source

REPO = Path(__file__).resolve().parents[1]
RECIPES = {
    "llava-1.5-7b": ("llava-hf/llava-1.5-7b-hf", 4, 2, 2048),
    "llava-next-7b": ("llava-hf/llava-v1.6-vicuna-7b-hf", 2, 4, 4096),
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_recipe_config_loads_like_the_cli_loads_it(recipe, tmp_path):
    path = REPO / "train" / "drafters" / recipe / "train.json"
    target, batch, accum, max_length = RECIPES[recipe]
    config = TrainConfig.from_json(path)
    assert (config.target, config.batch_size, config.grad_accum, config.data.max_length) == (target, batch, accum,
                                                                                            max_length)
    assert config.batch_size * config.grad_accum * 8 == 64  # the global batch the README's arithmetic uses
    assert (config.mixed_precision, config.target_dtype, config.drafter) == ("bf16", "bfloat16", "eagle")
    assert config.data.self_distill.enabled and config.data.self_distill.temperature == 0
    (source,) = config.data.sources
    assert source.kind == "jsonl" and source.path == "data/llava-instruct/train.jsonl"
    assert config.eval.source.path == "data/llava-instruct/heldout.jsonl"
    parser = argparse.ArgumentParser()
    _add_arguments(parser)
    args = parser.parse_args(["--config", str(path), "--target", "/models/x", "--output-dir", str(tmp_path),
                              "--set", "max_steps=5", "--no-progress"])
    loaded = _config_from_args(args)
    assert (loaded.target, loaded.output_dir, loaded.max_steps, loaded.progress_bar) == ("/models/x", str(tmp_path),
                                                                                         5, False)
    assert loaded.replace(target=config.target, output_dir=config.output_dir, max_steps=config.max_steps,
                          progress_bar=config.progress_bar) == config
    assert (path.parent / "README.md").is_file()


def test_llava_format_converter_writes_rows_the_jsonl_source_reads(tmp_path):
    rows = [
        {"id": "a", "image": "coco/1.jpg", "conversations": [{"from": "human", "value": "<image>\nWhat is it?"},
                                                              {"from": "gpt", "value": "A cat."}]},
        {"id": "a", "image": "coco/2.jpg", "conversations": [{"from": "human", "value": "Count them.\n<image>"}]},
        {"id": "b", "conversations": [{"from": "human", "value": "Text only"}]},
        {"id": "c", "image": "coco/3.jpg", "conversations": [{"from": "gpt", "value": "no question"}]},
    ]
    source = tmp_path / "llava.json"
    source.write_text(json.dumps(rows))
    script = REPO / "train" / "drafters" / "llava-1.5-7b" / "make_jsonl.py"
    done = subprocess.run([sys.executable, str(script), str(source), "--out", str(tmp_path / "out"), "--heldout", "1"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    train = load_source(SourceConfig(kind="jsonl", path=str(tmp_path / "out" / "train.jsonl"), image_root="/img"))
    held = load_source(SourceConfig(kind="jsonl", path=str(tmp_path / "out" / "heldout.jsonl"), image_root="/img"))
    samples = train + held
    assert sorted(s.id for s in samples) == ["llava/a", "llava/a#2"]  # unique ids; no text-only / answerless rows
    assert sorted(s.prompt for s in samples) == ["Count them.", "What is it?"]
    assert all(s.response is None and s.problem is None and s.images[0].startswith("/img/coco/") for s in samples)


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_gpu_smoke_script_runs_on_the_cpu_with_a_tiny_target(recipe, tmp_path):
    env = {**os.environ, "SMOKE_TINY": "1", "SMOKE_OUT": str(tmp_path / "smoke"), "SMOKE_STEPS": "4",
           "HF_HUB_OFFLINE": "1", "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", str(REPO / "train" / "drafters" / "gpu_smoke.sh"), recipe], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "gpu_smoke: OK" in output and "lossless 100%" in output, output[-4000:]
    summary = json.loads((tmp_path / "smoke" / "eval" / "summary.json").read_text())
    assert any(name.startswith("eagle:") for name in summary["methods"])
    state = json.loads((tmp_path / "smoke" / "train" / "checkpoints" / "step-00000004" / "trainer_state.json").read_text())
    assert state["config"]["drafter_config"]["tree"] == "dynamic" and state["config"]["mixed_precision"] == "no"
