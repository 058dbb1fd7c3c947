"""The eval plots (vlmspec.evaluation.plots): short method names, the files, what each plot
draws and leaves out, labels that never overlap; and the one-way imports runner -> report -> plots."""

import ast
from pathlib import Path

import pytest
from matplotlib.container import BarContainer

from vlmspec.evaluation import plots, report
from vlmspec.evaluation.plots import (
    PLOT_FILES,
    drafting_status,
    plot_acceptance,
    plot_accuracy_vs_speed,
    plot_speedup,
    short_method_name,
    short_method_names,
    place_labels,
    write_plots,
)

EAGLE = "eagle:/root/.cache/vlmspec/models/default_weights/drafters/eagle"


def _entry(speedup, accuracy, tau=None, curve=None, draft=None, spread=None, **extra):
    return {"speedup_total": speedup, "accuracy": accuracy, "tau": tau, "acceptance_per_position": curve,
            "mean_draft_length": draft, "speedup_by_repeat": spread, "drafter": None, **extra}


def make_summary() -> dict:
    """A summary like ``report.summarize``'s: baseline, no-draft loop, hf, drafters, auto, a verdict row."""
    spread = lambda mean, lo, hi: {"mean": mean, "std": (hi - lo) / 4, "min": lo, "max": hi, "n": 3}  # noqa: E731
    methods = {
        "plain": _entry(1.0, 0.5, tau=1.0, spread=spread(1.0, 1.0, 1.0)),
        "none": _entry(0.97, 0.5, tau=1.0, curve=[0.0, 0.0, 0.0]),
        "hf-prompt-lookup": _entry(1.1, 0.5, tau=1.3, spread=spread(1.1, 1.02, 1.19)),
        "prompt-lookup": _entry(1.0, 0.5, tau=1.1, curve=[0.4, 0.2, 0.1], draft=2.0,
                                spread=spread(1.0, 0.95, 1.04), drafter="prompt-lookup"),
        EAGLE: _entry(2.63, 0.5, tau=2.09, curve=[0.8, 0.6, 0.45, 0.3, 0.2], draft=5.0,
                      spread=spread(2.6, 2.5, 2.71), drafter=EAGLE),
        "auto": _entry(3.59, 0.52, tau=2.88, curve=[0.85, 0.7, 0.55, 0.4, 0.3], draft=5.0,
                       drafter="auto -> vispec:/root/.cache/x/drafters/vispec-default"),
        "verdict:eval/configs/verdict.json": _entry(0.4, 0.61, tau=None, mode="accuracy"),
    }
    return {"benchmark": {"name": "synthetic-long", "metric": "vqa"}, "baseline": "plain", "methods": methods}


# ----------------------------------------------------------------------- short names
@pytest.mark.parametrize("name, short", [
    ("plain", "plain"),
    ("none", "none"),
    ("prompt-lookup", "prompt-lookup"),
    ("prompt-lookup:3", "prompt-lookup:3"),
    ("hf-prompt-lookup:10", "hf-prompt-lookup:10"),
    ("hf-assisted:self", "hf-assisted:self"),
    (EAGLE, "eagle (eagle)"),
    ("vispec:vlmspec/models/default_weights/drafters/vispec-default/", "vispec (vispec-default)"),
    ("auto -> vispec:/long/path/vispec-default", "auto -> vispec (vispec-default)"),
    ("eagle:eagle-default?tree=dynamic&depth=6", "eagle:eagle-default?tree=dynamic&…"),
    ("eagle:/x/y/eagle-default?tree=dynamic&depth=6", "eagle (eagle-default?tree=dynamic&…)"),
    ("eagle:/x/eagle?depth=6", "eagle (eagle?depth=6)"),
    ("hf-assisted:C:\\models\\tiny-lm", "hf-assisted (tiny-lm)"),
    ("verdict:eval/configs/verdict.json [expert 0]", "verdict (verdict.json) [expert 0]"),
    ("model:llava-hf/llava-1.5-7b-hf", "model (llava-1.5-7b-hf)"),
])
def test_short_method_name(name, short):
    assert short_method_name(name) == short


def test_short_names_stay_distinct():
    names = ["eagle:/runs/a/eagle", "eagle:/runs/b/eagle", "eagle:/other/a/eagle",
             "eagle:e?tree=dynamic&depth=6", "eagle:e?tree=dynamic&depth=7", "plain"]
    short = short_method_names(names)
    assert len(set(short)) == len(names)
    assert short[1] == "eagle (b/eagle)"  # one more path component is enough for it
    assert short[0] == "eagle (runs/a/eagle)" and short[2] == "eagle (other/a/eagle)"
    assert short[3:5] == ["eagle:e?tree=dynamic&depth=6", "eagle:e?tree=dynamic&depth=7"]
    assert short[5] == "plain"
    # identical inputs, and a full name equal to another's short name, still come out distinct
    assert len(set(short_method_names(["x", "x", "eagle (eagle)", "eagle:/a/eagle"]))) == 4


def test_labels_use_what_auto_resolved_to():
    labels = plots.method_labels(make_summary()["methods"])
    assert labels["auto"] == "auto -> vispec (vispec-default)"
    assert labels[EAGLE] == "eagle (eagle)"
    assert labels["prompt-lookup"] == "prompt-lookup"


# ---------------------------------------------------------------------------- plots
def test_write_plots_writes_the_pngs(tmp_path):
    written = write_plots(make_summary(), tmp_path)
    assert set(written) == set(PLOT_FILES)
    for key, path in written.items():
        assert Path(path) == tmp_path / PLOT_FILES[key]
        assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temp files


def test_write_plots_still_importable_from_report():
    assert report.write_plots is write_plots and report.PLOT_FILES is PLOT_FILES


def test_acceptance_leaves_out_methods_that_do_not_draft(tmp_path):
    result = plot_acceptance(make_summary(), tmp_path / "acc.png")
    assert result.methods == ["prompt-lookup", "eagle (eagle)", "auto -> vispec (vispec-default)"]
    assert result.left_out == {
        "plain": "no drafting", "none": "no drafting",
        "hf-prompt-lookup": "no per-position acceptance recorded",
        "verdict (verdict.json)": "no per-position acceptance recorded",
    }
    ax = result.figure.axes[0]
    assert len(ax.get_lines()) == 3  # no flat zero line for "none"
    legend = ax.get_legend()
    assert [t.get_text().split("  (")[0] for t in legend.get_texts()] == result.methods
    result.figure.canvas.draw()
    renderer = result.figure.canvas.get_renderer()
    assert legend.get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1  # outside the axes
    notes = [t.get_text() for t in ax.texts if t.get_text().startswith("left out")]
    assert len(notes) == 1 and "none" in notes[0] and "hf-prompt-lookup" in notes[0]


def test_drafting_status():
    assert drafting_status("none", {"acceptance_per_position": [0.3]}) == "no drafting"
    assert drafting_status("plain", {"tau": 1.0}) == "no drafting"
    assert drafting_status("prompt-lookup", {"acceptance_per_position": [0.0, 0.0], "mean_draft_length": None,
                                             "tau": 1.0}) == "no drafting"
    # drafted but nothing accepted: a real (bad) curve, drawn
    assert drafting_status("eagle:x", {"acceptance_per_position": [0.0], "mean_draft_length": 3.0}) is None
    assert drafting_status("hf-assisted:self", {"tau": None}) == "no per-position acceptance recorded"


def test_acceptance_with_nothing_to_draw(tmp_path):
    summary = make_summary()
    summary["methods"] = {k: v for k, v in summary["methods"].items() if k in ("plain", "none")}
    result = plot_acceptance(summary, tmp_path / "acc.png")
    assert result.methods == [] and set(result.left_out) == {"plain", "none"}
    assert Path(result.path).stat().st_size > 0


def test_speedup_bars_carry_values_and_spread(tmp_path):
    summary = make_summary()
    summary["methods"]["broken"] = _entry(None, None)
    result = plot_speedup(summary, tmp_path / "speedup.png")
    ax = result.figure.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == result.methods
    texts = [t.get_text() for t in ax.texts]
    assert "2.63x ± 0.05" in texts and "3.59x" in texts and "n/a" in texts  # auto has no repeats
    assert len(texts) == len(summary["methods"])
    bars = next(c for c in ax.containers if isinstance(c, BarContainer))
    assert [p.get_width() for p in bars.patches] == pytest.approx([v or 0.0 for v in result.values])
    assert bars.errorbar is not None  # whiskers where the summary has a repeat spread
    segments = bars.errorbar.lines[2][0].get_segments()
    eagle = result.methods.index("eagle (eagle)")
    xs = sorted(x for x, _ in segments[eagle])
    assert xs == pytest.approx([2.5, 2.71])  # min..max over the repeats


def test_speedup_without_repeats_has_no_whiskers(tmp_path):
    summary = make_summary()
    for entry in summary["methods"].values():
        entry["speedup_by_repeat"] = None
    result = plot_speedup(summary, tmp_path / "speedup.png")
    bars = next(c for c in result.figure.axes[0].containers if isinstance(c, BarContainer))
    assert bars.errorbar is None
    assert "±" not in " ".join(t.get_text() for t in result.figure.axes[0].texts)


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_scatter_labels_do_not_overlap(tmp_path):
    # plain and prompt-lookup sit on the same point, hf-prompt-lookup next to them
    result = plot_accuracy_vs_speed(make_summary(), tmp_path / "avs.png")
    assert "plain" in result.methods and "prompt-lookup" in result.methods
    boxes = result.label_boxes
    assert len(boxes) == len(result.methods)
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert not _overlap(boxes[i], boxes[j]), (result.methods[i], result.methods[j])
    # and none covers a point
    ax = result.figure.axes[0]
    radius = 3.5 * result.figure.dpi / 72
    for x, y in ((m["speedup_total"], m["accuracy"]) for m in make_summary()["methods"].values()):
        px, py = ax.transData.transform((x, y))
        assert all(not _overlap(box, (px - radius, py - radius, px + radius, py + radius)) for box in boxes)


@pytest.mark.parametrize("count", [2, 5])
def test_scatter_many_methods_at_one_point(tmp_path, count):
    methods = {f"m{i}": _entry(1.5, 0.5) for i in range(count)}
    summary = {"benchmark": {"name": "b", "metric": "exact"}, "baseline": "m0", "methods": methods}
    result = plot_accuracy_vs_speed(summary, tmp_path / "avs.png")
    boxes = result.label_boxes
    assert len(boxes) == count
    assert all(not _overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_place_labels_separates_labels_and_avoids_obstacles():
    same = [(100.0, 100.0)] * 3
    spots = place_labels(same, [(40.0, 10.0)] * 3, pad=2.0)
    assert all(not _overlap(a.box, b.box) for i, a in enumerate(spots) for b in spots[i + 1:])
    assert (spots[0].ha, spots[0].dy, spots[0].ring) == ("left", 0.0, 0)  # first: beside the point, right
    assert spots[1].ha == "right"  # then the other side
    # a lone label next to an obstacle on its preferred side goes to the other side
    blocker = (105.0, 90.0, 200.0, 110.0)
    [spot] = place_labels([(100.0, 100.0)], [(40.0, 10.0)], obstacles=[blocker])
    assert spot.ha == "right" and not _overlap(spot.box, blocker)
    # boxed in on all near sides: moves rings away (a leader line), still free of everything
    walls = [(0.0, 85.0, 300.0, 115.0)]
    [far] = place_labels([(100.0, 100.0)], [(40.0, 10.0)], obstacles=walls)
    assert far.ring > 0 and not _overlap(far.box, walls[0])
    # keeps inside the bounds while it can
    [inside] = place_labels([(290.0, 100.0)], [(40.0, 10.0)], bounds=(0.0, 0.0, 300.0, 300.0))
    assert inside.box[2] <= 300.0


def test_scatter_without_accuracy(tmp_path):
    summary = make_summary()
    for entry in summary["methods"].values():
        entry["accuracy"] = None
    result = plot_accuracy_vs_speed(summary, tmp_path / "avs.png")
    assert result.methods == [] and len(result.left_out) == len(summary["methods"])
    assert any("no accuracy" in t.get_text() for t in result.figure.axes[0].texts)


# -------------------------------------------------------------------------- imports
def _imports(module) -> set[str]:
    """Modules of vlmspec.evaluation a module imports (anywhere in it, TYPE_CHECKING included)."""
    tree = ast.parse(Path(module.__file__).read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                found.add(node.module.split(".")[0])
            elif node.module and node.module.startswith("vlmspec.evaluation."):
                found.add(node.module.split(".")[2])
    return found


def test_imports_point_one_way():
    from vlmspec.evaluation import runner

    assert "report" in _imports(runner)
    assert "runner" not in _imports(report) and "runner" not in _imports(plots)
    assert "report" not in _imports(plots)
