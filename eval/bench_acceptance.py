"""Learned draft stop and approximate verification (SPRINTER) beside fixed chains, in one run.

Methods, all greedy, on the same inputs and the same machine, timed in one process:
plain decoding (the speed baseline), fixed chains of k with the drafter, `draft_length=
"learned"` (lossless) and `verification="approximate"` (NOT lossless) at a sweep of
thresholds. Inputs (none used to train the drafter or its predictor):

- held-out prompt mix (`prompt_mix(heldout=True)`: test-split scenes, held-out wordings,
  held-out instructions and photographs), reported per prompt style;
- in-distribution prompt mix (training distribution, fresh rows: seed + 1000, as `prompt-mix-indist`);
- short Q/A with gold answers on test-split scenes (exact-answer accuracy);
- descriptions of test-split scenes (ROUGE-L vs the lossless output, facts checked).

Quality of approximate output is measured against the lossless output (token-level
agreement, ROUGE-L) and against the scene (exact answers, fact share); speed as tokens/s
ratio against plain decoding, tau with the bonus token included.

    python eval/bench_acceptance.py                          # default model + its shipped drafter
    python eval/bench_acceptance.py --heldout 8 --indist 4 --qa 8 --describe 2 --out /tmp/acc.md
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path

THRESHOLDS = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4)
DEFAULT_APPROXIMATE = 0.5  # GateConfig's default threshold in approximate mode
CHAINS = (1, 2, 3, 4, 6)


def build_inputs(args):
    from vlmspec.evaluation.builtins import INDIST_SEED_OFFSET
    from vlmspec.data import DESCRIBE_PROMPT, generate_scene
    from vlmspec.data.prompt_mix import prompt_mix
    from vlmspec.data.synthetic import make_questions, split_seed

    heldout = [("heldout", p.style, p.images or None, p.prompt, None, None)
               for p in prompt_mix(args.heldout, seed=args.seed, heldout=True)]
    # in distribution: fresh rows of the training mix (another seed), never seen by the drafter or its predictor
    indist = [("indist", p.style, p.images or None, p.prompt, None, None)
              for p in prompt_mix(args.indist, seed=args.seed + INDIST_SEED_OFFSET)]
    qa, describe = [], []
    i = 0
    while len(qa) < args.qa:
        scene = generate_scene(split_seed("test", 5000 + i))
        for _, question, answer in make_questions(scene)[:2]:
            qa.append(("qa", "short_qa", scene.image, question, answer, scene))
        i += 1
    for j in range(args.describe):
        scene = generate_scene(split_seed("test", 6000 + j), kind="shapes")
        describe.append(("describe", "describe_scene", scene.image, DESCRIBE_PROMPT, None, scene))
    return heldout + indist + qa[: args.qa] + describe


def run_method(pipe, inputs, max_new_tokens: dict) -> list[dict]:
    rows = []
    for group, style, image, prompt, gold, scene in inputs:
        t0 = time.perf_counter()
        result = pipe.generate(image, prompt, max_new_tokens=max_new_tokens[group])
        seconds = time.perf_counter() - t0
        rows.append({"group": group, "style": style, "seconds": seconds, "tokens": result.metrics.new_tokens,
                     "forwards": result.metrics.target_forwards, "token_ids": result.token_ids, "text": result.text,
                     "unchecked": result.metrics.unchecked_tokens, "lossless": result.lossless})
    return rows


def agreement(out: list[int], ref: list[int]) -> float:
    """Share of the lossless output's positions where the output has the same token."""
    if not ref:
        return 1.0 if not out else 0.0
    return sum(1 for a, b in zip(out, ref) if a == b) / len(ref)


def summarise(name: str, rows: list[dict], reference: list[dict], plain: list[dict], inputs) -> dict:
    from vlmspec.data.answers import fact_check
    from vlmspec.evaluation.metrics import exact_match, rouge_l

    def ratio(select):
        mine = [r for r, keep in zip(rows, select) if keep]
        base = [r for r, keep in zip(plain, select) if keep]
        tokens = sum(r["tokens"] for r in mine)
        return ((tokens / sum(r["seconds"] for r in mine)) / (sum(r["tokens"] for r in base)
                / sum(r["seconds"] for r in base))) if mine else None

    def tau(select):
        mine = [r for r, keep in zip(rows, select) if keep]
        return sum(r["tokens"] for r in mine) / sum(r["forwards"] for r in mine) if mine else None

    groups = [i[0] for i in inputs]
    styles = sorted({i[1] for i in inputs if i[0] == "heldout"})
    entry = {"method": name, "lossless": all(r["lossless"] for r in rows),
             "speed_heldout": ratio([g == "heldout" for g in groups]), "tau_heldout": tau([g == "heldout" for g in groups]),
             "speed_indist": ratio([g == "indist" for g in groups]), "tau_indist": tau([g == "indist" for g in groups]),
             "speed_all": ratio([True] * len(rows)), "tau_all": tau([True] * len(rows)),
             "by_style": {s: {"speed": ratio([i[0] == "heldout" and i[1] == s for i in inputs]),
                              "tau": tau([i[0] == "heldout" and i[1] == s for i in inputs])} for s in styles},
             "agreement": sum(agreement(r["token_ids"], ref["token_ids"]) for r, ref in zip(rows, reference)) / len(rows),
             "unchecked_share": sum(r["unchecked"] for r in rows) / max(sum(r["tokens"] for r in rows), 1)}
    qa = [(r, i) for r, i in zip(rows, inputs) if i[0] == "qa"]
    entry["qa_accuracy"] = sum(exact_match(r["text"], [i[4]]) for r, i in qa) / len(qa) if qa else None
    described = [(r, ref, i) for r, ref, i in zip(rows, reference, inputs) if i[0] == "describe"]
    if described:
        entry["rouge_l"] = sum(rouge_l(r["text"], [ref["text"]]) for r, ref, _ in described) / len(described)
        checks = [fact_check(r["text"], i[5]) for r, _, i in described]
        mentions = sum(c["mentions"] for c in checks)
        entry["facts_right"] = sum(c["right"] for c in checks) / mentions if mentions else None
    return entry


def frontier_png(entries: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    approx = [e for e in entries if e["method"].startswith("approximate")]
    ax.plot([e["agreement"] for e in approx], [e["speed_heldout"] for e in approx], "o-", color="tab:red",
            label="approximate (not lossless), threshold sweep")
    for e in approx:
        ax.annotate(e["method"].split("=")[-1], (e["agreement"], e["speed_heldout"]), textcoords="offset points",
                    xytext=(5, 4), fontsize=8)
    for e in entries:
        if e["method"].startswith(("chain", "learned")):
            marker = "s" if e["method"].startswith("learned") else "^"
            ax.scatter([e["agreement"]], [e["speed_heldout"]], marker=marker, zorder=3,
                       label=f"{e['method']} (lossless)")
    ax.axhline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("token agreement with the lossless output")
    ax.set_ylabel("tokens/s vs plain decoding (held-out prompts)")
    ax.set_title("Speed vs quality: approximate verification frontier", fontsize=10)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    from vlmspec.atomic import atomic_write_bytes

    atomic_write_bytes(path, buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default=None)
    parser.add_argument("--drafter", default="auto")
    parser.add_argument("--predictor", default=None, help="predictor dir (default: beside the drafter)")
    parser.add_argument("--heldout", type=int, default=30)
    parser.add_argument("--indist", type=int, default=12)
    parser.add_argument("--qa", type=int, default=30)
    parser.add_argument("--describe", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1,
                        help="timed passes over all methods, interleaved (method order per pass); times are summed")
    parser.add_argument("--only", default=None,
                        help="comma-separated method names to run (plain always runs), e.g. 'chain k=3,learned'")
    parser.add_argument("--out", default="eval/results/acceptance.md")
    args = parser.parse_args(argv)

    from tqdm.auto import tqdm

    import vlmspec
    from vlmspec import NoDrafter, Pipeline, ScheduleConfig
    from vlmspec.atomic import atomic_write_json, atomic_write_text
    from vlmspec.drafters.registry import drafter_name
    from vlmspec.core.schedule import DEFAULT_DRAFT_LENGTH
    from vlmspec.gating import setup_gate

    from vlmspec.core.acceptance import GateConfig

    assert GateConfig(mode="approximate").initial_threshold() == DEFAULT_APPROXIMATE
    base = vlmspec.load(args.target, args.drafter)
    target, drafter = base.target, base.drafter
    inputs = build_inputs(args)
    budgets = {"heldout": args.max_new_tokens, "indist": args.max_new_tokens, "qa": 8, "describe": 96}
    methods = [("plain", Pipeline(target, NoDrafter()))]
    for k in CHAINS:
        methods.append((f"chain k={k}", Pipeline(target, drafter.chain_drafter(k), ScheduleConfig(draft_length=k))))
    chain, gate = setup_gate(target, drafter, learned=True, predictor=args.predictor)
    methods.append(("learned", Pipeline(target, chain, gate=gate)))
    for threshold in THRESHOLDS:
        chain, gate = setup_gate(target, drafter, learned=False, verification="approximate", threshold=threshold,
                                 predictor=args.predictor)
        methods.append((f"approximate t={threshold}", Pipeline(target, chain, gate=gate)))
    chain, gate = setup_gate(target, drafter, learned=False, verification="approximate", predictor=args.predictor,
                             verify_tail=0)  # SPRINTER's own rule: the target checks only the flagged token
    methods.append((f"approximate t={gate.config.initial_threshold()} no tail", Pipeline(target, chain, gate=gate)))
    if args.only:
        keep = {m.strip() for m in args.only.split(",")} | {"plain"}
        methods = [(n, p) for n, p in methods if n in keep]
    for _, pipe in methods:  # warm-up, untimed
        pipe.generate(inputs[0][2], inputs[0][3], max_new_tokens=8)

    results = {}
    for repeat in range(max(args.repeats, 1)):
        order = methods if repeat % 2 == 0 else methods[::-1]  # alternate the order: drift hits all alike
        for name, pipe in tqdm(order, desc=f"methods (pass {repeat + 1})"):
            rows = run_method(pipe, inputs, budgets)
            if name in results:  # greedy: same outputs every pass; add the time
                for old, new in zip(results[name], rows):
                    old["seconds"] += new["seconds"]
            else:
                results[name] = rows
    reference = results["plain"]
    for name in results:  # every lossless method must equal plain decoding
        if results[name][0]["lossless"] and any(r["token_ids"] != ref["token_ids"]
                                                for r, ref in zip(results[name], reference)):
            print(f"LOSSLESS VIOLATION: {name}", file=sys.stderr)
            return 1
    entries = [summarise(name, rows, reference, reference, inputs) for name, rows in results.items()]
    out = Path(args.out)
    frontier_png(entries, out.with_name(out.stem + "-frontier.png"))
    atomic_write_json(out.with_suffix(".json"), {"entries": entries, "args": vars(args),
                                                 "device": target.describe_device()}, indent=2)
    atomic_write_text(out, render(entries, args, drafter_name(drafter), target.describe_device(), out,
                                  drafter.max_depth or DEFAULT_DRAFT_LENGTH))
    print(out.read_text())
    return 0


def render(entries, args, drafter: str, device: str, out: Path, drafter_depth: int) -> str:
    def f(x, spec=".2f", suffix=""):
        return "n/a" if x is None else f"{x:{spec}}{suffix}"

    styles = sorted({s for e in entries for s in e["by_style"]})
    chains = [e for e in entries if e["method"].startswith("chain")]
    best_chain = max(chains, key=lambda e: e["speed_heldout"]) if chains else None
    learned = next((e for e in entries if e["method"] == "learned"), None)
    lines = [
        "# Learned draft stop and approximate verification (SPRINTER)",
        "",
        f"- drafter `{drafter}`; device {device}",
        f"- greedy; {args.heldout} held-out mix prompts, {args.indist} in-distribution ones, {args.qa} short Q/A "
        f"with gold answers, {args.describe} scene descriptions; max_new_tokens {args.max_new_tokens} "
        "(Q/A 8, descriptions 96); all methods on the same inputs in one process",
        "- speed = tokens/s ratio against plain decoding measured in the same run; tau = tokens per target "
        "forward, bonus included; agreement = share of the lossless output's tokens reproduced in place",
        f"- {args.repeats} timed pass(es), interleaved, order alternating; regenerate: `python "
        f"eval/bench_acceptance.py --heldout {args.heldout} --indist {args.indist} --qa {args.qa} "
        f"--describe {args.describe} --repeats {args.repeats}" + (f" --only '{args.only}'" if args.only else "") + "`",
        "",
        "| method | lossless | speed held out | tau held out | speed in-dist | tau in-dist | agreement | "
        "unchecked tokens | short Q/A exact | ROUGE-L (descr.) | facts right (descr.) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for e in entries:
        lossless = "yes" if e["lossless"] else "**no: approximate (not lossless)**"
        lines.append(
            f"| {e['method']} | {lossless} | {f(e['speed_heldout'], '.2f', 'x')} | {f(e['tau_heldout'])} | "
            f"{f(e['speed_indist'], '.2f', 'x')} | {f(e['tau_indist'])} | {f(e['agreement'], '.3f')} | "
            f"{f(e['unchecked_share'] * 100, '.0f', '%')} | {f(e['qa_accuracy'] * 100 if e['qa_accuracy'] is not None else None, '.1f', '%')} | "
            f"{f(e.get('rouge_l'), '.3f')} | {f(e.get('facts_right') * 100 if e.get('facts_right') is not None else None, '.1f', '%')} |")
    lines += ["", "Held-out speed (tau) per prompt style:", "",
              "| method | " + " | ".join(styles) + " |", "|---|" + "---:|" * len(styles)]
    for e in entries:
        cells = [f"{f(e['by_style'][s]['speed'], '.2f', 'x')} ({f(e['by_style'][s]['tau'])})" for s in styles]
        lines.append(f"| {e['method']} | " + " | ".join(cells) + " |")
    if best_chain and learned:
        lines += ["", f"Best fixed chain on held-out prompts: {best_chain['method']} at "
                  f"{best_chain['speed_heldout']:.2f}x; learned stop: {learned['speed_heldout']:.2f}x "
                  f"({learned['speed_heldout'] / best_chain['speed_heldout']:.2f} of the best chain)."]
    own = next((e for e in entries if e["method"] == f"chain k={drafter_depth}"), None)
    default = next((e for e in entries if e["method"] == f"approximate t={DEFAULT_APPROXIMATE}"), None)
    if own and default:
        def points(e):
            return "n/a" if e["qa_accuracy"] is None else f"{e['qa_accuracy'] * 100:.1f}%"

        lines += ["", f"Approximate mode at its default threshold {DEFAULT_APPROXIMATE} against the drafter's "
                  f"lossless mode (chain k={drafter_depth}): {default['speed_heldout'] / own['speed_heldout']:.2f}x "
                  f"held out, {default['speed_indist'] / own['speed_indist']:.2f}x in distribution; short Q/A exact "
                  f"{points(default)} against {points(own)}."]
    lines += ["", f"![frontier]({out.stem}-frontier.png)"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
