"""The PNG plots of an eval run, drawn from its summary dict (``report.summarize``'s output).

Three plots, each readable at a glance (matplotlib, Agg canvas, written atomically):

* ``speedup.png``: one horizontal bar per method with its speedup (ratio of totals) written
  on the bar; with repeats, whiskers span the min..max of the per-repeat ratios and the label
  adds ± their std (``speedup_by_repeat``);
* ``acceptance.png``: acceptance by draft position of the methods that draft, legend outside
  the axes; methods that do not draft (``plain``, ``none``, ...) or record no per-position
  acceptance (transformers' methods, verdict rows) are left out, and a note names them;
* ``accuracy_vs_speed.png``: accuracy against speedup, one point per method (whiskers: min..max
  over repeats), each label placed where it overlaps no other label and no point
  (:func:`place_labels`; leader lines where a label had to move away from its point).

Method names are shortened for the plots (:func:`short_method_name`: kind + last path
component, long queries cut), and kept distinct (:func:`short_method_names`). Each ``plot_*``
function returns a :class:`PlotResult` saying what it drew, so tests need not read pixels.
This module works on plain dicts and never imports the runner or the report.
"""

from __future__ import annotations

import io
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_bytes

PLOT_FILES = {"speedup": "speedup.png", "acceptance": "acceptance.png",
              "accuracy_vs_speed": "accuracy_vs_speed.png"}
QUERY_CHARS = 16  # a drafter query longer than this is cut at a parameter boundary ("&…")
_FULL = 10_000  # short-name level meaning "the full name"
_ROW_SUFFIX = re.compile(r"^(?P<head>.*?)(?P<tail>\s+\[[^\]]*\])$")  # "verdict:C [expert 0]"
_NO_DRAFTING = "no drafting"
_NO_CURVE = "no per-position acceptance recorded"


# ----------------------------------------------------------------------- short names
def _short_query(query: str, limit: int | None) -> str:
    params = [p for p in query.split("&") if p]
    if limit is None or len(query) <= limit:
        return "&".join(params)
    kept = params[:1]
    for param in params[1:]:
        if len("&".join(kept + [param])) > limit:
            break
        kept.append(param)
    return "&".join(kept) + ("&…" if len(kept) < len(params) else "")


def _shorten(name: str, level: int = 0) -> str:
    """``name`` at a level of detail: 0 = last path component and a cut query; each level
    above keeps one more path component and the whole query; ``_FULL`` = the name itself."""
    text = name.strip()
    if level >= _FULL or not text:
        return text
    tail = ""
    match = _ROW_SUFFIX.match(text)
    if match:
        text, tail = match["head"], match["tail"]
    if " -> " in text:  # "auto -> eagle:DIR": what auto resolved to
        head, _, rest = text.partition(" -> ")
        return f"{head.strip()} -> {_shorten(rest, level)}{tail}"
    kind, colon, argument = text.partition(":")
    if not colon or not argument:
        return text + tail
    path, question, query = argument.partition("?")
    query = _short_query(query, None if level else QUERY_CHARS) if question else ""
    if "/" in path or "\\" in path:
        parts = [p for p in re.split(r"[\\/]+", path) if p not in ("", ".")]
        path = "/".join(parts[-(level + 1):]) if parts else path
        return f"{kind} ({path}{'?' + query if query else ''}){tail}"
    return f"{kind}:{path}{'?' + query if query else ''}{tail}"


def short_method_name(name: str) -> str:
    """A method or drafter spec shortened for a plot: ``eagle:/x/drafters/eagle`` -> ``eagle (eagle)``,
    ``auto -> vispec:/x/vispec-default`` -> ``auto -> vispec (vispec-default)``, a query longer than
    ``QUERY_CHARS`` cut (``eagle:eagle-default?tree=dynamic&…``); ``plain``, ``prompt-lookup:3``,
    ``hf-assisted:self`` stay as they are. Use :func:`short_method_names` for several names: it
    keeps them distinct."""
    return _shorten(name)


def short_method_names(names: list[str]) -> list[str]:
    """:func:`short_method_name` of each name, made distinct: names that would collide keep more
    of their path and their whole query, then their full name, then get a ``#k`` suffix."""
    names = list(names)
    levels = [0] * len(names)
    for _ in range(64):
        short = [_shorten(n, lvl) for n, lvl in zip(names, levels)]
        clashing = [i for i, s in enumerate(short) if short.count(s) > 1]
        progressed = False
        for i in clashing:
            if levels[i] >= _FULL:
                continue
            nxt = levels[i] + 1
            if _shorten(names[i], nxt) == short[i]:  # no more path to show: the full name
                nxt = _FULL
            levels[i], progressed = nxt, True
        if not progressed:
            break
    short = [_shorten(n, lvl) for n, lvl in zip(names, levels)]
    taken, result = set(short), []
    for s in short:  # left: identical inputs, or a full name equal to another's short one
        label, k = s, 2
        while label in result or (label != s and label in taken):
            label, k = f"{s} #{k}", k + 1
        result.append(label)
    return result


def method_labels(methods: dict[str, dict]) -> dict[str, str]:
    """Method name -> its plot label; a method that resolved to another drafter ("auto") is
    labelled with what it resolved to (``auto -> eagle (eagle)``)."""
    sources = []
    for name, entry in methods.items():
        drafter = (entry or {}).get("drafter")
        sources.append(drafter if isinstance(drafter, str) and drafter.startswith(f"{name} -> ") else name)
    return dict(zip(methods, short_method_names(sources)))


def drafting_status(name: str, entry: dict, baseline: str = "plain") -> str | None:
    """None if the method drafts and has an acceptance curve to plot, else why it has none:
    "no drafting" (the baseline, ``none``, a curve of zeros with no draft ever made) or "no
    per-position acceptance recorded" (transformers' methods, accuracy modes, tau > 1 without one)."""
    curve = entry.get("acceptance_per_position") or []
    kind = name.strip().partition(":")[0]
    if name == baseline or kind == "none":
        return _NO_DRAFTING
    if curve:
        return None if any(curve) or entry.get("mean_draft_length") else _NO_DRAFTING
    tau = entry.get("tau")
    if kind.startswith("hf-") or entry.get("mode") or (tau is not None and tau > 1.0 + 1e-9):
        return _NO_CURVE
    return _NO_DRAFTING


# --------------------------------------------------------------------------- drawing
@dataclass
class PlotResult:
    """What one plot shows: the file, the methods drawn (labels, in order) and the ones left out
    (label -> why); for the scatter, each label's box in display pixels after drawing."""

    path: str
    methods: list[str]
    left_out: dict[str, str] = field(default_factory=dict)
    values: list[float | None] = field(default_factory=list)
    label_boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    figure: Any = None


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def _save_figure(fig, path: Path) -> None:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buffer.getvalue())


def _repeat_spread(entry: dict) -> dict | None:
    spread = entry.get("speedup_by_repeat")
    return spread if spread and spread.get("n", 0) > 1 else None


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def plot_speedup(summary: dict, path: str | os.PathLike) -> PlotResult:
    """Horizontal bars of the speedup vs the baseline, values on the bars, min..max whiskers over repeats."""
    methods = summary["methods"]
    baseline = summary.get("baseline", "plain")
    labels = method_labels(methods)
    names = list(methods)
    values = [methods[n].get("speedup_total") for n in names]
    spreads = [_repeat_spread(methods[n]) for n in names]
    fig = _figure(6.4, 0.45 * len(names) + 1.4)
    ax = fig.add_subplot()
    ys = list(range(len(names)))[::-1]  # first method on top
    low = [max(0.0, v - s["min"]) if v is not None and s else 0.0 for v, s in zip(values, spreads)]
    high = [max(0.0, s["max"] - v) if v is not None and s else 0.0 for v, s in zip(values, spreads)]
    colors = ["0.6" if n == baseline else ("tab:orange" if methods[n].get("mode") else "tab:blue") for n in names]
    has_spread = any(spreads)
    ax.barh(ys, [v or 0.0 for v in values], color=colors, height=0.6,
            xerr=[low, high] if has_spread else None, capsize=3, error_kw={"elinewidth": 1, "ecolor": "0.2"})
    ax.axvline(1.0, color="0.3", linestyle="--", linewidth=1)
    top = max([(v or 0.0) + h for v, h in zip(values, high)] + [1.0])
    for y, v, h, s in zip(ys, values, high, spreads):
        text = "n/a" if v is None else f"{v:.2f}x" + (f" ± {s['std']:.2f}" if s else "")
        ax.text((v or 0.0) + h + 0.015 * top, y, text, va="center", ha="left", fontsize=8)
    ax.set_xlim(0, top * 1.25)
    ax.set_yticks(ys, [labels[n] for n in names], fontsize=8)
    ax.set_ylim(-0.6, len(names) - 0.4)
    ax.set_xlabel(f"speedup vs {baseline} (ratio of total wall times)")
    notes = []
    if has_spread:
        notes.append(f"whiskers: min..max over {max(s['n'] for s in spreads if s)} repeats, ± = std")
    if any(methods[n].get("mode") for n in names):
        notes.append("orange: accuracy modes (not lossless)")
    title = f"Speedup on {summary['benchmark']['name']}"
    ax.set_title(title + (f"\n({'; '.join(notes)})" if notes else ""), fontsize=10)
    _save_figure(fig, Path(path))
    return PlotResult(str(path), [labels[n] for n in names], values=values, figure=fig)


def plot_acceptance(summary: dict, path: str | os.PathLike) -> PlotResult:
    """Acceptance rate by draft position of the drafting methods; the others are named in a note."""
    methods = summary["methods"]
    baseline = summary.get("baseline", "plain")
    labels = method_labels(methods)
    drawn, left_out = [], {}
    for name, entry in methods.items():
        reason = drafting_status(name, entry, baseline)
        if reason:
            left_out[labels[name]] = reason
        else:
            drawn.append(name)
    fig = _figure(6.0, 3.6)
    ax = fig.add_subplot()
    markers = "osD^vP*X"
    for i, (name, color) in enumerate(zip(drawn, _colors(len(drawn)))):
        curve = methods[name]["acceptance_per_position"]
        tau = methods[name].get("tau")
        label = labels[name] + (f"  (tau {tau:.2f})" if tau is not None else "")
        ax.plot(range(1, len(curve) + 1), [math.nan if c is None else c for c in curve],
                marker=markers[i % len(markers)], color=color, label=label)
    if drawn:
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize=8, frameon=False)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylim(0, 1.05)
    else:
        ax.text(0.5, 0.5, "no method drafts with per-position acceptance", ha="center", va="center",
                transform=ax.transAxes)
    if left_out:
        by_reason: dict[str, list[str]] = {}
        for label, reason in left_out.items():
            by_reason.setdefault(reason, []).append(label)
        note = "; ".join(f"{reason}: {', '.join(items)}" for reason, items in by_reason.items())
        ax.annotate(f"left out ({note})", xy=(0, 0), xycoords="axes fraction", xytext=(0, -34),
                    textcoords="offset points", va="top", ha="left", fontsize=7, color="0.35", wrap=True)
    ax.set_xlabel("draft position")
    ax.set_ylabel("acceptance rate")
    ax.set_title("Acceptance by draft position", fontsize=10)
    ax.grid(alpha=0.3)
    _save_figure(fig, Path(path))
    return PlotResult(str(path), [labels[n] for n in drawn], left_out=left_out, figure=fig)


Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in display units


@dataclass(frozen=True)
class LabelSpot:
    """Where a label goes: its offset from its point, its alignment, its box, and its ring (0:
    next to the point; k > 0: k label heights above or below it, drawn with a leader line)."""

    dx: float
    dy: float
    ha: str
    box: Box
    ring: int


def _clash(a: Box, b: Box, pad: float) -> bool:
    return a[0] < b[2] + pad and b[0] < a[2] + pad and a[1] < b[3] + pad and b[1] < a[3] + pad


def place_labels(anchors: list[tuple[float, float]], sizes: list[tuple[float, float]], *,
                 obstacles: list[Box] = (), prefer: list[str] | None = None, bounds: Box | None = None,
                 gap: float = 8.0, pad: float = 2.0) -> list[LabelSpot]:
    """A spot for each label (display units) that overlaps no other label and no obstacle (the
    markers, whiskers): in turn, each label tries beside its point on the ``prefer`` side
    ("right"/"left"), the other side, above, below, then beside it 1, 2, ... label heights up or
    down; the first free spot inside ``bounds`` wins (outside only if none is free within a few
    rings). Deterministic; always ends, since far enough up every spot is free."""
    placed: list[Box] = []
    spots: list[LabelSpot] = []
    for i, ((px, py), (w, h)) in enumerate(zip(anchors, sizes)):
        sides = ("left", "right") if prefer and prefer[i] == "left" else ("right", "left")

        def box(side: str, dy: float) -> Box:
            x0 = px + gap if side == "right" else (px - gap - w if side == "left" else px - w / 2)
            return (x0, py + dy - h / 2, x0 + w, py + dy + h / 2)

        def candidates():
            yield from ((side, 0.0, 0) for side in sides)
            yield "center", gap + h / 2, 0
            yield "center", -(gap + h / 2), 0
            ring = 1
            while True:
                for side in sides:
                    yield side, ring * (h + pad), ring
                    yield side, -ring * (h + pad), ring
                ring += 1

        fallback = None
        for side, dy, ring in candidates():
            spot_box = box(side, dy)
            if any(_clash(spot_box, other, pad) for other in (*placed, *obstacles)):
                continue
            spot = LabelSpot(spot_box[0] - px if side == "right" else (spot_box[2] - px if side == "left" else 0.0),
                             dy, {"right": "left", "left": "right"}.get(side, "center"), spot_box, ring)
            inside = bounds is None or (spot_box[0] >= bounds[0] and spot_box[1] >= bounds[1]
                                        and spot_box[2] <= bounds[2] and spot_box[3] <= bounds[3])
            if inside:
                break
            fallback = fallback or spot
            if fallback and ring > len(anchors) + 3:
                spot = fallback
                break
        placed.append(spot.box)
        spots.append(spot)
    return spots


def plot_accuracy_vs_speed(summary: dict, path: str | os.PathLike) -> PlotResult:
    """Accuracy against speedup, one labelled point per method; labels placed so they overlap
    neither each other nor the points (leader lines where a label had to move away)."""
    from matplotlib.text import Text

    methods = summary["methods"]
    baseline = summary.get("baseline", "plain")
    metric = summary["benchmark"]["metric"]
    labels = method_labels(methods)
    points = [(n, methods[n].get("speedup_total"), methods[n].get("accuracy")) for n in methods]
    left_out = {labels[n]: "no speedup or accuracy" for n, x, y in points if x is None or y is None}
    points = [p for p in points if p[1] is not None and p[2] is not None]
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot()
    ax.axvline(1.0, color="0.6", linestyle="--", linewidth=1)
    markers, marker_size, cap = "osD^vP*X", 7.0, 3.0
    spreads = [_repeat_spread(methods[n]) for n, _, _ in points]
    for i, ((name, x, y), spread, color) in enumerate(zip(points, spreads, _colors(len(points)))):
        xerr = [[max(0.0, x - spread["min"])], [max(0.0, spread["max"] - x)]] if spread else None
        ax.errorbar([x], [y], xerr=xerr, fmt=markers[i % len(markers)], color=color, capsize=cap,
                    markersize=marker_size)
    boxes: list[Box] = []
    if points:
        xs, ys = [p[1] for p in points] + [1.0], [p[2] for p in points]
        xspan = (max(xs) - min(xs)) or 1.0
        ax.set_xlim(min(xs) - 0.15 * xspan, max(xs) + 0.15 * xspan)
        yspan = (max(ys) - min(ys)) or max(0.1, abs(max(ys)) * 0.2)
        ax.set_ylim(min(ys) - 0.4 * yspan, max(ys) + 0.4 * yspan)
        px = fig.dpi / 72  # display units per point
        probes = [ax.annotate(labels[n], (x, y), fontsize=8) for n, x, y in points]
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        sizes = [(e.width, e.height) for e in (Text.get_window_extent(a, renderer) for a in probes)]
        for a in probes:
            a.remove()
        anchors = [tuple(ax.transData.transform((x, y))) for _, x, y in points]
        radius = (marker_size / 2 + 0.5) * px
        obstacles = [(ax_ - radius, ay - radius, ax_ + radius, ay + radius) for ax_, ay in anchors]
        for (ax_, ay), (_, x, y), spread in zip(anchors, points, spreads):
            if spread:
                lo = ax.transData.transform((spread["min"], y))[0]
                hi = ax.transData.transform((spread["max"], y))[0]
                obstacles.append((min(lo, hi), ay - cap * px, max(lo, hi), ay + cap * px))
        x_mid = sum(ax.get_xlim()) / 2
        spots = place_labels(anchors, sizes, obstacles=obstacles,
                             prefer=["left" if x > x_mid else "right" for _, x, _ in points],
                             bounds=tuple(ax.get_window_extent(renderer).extents),
                             gap=(marker_size / 2 + 3) * px, pad=2 * px)
        anns = [ax.annotate(labels[n], (x, y), textcoords="offset points", xytext=(spot.dx / px, spot.dy / px),
                            ha=spot.ha, va="center", fontsize=8, color=color, annotation_clip=False,
                            arrowprops={"arrowstyle": "-", "color": color, "lw": 0.7, "shrinkA": 1,
                                        "shrinkB": marker_size / 2 + 1} if spot.ring else None)
                for (n, x, y), spot, color in zip(points, spots, _colors(len(points)))]
        fig.canvas.draw()
        boxes = [tuple(Text.get_window_extent(a, renderer).extents) for a in anns]
    else:
        ax.text(0.5, 0.5, f"no accuracy (metric: {metric})", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(f"speedup vs {baseline} (ratio of totals)")
    ax.set_ylabel(f"accuracy ({metric})")
    ax.set_title("Accuracy vs speed", fontsize=10)
    ax.grid(alpha=0.3)
    _save_figure(fig, Path(path))
    return PlotResult(str(path), [labels[p[0]] for p in points], left_out=left_out,
                      values=[p[2] for p in points], label_boxes=boxes, figure=fig)


def write_plots(summary: dict, out_dir: str | os.PathLike) -> dict[str, str]:
    """speedup.png, acceptance.png, accuracy_vs_speed.png in ``out_dir``; plot name -> path."""
    out = Path(out_dir)
    written = {}
    for key, draw in (("speedup", plot_speedup), ("acceptance", plot_acceptance),
                      ("accuracy_vs_speed", plot_accuracy_vs_speed)):
        result = draw(summary, out / PLOT_FILES[key])
        result.figure = None
        written[key] = result.path
    return written
