"""The eval harness with `--methods verdict:CONFIG`: Speculative Verdict next to each single
expert and the verdict model alone, end to end on tiny random LLaVA models (2 samples)."""

import json

import pytest
import torch
from PIL import Image

from vlmspec.errors import InputError
from vlmspec.evaluation import cli as eval_cli
from vlmspec.evaluation.runner import parse_method, run_eval
from vlmspec.testing import TinyLlavaConfig, save_tiny_llava
from vlmspec.verdict import MODE_LABEL


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny models run fastest on one thread (no oversubscription on a shared 2-core box)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_parse_verdict_method():
    spec = parse_method("verdict:configs/v.json")
    assert (spec.kind, spec.argument) == ("verdict", "configs/v.json")
    for bad in ("verdict", "verdict:"):
        with pytest.raises(InputError, match="Speculative Verdict config file"):
            parse_method(bad)


def test_eval_verdict_end_to_end(tiny_llava_path, tmp_path, capsys):
    experts = [str(save_tiny_llava(tmp_path / f"expert{i}", TinyLlavaConfig(), seed=10 + i)) for i in range(3)]
    verdict_model = str(save_tiny_llava(tmp_path / "verdict", TinyLlavaConfig(), seed=20))
    config_path = tmp_path / "verdict.json"
    config_path.write_text(json.dumps({"experts": experts, "verdict": verdict_model, "m": 2, "max_answer_tokens": 4,
                                       "max_reasoning_tokens": 8, "max_verdict_tokens": 8}))
    Image.new("RGB", (16, 16), (255, 0, 0)).save(tmp_path / "img.png")
    bench = tmp_path / "bench.jsonl"
    bench.write_text("".join(json.dumps({"id": f"s{i}", "image": "img.png", "question": f"Which color {i}?",
                                         "answers": ["red"]}) + "\n" for i in range(2)))
    method = f"verdict:{config_path}"
    out = tmp_path / "out"
    argv = ["eval", "--benchmark", str(bench), "--target", str(tiny_llava_path), "--max-new-tokens", "8",
            "--methods", f"plain,{method},verdict:{tmp_path / 'missing.json'}", "--out", str(out), "--no-progress"]
    assert eval_cli.main(argv) == 0
    printed = capsys.readouterr().out

    summary = json.loads((out / "summary.json").read_text())
    rows = [method, *(f"{method} [expert {i}]" for i in range(3)), f"{method} [verdict alone]"]
    assert list(summary["methods"]) == ["plain", *rows]
    assert "not found" in summary["skipped_methods"][f"verdict:{tmp_path / 'missing.json'}"]
    for row in rows:
        entry = summary["methods"][row]
        assert entry["samples"] == 2 and entry["errors"] == 0, (row, entry["error_examples"])
        assert entry["mode"] == MODE_LABEL and entry["lossless"] is None
        assert entry["accuracy"] is not None and entry["speedup_total"] > 0 and entry["target_forwards"] > 0
    models = [summary["methods"][row]["model"] for row in rows[1:]]
    assert models == [*experts, verdict_model]

    verdict_entry = summary["methods"][method]
    assert set(verdict_entry["stages"]) == {"answer", "score", "reason", "verdict", "total"}
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    by_row = {(r["sample_id"], r["method"]): r for r in records}
    plain_wall = sum(by_row[(s, "plain")]["wall_seconds"] for s in ("s0", "s1"))
    verdict_wall = sum(by_row[(s, method)]["wall_seconds"] for s in ("s0", "s1"))
    assert verdict_entry["speedup_total"] == pytest.approx(plain_wall / verdict_wall)
    for sample_id in ("s0", "s1"):
        record = by_row[(sample_id, method)]
        total = record["stages"]["total"]
        assert (record["target_forwards"], record["new_tokens"]) == (total["forwards"], total["tokens"])
        assert record["wall_seconds"] == pytest.approx(total["seconds"])
        assert len(record["selected_experts"]) == 2
        expert = by_row[(sample_id, f"{method} [expert 1]")]
        assert expert["group"] == method and expert["new_tokens"] <= 4

    report = (out / "report.md").read_text()
    assert report.strip() in printed
    assert f"| {method} — accuracy mode (not lossless) |" in report
    assert f"## `{method}`: accuracy mode (not lossless)" in report
    assert report.count("n/a (not lossless)") == len(rows)
    for row in rows:
        assert f"| {row} |" in report
    for stage in ("answer", "score", "reason", "verdict", "total"):
        assert f"| {stage} |" in report

    # Resume: everything is there, nothing is redone (the verdict's own record comes last).
    config, _ = eval_cli.config_from_args(eval_cli_args(argv))
    assert run_eval(config, progress=False, write_report=False).newly_run == 0


def eval_cli_args(argv):
    import argparse

    parser = argparse.ArgumentParser()
    eval_cli.add_eval_parser(parser.add_subparsers())
    return parser.parse_args(argv)
