"""Train an AcceptancePredictor for a drafter: labels collected online from the frozen target.

The target generates with the drafter drafting fixed chains of `draft_length` (the lossless
loop, so nothing about its answers changes); after each step the features of every drafted
token are paired with what the target did: token i is labelled 1 if it was accepted, 0 if
it was the first rejected one; tokens after the first rejection carry no label (the
predictor estimates P(accepted | the tokens before it were accepted)). Each accepted token
also gets a "next" label when a token was drafted after it: 1 if that next token was
accepted too, else 0 (the predictor's second output, read by the learned stop rule before it
pays for the next drafter forward). Greedy steps give
exact-match outcomes, sampling steps the ratio test's outcome. No labels touch the disk.

Training: BCE on both outputs (the next one only where it has a label), AdamW, full-batch epochs on standardised features, stopped early on a
validation split made of whole prompts (the last `validation_share` of the training
prompts: tokens of one answer are not independent). Calibration is measured on
held-out prompts (`prompt_mix(heldout=True)`: other scenes, wordings, photos): BCE against a
constant predictor (the training base rate), Brier score, AUROC and a reliability diagram.

    vlmspec train --config train/acceptance/default.json            # the shipped drafter
    vlmspec train --config train/acceptance/default.json --set train_prompts=16 --set heldout_prompts=8
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.schedule import DraftSchedule

log = logging.getLogger("vlmspec.training.acceptance")


@dataclass(frozen=True)
class AcceptanceTrainConfig:
    """One acceptance-predictor training run. Validated at construction."""

    recipe: str = "acceptance"
    target: str | None = None  # checkpoint dir or name; None = the default model
    drafter: str = "auto"  # spec of the drafter the predictor serves
    output_dir: str | None = None  # None: beside the drafter's weights
    train_prompts: int = 150  # the last validation_share of them only pick the stopping epoch
    validation_share: float = 0.2
    heldout_prompts: int = 40
    seed: int = 0
    max_new_tokens: int = 64
    draft_length: int = 8  # chain length drafted while collecting (>= the longest run the modes ask for)
    temperatures: tuple[float, ...] = (0.0, 1.0)  # 0 = greedy labels; > 0 = ratio-test outcomes
    hidden: int = 32
    outputs: int = 2  # 1 = this token only (older predictors); 2 = also P(next token accepted)
    epochs: int = 400  # at most; the epoch with the best validation BCE is kept
    lr: float = 3e-3
    weight_decay: float = 1.0  # AdamW (decoupled); chosen on the validation split, not on held-out data
    progress_bar: bool = True

    def __post_init__(self) -> None:
        from ..errors import InputError

        if self.recipe != "acceptance":
            raise InputError(f"AcceptanceTrainConfig.recipe must be 'acceptance', got {self.recipe!r}")
        if self.outputs not in (1, 2):
            raise InputError(f"AcceptanceTrainConfig.outputs must be 1 or 2, got {self.outputs!r}")
        for name in ("train_prompts", "heldout_prompts", "max_new_tokens", "draft_length", "hidden", "epochs"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise InputError(f"AcceptanceTrainConfig.{name} must be an integer >= 1, got {value!r}")
        temps = tuple(float(t) for t in self.temperatures)
        if not temps or any(t < 0 for t in temps):
            raise InputError(f"AcceptanceTrainConfig.temperatures must be a non-empty list of values >= 0, got "
                             f"{self.temperatures!r}")
        object.__setattr__(self, "temperatures", temps)
        if not (0.0 < self.validation_share < 1.0) or self.train_prompts < 2:
            raise InputError("AcceptanceTrainConfig needs 0 < validation_share < 1 and train_prompts >= 2")
        if not (self.lr > 0 and self.weight_decay >= 0):
            raise InputError("AcceptanceTrainConfig needs lr > 0 and weight_decay >= 0")

    @classmethod
    def from_dict(cls, data: dict, overrides: list[str] = ()) -> "AcceptanceTrainConfig":
        from ..errors import InputError

        data = dict(data)
        for item in overrides:
            key, sep, value = item.partition("=")
            if not sep:
                raise InputError(f"--set needs KEY=VALUE, got {item!r}")
            try:
                data[key.strip()] = json.loads(value)
            except ValueError:
                data[key.strip()] = value
        data = {k: v for k, v in data.items() if not k.startswith("_")}  # "_comment" and the like: notes
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"unknown acceptance-training fields {unknown}; known: {sorted(known)}")
        return cls(**data)


class _RecordingGate:
    """A gate that never stops a draft, only keeps each drafted token's features."""

    def __init__(self) -> None:
        self.start()

    def start(self) -> None:
        self.features: list[torch.Tensor] = []

    def keep_drafting(self, features: torch.Tensor) -> bool:
        self.features.append(features.detach().float().cpu())
        return True

    def trusted_prefix(self, drafted: int) -> int:
        return 0


class _RecordingSchedule(DraftSchedule):
    """Fixed chains of k; after each step, the labels of the tokens the target decided on."""

    def __init__(self, k: int, sink: list) -> None:
        self.k, self.sink, self.gate = k, sink, _RecordingGate()

    def next_length(self) -> int:
        self.gate.start()
        return self.k

    def observe(self, drafted, accepted, draft_seconds, verify_seconds) -> None:
        feats = self.gate.features[:drafted]
        for i, f in enumerate(feats[: accepted + 1]):  # accepted ones, then the first rejected (if any)
            # next: was token i + 1 accepted, given token i was? (NaN: no label -- i rejected or last)
            following = (1.0 if i + 1 < accepted else 0.0) if i < accepted and i + 1 < len(feats) else math.nan
            self.sink.append((f, 1.0 if i < accepted else 0.0, i + 1, following))


class _Collecting:
    """Stands in for a GateSetup on a Pipeline: every generation records into `sink`."""

    verification = "exact"  # the loop stays lossless while labels are collected

    def __init__(self, k: int) -> None:
        self.k, self.sink = k, []

    def schedule(self) -> _RecordingSchedule:
        return _RecordingSchedule(self.k, self.sink)


def collect(pipe, prompts, config: AcceptanceTrainConfig, desc: str) -> dict:
    """Generate for `prompts` at every temperature; returns {"features" [N, F], "labels" [N], "depth" [N],
    "next_labels" [N] (NaN where there is none)}."""
    from tqdm.auto import tqdm

    collecting = _Collecting(config.draft_length)
    pipe.gate = collecting
    try:
        jobs = [(p, t) for p in prompts for t in config.temperatures]
        for index, (item, temperature) in enumerate(tqdm(jobs, desc=desc, disable=not config.progress_bar)):
            pipe.generate(item.images or None, item.prompt, max_new_tokens=config.max_new_tokens,
                          temperature=temperature, seed=config.seed * 100_003 + index)
    finally:
        pipe.gate = None
    if not collecting.sink:
        from ..errors import InputError

        raise InputError("no draft tokens were labelled (did every answer end at once?); use more prompts")
    features = torch.stack([row[0] for row in collecting.sink])
    labels = torch.tensor([row[1] for row in collecting.sink])
    depth = torch.tensor([row[2] for row in collecting.sink])
    next_labels = torch.tensor([row[3] for row in collecting.sink])
    return {"features": features, "labels": labels, "depth": depth, "next_labels": next_labels}


def bce(probs: torch.Tensor, labels: torch.Tensor) -> float:
    p = probs.clamp(1e-6, 1 - 1e-6)
    return float(-(labels * p.log() + (1 - labels) * (1 - p).log()).mean())


def auroc(scores: torch.Tensor, labels: torch.Tensor) -> float | None:
    """Area under the ROC curve (Mann-Whitney, ties averaged); None with one class only."""
    pos, neg = int(labels.sum()), int((1 - labels).sum())
    if pos == 0 or neg == 0:
        return None
    order = scores.argsort()
    ranks = torch.empty_like(scores, dtype=torch.float64)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    for value in scores.unique():  # average ranks of ties
        tie = scores == value
        if int(tie.sum()) > 1:
            ranks[tie] = ranks[tie].mean()
    return float((ranks[labels > 0.5].sum() - pos * (pos + 1) / 2) / (pos * neg))


def reliability(probs: torch.Tensor, labels: torch.Tensor, bins: int = 10) -> list[dict]:
    rows = []
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        inside = (probs >= lo) & ((probs < hi) if b < bins - 1 else (probs <= hi))
        n = int(inside.sum())
        rows.append({"bin": [lo, hi], "count": n, "predicted": float(probs[inside].mean()) if n else None,
                     "observed": float(labels[inside].mean()) if n else None})
    return rows


def calibration(predictor, data: dict, base_rate: float, next_base_rate: float | None = None) -> dict:
    """Output 0 against its labels; with a next-token output (and the training set's next-token
    base rate for the constant baseline), a "next" block for it too."""
    with torch.inference_mode():
        probs = predictor(data["features"])
        next_logits = predictor.next_logits(data["features"])
    labels = data["labels"]
    report = _scores(probs, labels, base_rate)
    has_next = _next_mask(data)
    if next_logits is not None and next_base_rate is not None and bool(has_next.any()):
        report["next"] = _scores(torch.sigmoid(next_logits[has_next]), data["next_labels"][has_next], next_base_rate)
    return report


def _next_mask(data: dict) -> torch.Tensor:
    """[N] bool: the rows that carry a next-token label (none when the data has no such labels)."""
    if "next_labels" not in data:
        return torch.zeros(len(data["labels"]), dtype=torch.bool)
    return ~torch.isnan(data["next_labels"])


def _scores(probs: torch.Tensor, labels: torch.Tensor, base_rate: float) -> dict:
    return {"samples": int(len(labels)), "accept_rate": float(labels.mean()),
            "bce": bce(probs, labels), "bce_constant": bce(torch.full_like(labels, base_rate), labels),
            "brier": float(((probs - labels) ** 2).mean()),
            "brier_constant": float(((base_rate - labels) ** 2).mean()),
            "auroc": auroc(probs.double(), labels), "reliability": reliability(probs, labels)}


def fit(train: dict, config: AcceptanceTrainConfig, validation: dict | None = None):
    """Full-batch AdamW on BCE (normalisation from `train`); with `validation`, the weights of the
    epoch with the lowest validation BCE are kept. Returns (predictor, best epoch)."""
    from ..drafters.acceptance import AcceptancePredictor

    torch.manual_seed(config.seed)
    outputs = config.outputs if bool(_next_mask(train).any()) else 1  # never ship a second head nothing trained
    predictor = AcceptancePredictor(train["features"].shape[1], config.hidden, outputs)
    predictor.set_normalisation(train["features"])
    optimiser = torch.optim.AdamW(predictor.net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    def loss_of(data: dict) -> torch.Tensor:
        logits = predictor.all_logits(data["features"])  # [N, outputs]
        loss = loss_fn(logits[:, 0], data["labels"])
        if outputs == 2:
            has_next = _next_mask(data)  # [N]
            if bool(has_next.any()):
                loss = loss + loss_fn(logits[has_next, 1], data["next_labels"][has_next])
        return loss

    best, best_state, best_epoch = math.inf, None, config.epochs - 1
    for epoch in range(config.epochs):
        optimiser.zero_grad()
        loss = loss_of(train)
        loss.backward()
        optimiser.step()
        if validation is not None:
            with torch.no_grad():
                score = float(loss_of(validation))
            if score < best:
                best, best_epoch = score, epoch
                best_state = {k: v.clone() for k, v in predictor.state_dict().items()}
    if best_state is not None:
        predictor.load_state_dict(best_state)
    return predictor.eval(), best_epoch


def reliability_png(rows: list[dict], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfectly calibrated")
    pts = [(r["predicted"], r["observed"], r["count"]) for r in rows if r["count"]]
    ax.plot([p for p, _, _ in pts], [o for _, o, _ in pts], "o-", label="held-out prompts")
    for p, o, n in pts:
        ax.annotate(str(n), (p, o), textcoords="offset points", xytext=(4, -10), fontsize=7)
    ax.set_xlabel("predicted P(accepted)")
    ax.set_ylabel("observed acceptance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def train_acceptance(config: AcceptanceTrainConfig, pipe=None) -> dict:
    """Collect, fit, calibrate, save. `pipe`: a loaded Pipeline (default: load target + drafter)."""
    import time

    from ..atomic import atomic_write_bytes, atomic_write_json, atomic_write_text
    from ..data.prompt_mix import prompt_mix
    from ..drafters.acceptance import drafter_fingerprint
    from ..drafters.registry import drafter_name
    from ..errors import InputError

    started = time.perf_counter()
    if pipe is None:
        from ..api import load

        pipe = load(config.target, config.drafter)
    chain = pipe.drafter.chain_drafter(config.draft_length)
    if chain is None or chain.acceptance_features_size is None:
        raise InputError(f"{drafter_name(pipe.drafter)} has no acceptance features; train a predictor for a "
                         "trained drafter (eagle / vispec / msd / specvlm / model:PATH).")
    out = Path(config.output_dir) if config.output_dir else getattr(pipe.drafter, "source_dir", None)
    if out is None:
        raise InputError("the drafter was not loaded from a directory: set output_dir in the config")
    original = pipe.drafter
    pipe.drafter = chain
    try:
        prompts = prompt_mix(config.train_prompts, seed=config.seed)
        n_val = min(max(1, round(config.validation_share * len(prompts))), len(prompts) - 1)
        train = collect(pipe, prompts[:-n_val], config, "labels (train)")
        validation = collect(pipe, prompts[-n_val:], config, "labels (validation)")
        heldout = collect(pipe, prompt_mix(config.heldout_prompts, seed=config.seed, heldout=True), config,
                          "labels (held out)")
    finally:
        pipe.drafter = original
    predictor, best_epoch = fit(train, config, validation)
    predictor.fingerprint = drafter_fingerprint(chain)
    base_rate = float(train["labels"].mean())
    has_next = _next_mask(train)
    next_rate = float(train["next_labels"][has_next].mean()) if bool(has_next.any()) else None
    report = {
        "drafter": drafter_name(original), "target": config.target or "vlmspec-default",
        "config": dataclasses.asdict(config), "base_rate_train": base_rate,
        "train": calibration(predictor, train, base_rate, next_rate),
        "validation": calibration(predictor, validation, base_rate, next_rate), "best_epoch": best_epoch,
        "heldout": calibration(predictor, heldout, base_rate, next_rate),
        "heldout_by_depth": {int(d): float(heldout["labels"][heldout["depth"] == d].mean())
                             for d in heldout["depth"].unique().tolist()},
        "device": pipe.target.describe_device(), "minutes": (time.perf_counter() - started) / 60,
    }
    predictor.save(out, extra={"training": {k: report[k] for k in ("drafter", "target", "base_rate_train",
                                                                   "device", "minutes")},
                               "heldout": _without_reliability(report["heldout"])})
    atomic_write_json(out / "acceptance_calibration.json", report, mode=0o644, indent=2)
    atomic_write_bytes(out / "acceptance_calibration.png", reliability_png(
        report["heldout"]["reliability"], f"{drafter_name(original)[:60]}\nheld-out reliability"), mode=0o644)
    atomic_write_text(out / "acceptance_calibration.md", calibration_markdown(report), mode=0o644)
    log.info("acceptance predictor written to %s (held-out AUROC %s)", out, report["heldout"]["auroc"])
    return {"output_dir": str(out), **{k: report[k] for k in ("train", "heldout", "minutes")}}


def _without_reliability(scores: dict) -> dict:
    return {k: (_without_reliability(v) if isinstance(v, dict) else v) for k, v in scores.items()
            if k != "reliability"}


def calibration_markdown(report: dict) -> str:
    h, t, v = report["heldout"], report["train"], report["validation"]

    def fmt(x):
        return "n/a" if x is None else f"{x:.3f}"

    lines = [
        f"# Acceptance predictor: calibration ({report['drafter']})",
        "",
        f"- target `{report['target']}`; device {report['device']}; {report['minutes']:.1f} min",
        f"- labels collected online (lossless loop, chains of {report['config']['draft_length']}, temperatures "
        f"{report['config']['temperatures']}); held out = other scenes, prompt wordings and photos; "
        f"2-layer MLP, AdamW, weight decay {report['config']['weight_decay']}, best validation epoch "
        f"{report['best_epoch']}",
        "",
        "| split | labelled tokens | accept rate | BCE | BCE (constant) | Brier | Brier (constant) | AUROC |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        f"| train | {t['samples']} | {t['accept_rate']:.3f} | {fmt(t['bce'])} | {fmt(t['bce_constant'])} | "
        f"{fmt(t['brier'])} | {fmt(t['brier_constant'])} | {fmt(t['auroc'])} |",
        f"| validation (picks the epoch) | {v['samples']} | {v['accept_rate']:.3f} | {fmt(v['bce'])} | "
        f"{fmt(v['bce_constant'])} | {fmt(v['brier'])} | {fmt(v['brier_constant'])} | {fmt(v['auroc'])} |",
        f"| held out | {h['samples']} | {h['accept_rate']:.3f} | {fmt(h['bce'])} | {fmt(h['bce_constant'])} | "
        f"{fmt(h['brier'])} | {fmt(h['brier_constant'])} | {fmt(h['auroc'])} |",
    ]
    nexts = [(name, report[key].get("next")) for name, key in
             (("train", "train"), ("validation", "validation"), ("held out", "heldout"))]
    if all(n is not None for _, n in nexts):
        lines += [f"| next-token output, {name} | {n['samples']} | {n['accept_rate']:.3f} | {fmt(n['bce'])} | "
                  f"{fmt(n['bce_constant'])} | {fmt(n['brier'])} | {fmt(n['brier_constant'])} | {fmt(n['auroc'])} |"
                  for name, n in nexts]
        lines += ["", "The next-token output predicts, from a token's own features, whether the token after it "
                  "is accepted too (labelled where the token was accepted and another followed it); the "
                  "learned stop rule reads it to decide whether the next drafter forward pays."]
    lines += [
        "",
        "Held-out acceptance by depth (given the tokens before were accepted): "
        + ", ".join(f"{d}: {a:.2f}" for d, a in sorted(report["heldout_by_depth"].items())),
        "",
        "![reliability](acceptance_calibration.png)",
    ]
    return "\n".join(lines) + "\n"


def is_acceptance_config(data: dict) -> bool:
    return isinstance(data, dict) and data.get("recipe") == "acceptance"


__all__ = ["AcceptanceTrainConfig", "auroc", "bce", "calibration", "collect", "fit", "is_acceptance_config",
           "train_acceptance"]
