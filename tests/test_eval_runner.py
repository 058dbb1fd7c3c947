"""The side-by-side runner, the summary/report and the CLI: fast fakes first, then end to end
on a tiny random LLaVA target (3 samples) through the real `vlmspec.load`."""

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from vlmspec.errors import InputError
from vlmspec.evaluation import cli as eval_cli
from vlmspec.evaluation.report import (
    PLOT_FILES,
    atomic_write_text,
    render_markdown,
    summarize_records,
)
from vlmspec.evaluation.runner import (
    RESULTS_FILE,
    EvalConfig,
    EvalError,
    Generation,
    MethodUnavailable,
    build_method,
    parse_method,
    run_eval,
)


# --------------------------------------------------------------------------- fakes
class FakePipe:
    """Stands in for vlmspec.load(...): a CPU 'target' and a prepare() that tags the prompt."""

    def __init__(self, **kwargs):
        self.target = SimpleNamespace(device=torch.device("cpu"), model=None, processor=None, tokenizer=None)

    def prepare(self, image, prompt):
        return {"prompt": prompt, "input_ids": torch.zeros(1, 3, dtype=torch.long)}


class FakeMethod:
    """Deterministic tokens from the prompt; `lossy_on` changes the tokens of some prompts."""

    def __init__(self, name, calls, lossy_on=(), fail_on=(), fail_warmup=False):
        self.name, self.calls = name, calls
        self.lossy_on, self.fail_on, self.fail_warmup = lossy_on, fail_on, fail_warmup

    def generate(self, inputs, sampling):
        warmup = sampling.max_new_tokens != 8
        self.calls.append((inputs["prompt"], self.name, "warmup" if warmup else "run"))
        if warmup and self.fail_warmup:
            raise RuntimeError("warm-up boom")
        if any(tag in inputs["prompt"] for tag in self.fail_on):
            raise RuntimeError("sample boom")
        tokens = [len(inputs["prompt"]) % 50, 7, 8, 9]
        if any(tag in inputs["prompt"] for tag in self.lossy_on):
            tokens[-1] = 99
        fast = self.name != "plain"
        return Generation(token_ids=tokens, text="red", wall_seconds=0.5 if fast else 1.0,
                          time_to_first_token=0.1, target_forwards=2 if fast else 4,
                          acceptance_per_position=[0.5, 0.25] if fast else None,
                          peak_memory_bytes=1 << 20, memory_delta_bytes=0)


def write_bench(tmp_path, n=3):
    image = tmp_path / "img.png"
    from PIL import Image

    Image.new("RGB", (8, 8), (255, 0, 0)).save(image)
    path = tmp_path / "bench.jsonl"
    path.write_text("".join(json.dumps({"id": f"s{i}", "image": "img.png", "question": f"question {i}?",
                                        "answers": ["red"]}) + "\n" for i in range(n)))
    return str(path)


def fake_run(tmp_path, methods=("plain", "A", "B"), calls=None, factory_kwargs=None, **config_kwargs):
    calls = [] if calls is None else calls
    factory_kwargs = factory_kwargs or {}

    def method_factory(spec, pipe, config, memory):
        if spec.name == "unavailable":
            raise MethodUnavailable("no such thing here")
        return FakeMethod(spec.name, calls, **factory_kwargs.get(spec.name, {}))

    config = EvalConfig(benchmark=config_kwargs.pop("benchmark", None) or write_bench(tmp_path),
                        out_dir=str(tmp_path / "out"), methods=methods, max_new_tokens=8,
                        warmup_max_new_tokens=2, **config_kwargs)
    run = run_eval(config, progress=False, pipe_factory=FakePipe, method_factory=method_factory)
    return run, calls


# ---------------------------------------------------------------- runner with fakes
def test_methods_interleaved_per_sample_after_warmup(tmp_path):
    run, calls = fake_run(tmp_path)
    warm = [c for c in calls if c[2] == "warmup"]
    measured = [(c[0].split("?")[0], c[1]) for c in calls if c[2] == "run"]
    assert [c[1] for c in warm] == ["plain", "A", "B"] and calls[:3] == warm   # warm-up first
    assert measured == [(f"question {i}", m) for i in range(3) for m in ("plain", "A", "B")]
    assert len(run.records) == 9 and run.newly_run == 9


def test_summary_speedup_tau_lossless_accuracy(tmp_path):
    run, _ = fake_run(tmp_path, factory_kwargs={"B": {"lossy_on": ("question 1",)}})
    methods = run.summary["methods"]
    assert methods["plain"]["speedup_total"] == pytest.approx(1.0)
    assert methods["A"]["speedup_total"] == pytest.approx(2.0)
    assert methods["A"]["tau"] == pytest.approx(2.0) and methods["plain"]["tau"] == pytest.approx(1.0)
    assert methods["A"]["lossless"] == 1.0
    assert methods["B"]["lossless"] == pytest.approx(2 / 3) and methods["B"]["mismatched_samples"] == ["s1"]
    assert methods["A"]["accuracy"] == 1.0                       # "red" == answer
    assert methods["A"]["acceptance_per_position"] == [0.5, 0.25]
    assert methods["A"]["tokens_per_second"] == pytest.approx(8.0)
    assert methods["A"]["time_per_output_token"] == pytest.approx((0.5 - 0.1) / 3)
    # 4-token answers: the report warns that speed figures say little and points to the long-form benchmark
    assert methods["plain"]["mean_new_tokens"] == 4
    assert len(run.summary["warnings"]) == 1 and "synthetic-long" in run.summary["warnings"][0]


def test_no_short_answer_warning_for_long_answers():
    from vlmspec.evaluation.report import SHORT_ANSWER_TOKENS, report_warnings

    assert report_warnings({"plain": {"mean_new_tokens": SHORT_ANSWER_TOKENS + 1}}, "plain") == []
    assert report_warnings({"plain": {"mean_new_tokens": 3.0}}, "plain")


def test_unavailable_and_failing_methods_are_reported_not_fatal(tmp_path):
    run, _ = fake_run(tmp_path, methods=("plain", "A", "unavailable", "W", "E"),
                      factory_kwargs={"W": {"fail_warmup": True}, "E": {"fail_on": ("question 2",)}})
    assert run.skipped["unavailable"] == "no such thing here"
    assert run.skipped["W"].startswith("failed during warm-up: RuntimeError: warm-up boom")
    entry = run.summary["methods"]["E"]
    assert entry["errors"] == 1 and entry["samples"] == 2 and "sample boom" in entry["error_examples"][0]
    markdown = (Path(run.config.out_dir) / "report.md").read_text()
    assert "`unavailable`: no such thing here" in markdown and "warm-up boom" in markdown


def test_baseline_failing_warmup_is_an_error(tmp_path):
    with pytest.raises(EvalError, match="baseline failed during warm-up"):
        fake_run(tmp_path, factory_kwargs={"plain": {"fail_warmup": True}})


def test_resume_skips_finished_pairs_and_cuts_torn_line(tmp_path):
    fake_run(tmp_path)
    results = tmp_path / "out" / RESULTS_FILE
    lines = results.read_text().splitlines(keepends=True)
    results.write_text("".join(lines[:4]) + lines[4][:20])          # interrupted mid-write
    run, calls = fake_run(tmp_path)
    measured = [(c[0].split("?")[0], c[1]) for c in calls if c[2] == "run"]
    assert measured == [("question 1", "A"), ("question 1", "B")] + [("question 2", m) for m in ("plain", "A", "B")]
    assert run.newly_run == 5
    records = [json.loads(line) for line in results.read_text().splitlines()]
    keys = [(r["sample_id"], r["method"], r["repeat"]) for r in records]
    assert len(keys) == 9 == len(set(keys))
    again, calls = fake_run(tmp_path)
    assert again.newly_run == 0 and calls == []                      # nothing left: no warm-up either


def test_resume_refuses_a_different_configuration(tmp_path):
    fake_run(tmp_path)
    with pytest.raises(EvalError, match=r"different run \(temperature: 0.0 -> 0.7\)"):
        fake_run(tmp_path, temperature=0.7)
    run, _ = fake_run(tmp_path, temperature=0.7, overwrite=True)
    assert run.newly_run == 9


def test_repeats_spread_and_sampling_has_no_losslessness(tmp_path):
    run, _ = fake_run(tmp_path, repeats=2, temperature=0.7, seed=3)
    entry = run.summary["methods"]["A"]
    assert entry["speedup_by_repeat"]["n"] == 2 and entry["speedup_by_repeat"]["std"] == pytest.approx(0.0)
    assert entry["lossless"] is None and entry["generations"] == 6
    assert "| A | 2.00x ± 0.00 |" in render_markdown(run.summary)
    assert "n/a at temperature > 0" in render_markdown(run.summary)


def test_outputs_written(tmp_path):
    run, _ = fake_run(tmp_path)
    out = Path(run.config.out_dir)
    for name in ["samples.jsonl", "summary.json", "report.md", "run.json", *PLOT_FILES.values()]:
        assert (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["methods"]) == {"plain", "A", "B"}
    assert summary["device"].startswith("cpu (") and "fast_cpu" not in summary["device"]  # the fake has none
    assert (out / "speedup.png").read_bytes()[:4] == b"\x89PNG"
    assert not list(out.glob(".*.tmp"))                               # atomic writes leave nothing behind


# --------------------------------------------------------------- summary arithmetic
def test_summarize_records_by_hand():
    def rec(sample, method, wall, tokens, repeat=0):
        return {"sample_id": sample, "method": method, "repeat": repeat, "wall_seconds": wall,
                "new_tokens": 4, "token_ids": tokens, "target_forwards": 4 if method == "plain" else 2,
                "time_to_first_token": None, "time_per_output_token": None, "score": None, "error": None}

    records = [rec("a", "plain", 2.0, [1]), rec("a", "m", 1.0, [1]),
               rec("b", "plain", 4.0, [2]), rec("b", "m", 1.0, [3]),
               rec("c", "plain", 9.0, [1]), {"sample_id": "c", "method": "m", "repeat": 0, "error": "x"},
               rec("old", "m", 1.0, [1])]                             # not in this run's samples
    summary = summarize_records(records, ["plain", "m"], ["a", "b", "c"], greedy=True)
    m = summary["m"]
    assert m["speedup_per_sample"] == {"a": 2.0, "b": 4.0}
    assert m["speedup_total"] == pytest.approx(6.0 / 2.0)             # ratio of totals, not mean of ratios
    assert m["speedup_median"] == pytest.approx(3.0)
    assert m["lossless"] == 0.5 and m["lossless_compared"] == 2 and m["errors"] == 1
    assert m["tau"] == pytest.approx(2.0)


# ------------------------------------------------------------------ config and CLI
def test_eval_config_validation():
    config = EvalConfig(benchmark="synthetic-qa", out_dir="x", methods=("prompt-lookup",))
    assert config.methods == ("plain", "prompt-lookup")               # the baseline always runs first
    for bad in (dict(methods=("a", "a")), dict(methods=()), dict(max_new_tokens=0), dict(repeats=0),
                dict(temperature=-1.0), dict(top_p=1.5), dict(limit=0), dict(methods=("hf-prompt-lookup:x",))):
        with pytest.raises(InputError):
            EvalConfig(benchmark="synthetic-qa", out_dir="x", **bad)


def test_parse_method():
    assert parse_method("plain").kind == "plain"
    assert parse_method("hf-assisted:self").argument == "self"
    assert parse_method("hf-assisted").argument is None
    assert parse_method("hf-prompt-lookup:7").argument == "7"
    spec = parse_method("model:/x/y")
    assert (spec.kind, spec.argument) == ("vlmspec", "model:/x/y")


def test_bare_hf_assisted_without_assistant_is_unavailable():
    pipe = FakePipe()
    config = EvalConfig(benchmark="synthetic-qa", out_dir="x", methods=("hf-assisted",))
    with pytest.raises(MethodUnavailable, match="no assistant model given"):
        build_method(parse_method("hf-assisted"), pipe, config, memory=None)


def test_cli_config_file_and_overrides(tmp_path):
    config_file = tmp_path / "c.json"
    config_file.write_text(json.dumps({"benchmark": "synthetic-long", "methods": ["plain", "prompt-lookup"],
                                       "limit": 5, "results_md": "R.md"}))
    import argparse

    parser = argparse.ArgumentParser()
    eval_cli.add_eval_parser(parser.add_subparsers())
    args = parser.parse_args(["eval", "--config", str(config_file), "--limit", "2", "--draft-length", "3"])
    config, results_md = eval_cli.config_from_args(args)
    assert (config.limit, config.draft_length, results_md) == (2, 3, "R.md")
    assert config.methods == ("plain", "prompt-lookup")
    assert config.out_dir.endswith("synthetic-long")
    assert args.func is eval_cli.run_eval_command
    command = eval_cli.command_line(config)
    assert command.startswith("vlmspec eval --benchmark synthetic-long") and "--limit 2" in command
    assert eval_cli.command_line(config, args) == f"vlmspec eval --config {config_file} --limit 2 --draft-length 3"
    config_file.write_text(json.dumps({"benchmark": "synthetic-long", "bogus": 1}))
    with pytest.raises(InputError, match="unknown keys bogus"):
        eval_cli.config_from_args(parser.parse_args(["eval", "--config", str(config_file)]))


def test_atomic_write_text_replaces(tmp_path):
    path = tmp_path / "f.txt"
    atomic_write_text(path, "one")
    atomic_write_text(path, "two")
    assert path.read_text() == "two" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]


# ------------------------------------------------------------------- end to end
LOSSLESS_METHODS = ("none", "prompt-lookup", "hf-assisted:self")


def test_end_to_end_tiny_target(tiny_llava_path, tmp_path, capsys):
    import vlmspec

    out = tmp_path / "out"
    argv = ["eval", "--benchmark", "synthetic-long", "--target", str(tiny_llava_path), "--limit", "3",
            "--max-new-tokens", "16", "--methods", "plain," + ",".join(LOSSLESS_METHODS) + ",hf-assisted,hf-prompt-lookup",
            "--out", str(out), "--no-progress", "--results-md", str(tmp_path / "RESULTS.md")]
    assert eval_cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| prompt-lookup |" in printed
    for name in ["samples.jsonl", "summary.json", "report.md", *PLOT_FILES.values()]:
        assert (out / name).stat().st_size > 0, name
    assert (tmp_path / "RESULTS.md").read_text() == (out / "report.md").read_text()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["benchmark"]["samples"] == 3
    assert "; fast_cpu: " in summary["device"]  # what fast_cpu decided is part of the run's record
    assert "no assistant model given" in summary["skipped_methods"]["hf-assisted"]
    # transformers' prompt lookup may copy <image> placeholders into its candidates and then fail
    # on LLaVA targets; either way it is reported (skipped or per-sample errors), never a crash.
    hf_lookup = summary["methods"].get("hf-prompt-lookup")
    assert "hf-prompt-lookup" in summary["skipped_methods"] or hf_lookup["errors"] or hf_lookup["lossless"] == 1.0
    for name in LOSSLESS_METHODS:
        entry = summary["methods"][name]
        assert entry["errors"] == 0 and entry["samples"] == 3, name
        assert entry["lossless"] == 1.0, (name, entry["mismatched_samples"])
        assert entry["speedup_total"] > 0 and entry["tau"] >= 1.0
    assert summary["methods"]["prompt-lookup"]["acceptance_per_position"] is not None
    assert summary["methods"]["prompt-lookup"]["drafter"] == "prompt-lookup"
    assert summary["methods"]["plain"].get("drafter") is None
    report = (out / "report.md").read_text()
    assert "Drafters (as resolved)" in report and "`prompt-lookup`: `prompt-lookup`, mean depth" in report
    assert ("**Warning:**" in report) == bool(summary["warnings"])
    records = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(records) >= 3 * (1 + len(LOSSLESS_METHODS))

    # Resume: drop the last two records as if interrupted; only those two are redone.
    lines = (out / "samples.jsonl").read_text().splitlines(keepends=True)
    (out / "samples.jsonl").write_text("".join(lines[:-2]))
    config, _ = eval_cli.config_from_args(eval_cli_args(argv))
    run = run_eval(config, progress=False, pipe_factory=vlmspec.load)
    assert run.newly_run == 2
    assert all(run.summary["methods"][m]["lossless"] == 1.0 for m in LOSSLESS_METHODS)
    again = run_eval(config, progress=False)
    assert again.newly_run == 0


def eval_cli_args(argv):
    import argparse

    parser = argparse.ArgumentParser()
    eval_cli.add_eval_parser(parser.add_subparsers())
    return parser.parse_args(argv)


def test_per_category_breakdown_and_set_level_scores(tmp_path):
    """Samples with a category get a per-category row (speedup against the baseline on those
    samples only); set-level scores are in the summary and the report."""
    image = tmp_path / "img.png"
    from PIL import Image

    Image.new("RGB", (8, 8), (255, 0, 0)).save(image)
    rows = [{"id": f"s{i}", "image": "img.png", "question": f"question {i}?", "answers": ["red" if i < 3 else "blue"],
             "category": "describe" if i < 3 else "chat"} for i in range(5)]
    path = tmp_path / "bench.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run, _ = fake_run(tmp_path, benchmark=str(path), factory_kwargs={"B": {"lossy_on": ("question 4",)}})
    per_category = run.summary["per_category"]
    assert sorted(per_category) == ["chat", "describe"]
    assert per_category["describe"]["A"]["speedup_total"] == pytest.approx(2.0)
    assert per_category["describe"]["A"]["accuracy"] == 1.0 and per_category["chat"]["A"]["accuracy"] == 0.0
    assert per_category["chat"]["B"]["lossless"] == pytest.approx(0.5)
    assert per_category["chat"]["plain"]["samples"] == 2
    assert run.summary["aggregates"]["A"]["score"] == pytest.approx(0.6)
    markdown = (Path(run.config.out_dir) / "report.md").read_text()
    assert "Per category" in markdown and "| chat | 2 |" in markdown
    assert "Set-level scores" in markdown
