"""eval/bench_verify.py --quick: one run on the tiny test LLaVA reports plain, chain, static-tree and
dynamic-tree decoding in both modes (stock / CPU fast path) with identical greedy outputs."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "eval" / "bench_verify.py"


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_verify", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_reports_every_method_in_both_modes(tmp_path):
    bench = _load_bench()
    out = tmp_path / "bench_verify.md"
    assert bench.main(["--quick", "--threads", "1", "--out", str(out)]) == 0
    text = out.read_text()

    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 9 and cells[1] in ("stock", "fast"):
            rows[(cells[0], cells[1])] = cells
    for method in ("plain", "chain k=2", "chain k=4", "static tree", "dynamic tree"):
        for mode in ("stock", "fast"):
            assert (method, mode) in rows, f"no row for {method} ({mode}) in:\n{text}"
            cells = rows[(method, mode)]
            assert float(cells[2]) > 0  # tokens/s
            assert float(cells[4]) >= 1.0  # tau: bonus token included
            float(cells[7]), float(cells[8])  # speedups against plain (same mode) and plain stock
    assert rows[("plain", "stock")][7] == rows[("plain", "stock")][8] == "1.00"
    assert rows[("plain", "fast")][4:7] == ["1.00", "-", "-"]  # plain: tau 1, nothing drafted
    assert "Greedy outputs identical across all modes and methods: yes" in text
    assert "UNTRAINED EAGLE drafter" in text
    assert "(static tree)" in text and "(dynamic tree)" in text  # the tree sizes' verify costs
