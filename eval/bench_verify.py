"""Benchmark: verify cost per token count and plain vs chain vs static-tree vs dynamic-tree
speculative decoding, with and without the CPU fast path (vlmspec.fast: pre-packed linear
weights, i.e. cheap verification), in ONE run on ONE model.

Reports, as Markdown printed and written (atomically) to --out:
  1. (optional) one linear layer, stock F.linear vs the fast path, for 1/2/4/8/16 rows:
     576->1536 (MLP up), 1536->576 (MLP down) and the 49152x576 LM head of SmolLM2-135M;
  2. the target's verify cost: one forward of n = 1, 2, 4, 8, 16 tokens (plus the tokens one
     tree verify scores: static nodes + 1, dynamic kept nodes + 1) on top of a KV cache of
     --context tokens (median of --repeats), stock and fast;
  3. one row per (method, mode), methods: plain greedy decoding (drafter "none": one token
     per target forward), chain speculative decoding (--drafter, each --draft-lengths),
     static tree and dynamic tree (EAGLE drafter, vlmspec.drafters.EagleDrafter), modes:
     stock and fast: tokens/s, tau (tokens per target forward, bonus included), acceptance,
     acceptance by position (by depth for trees; first 4), and speedups against plain
     decoding measured in the same run, both of the same mode and of stock;
  4. whether every mode/method produced the same greedy tokens as stock plain decoding (the
     exit status is 1 if not), and the draft length the auto-tuner (vlmspec.core.autotune)
     would pick from these measurements.

Trees: --eagle PATH loads a trained EAGLE drafter (a save_pretrained directory); the dynamic
tree is its spec "eagle:PATH?tree=dynamic&depth=D&top_k=K&total_tokens=T" (--tree-depth,
--top-k, --total-tokens) and the static tree the same weights with tree="static" and
--static-tree's rank paths. Without --eagle an UNTRAINED drafter is built
(EagleDrafter.from_target(..., init_layer_from_target=True): fc = [0 | I], the target's last
decoder layer) and saved to a temp dir; the report says so: untrained, its acceptance is low
(on the default model's repetitive random text it still guesses some) and tells nothing about
a trained drafter's. In the fast mode the drafter (EAGLE or model:) gets the fast path too.

Default model: a random LLaVA whose language model has SmolLM2-135M's shape (576 hidden,
1536 MLP, 30 layers, 9 heads, 3 KV heads) but the tiny test tokenizer (~106 tokens), so its
LM head is negligible (section 1 measures the real 49152-row head separately) and its
text is random; prompt lookup finds repeats in it. --target PATH benchmarks a real LLaVA checkpoint.
--quick: the tiny test LLaVA (vlmspec.testing.build_tiny_llava(), unless --target), 1 prompt x
12 new tokens, 1 round, draft lengths 2,4, a 32-token verify context, 1 repeat, no linear
section: a smoke test of seconds (options set to other values than their defaults win).

    .venv/bin/python eval/bench_verify.py --threads 2 --out eval/results/bench_verify.md
    .venv/bin/python eval/bench_verify.py --target /path/to/llava --drafter model:/path/to/small --eagle /path/to/eagle
    .venv/bin/python eval/bench_verify.py --quick --threads 1 --out /tmp/bench_verify.md
Timings on a shared machine are noisy: stock and fast are two copies of the model, runs are
interleaved call by call, and the best of --rounds is kept (needs memory for two copies).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

import vlmspec  # noqa: E402
from vlmspec import Pipeline, ScheduleConfig, Target  # noqa: E402
from vlmspec.atomic import atomic_write_text  # noqa: E402
from vlmspec.core.autotune import choose_chain_length, cpu_name, measure_verify_costs  # noqa: E402
from vlmspec.drafters.eagle import EagleConfig, EagleDrafter  # noqa: E402
from vlmspec.fast import FastConfig, accelerate_cpu  # noqa: E402
from vlmspec.fast.cpu_linear import _pack, _run  # noqa: E402

PROMPTS = [
    "Describe the image in detail.",
    "What colours do you see? List them, then describe the shapes.",
    "Write a short story about this picture.",
]
# EAGLE-style static tree (rank paths, 0 = the drafter's most likely token): 19 nodes, depth 5
DEFAULT_STATIC_TREE = [[0], [1], [2], [3], [0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [2, 0], [0, 0, 0], [0, 0, 1],
                       [0, 1, 0], [1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 1]]
LINEAR_SHAPES = [(1536, 576, "MLP up 576->1536"), (576, 1536, "MLP down 1536->576"), (49152, 576, "LM head 576->49152")]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--target", help="LLaVA checkpoint directory (default: SmolLM2-shaped random tiny LLaVA)")
    p.add_argument("--drafter", default="prompt-lookup", help="drafter spec for the chain runs (default prompt-lookup)")
    p.add_argument("--draft-lengths", default="2,4,8", help="chain draft lengths, comma separated")
    p.add_argument("--eagle", help="directory of a trained EAGLE drafter for the tree runs "
                   "(default: an untrained one built from the target's last layer)")
    p.add_argument("--static-tree", default=json.dumps(DEFAULT_STATIC_TREE),
                   help="static tree rank paths as JSON, e.g. '[[0],[1],[0,0]]' (default: 19 nodes, depth 5)")
    p.add_argument("--tree-depth", type=int, default=5, help="dynamic tree depth")
    p.add_argument("--top-k", type=int, default=8, help="dynamic tree: children per expanded node")
    p.add_argument("--total-tokens", type=int, default=48, help="dynamic tree: draft nodes kept")
    p.add_argument("--token-counts", default="1,2,4,8,16", help="verify token counts, comma separated")
    p.add_argument("--context", type=int, default=300, help="KV cache length for the verify-cost measurement")
    p.add_argument("--repeats", type=int, default=5, help="repeats per verify-cost measurement (median)")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--prompts", type=int, default=3, help="how many of the built-in prompts (1-3)")
    p.add_argument("--rounds", type=int, default=2, help="stock/fast alternations (noise spreading)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backend", default="mkldnn", help="FastConfig.backend for the fast mode")
    p.add_argument("--stock-rows", type=int, default=1, help="FastConfig.stock_rows for the fast mode")
    p.add_argument("--no-linear", action="store_true", help="skip the single-linear section")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: tiny test LLaVA, " + ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in QUICK.items())
                   + ", no linear section (options set to other values than their defaults win)")
    p.add_argument("--out", default="eval/results/bench_verify.md")
    args = p.parse_args(argv)
    if args.quick:
        args.no_linear = True
        for name, value in QUICK.items():
            if getattr(args, name) == p.get_default(name):
                setattr(args, name, value)
    return args


QUICK = {"prompts": 1, "max_new_tokens": 12, "rounds": 1, "draft_lengths": "2,4", "context": 32, "repeats": 1}


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def _image(seed: int) -> Image.Image:
    rng = np.random.RandomState(seed)
    return Image.fromarray(rng.randint(0, 256, (64, 64, 3), dtype=np.uint8))


# ------------------------------------------------------------------ 1. one linear
def bench_linear(config: FastConfig, rows_list: list[int], rounds: int = 5) -> list[str]:
    lines = ["| layer (out x in) | rows | stock ms (min / median) | fast ms (min / median) | fast / stock |",
             "|---|---|---|---|---|"]
    torch.manual_seed(0)
    for out_f, in_f, label in LINEAR_SHAPES:
        weight = torch.randn(out_f, in_f) * 0.02
        packed = _pack(config.backend, weight, config.mkl_max_rows)
        reps = 5 if out_f > 10000 else 40
        for rows in rows_list:
            x = torch.randn(1, rows, in_f)  # [1, rows, in]
            stock = lambda: F.linear(x, weight)  # noqa: E731
            if rows <= config.stock_rows:
                fast = stock
            else:
                fast = lambda: _run(config.backend, x, packed, weight, None, config.mkl_max_rows)  # noqa: E731
            times = {"stock": [], "fast": []}
            for fn in (stock, fast):
                fn()
            for _ in range(rounds):
                for name, fn in (("stock", stock), ("fast", fast)):
                    for _ in range(reps):
                        start = time.perf_counter()
                        fn()
                        times[name].append((time.perf_counter() - start) * 1e3)
            s_min, s_med = min(times["stock"]), statistics.median(times["stock"])
            f_min, f_med = min(times["fast"]), statistics.median(times["fast"])
            lines.append(f"| {label} ({out_f}x{in_f}) | {rows} | {s_min:.3f} / {s_med:.3f} | {f_min:.3f} / {f_med:.3f} "
                         f"| {f_min / s_min:.2f} |")
            print(lines[-1], flush=True)
    return lines


# ------------------------------------------------------------------ 2-3. model
def load_target(args) -> tuple[Target, str]:
    if args.target:
        return Target.load(args.target, vlmspec.TargetConfig(device="cpu", dtype="float32")), args.target
    from vlmspec.testing import TinyLlavaConfig, build_tiny_llava

    if args.quick:
        model, processor = build_tiny_llava()
        text = model.config.get_text_config()
        return Target(model, processor), (f"tiny test LLaVA (vlmspec.testing.build_tiny_llava(): {text.hidden_size}h, "
                                          f"{text.num_hidden_layers} layers, vocab {text.vocab_size})")

    cfg = TinyLlavaConfig(hidden_size=576, intermediate_size=1536, num_layers=30, num_heads=9, num_kv_heads=3,
                          vision_hidden=64, vision_layers=2, image_size=64, patch_size=8, max_positions=4096,
                          initializer_range=0.02)  # SmolLM2's init scale: its greedy text repeats, so prompt lookup hits
    model, processor = build_tiny_llava(cfg, seed=0)
    vocab = model.get_output_embeddings().weight.shape[0]
    return Target(model, processor), f"random SmolLM2-shaped LLaVA (576h, 30 layers, vocab {vocab} - tiny test tokenizer)"


def static_paths(args) -> list[list[int]]:
    try:
        paths = json.loads(args.static_tree)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"--static-tree must be JSON rank paths such as '[[0],[1],[0,0]]': {exc}") from None
    EagleConfig(tree="static", static_paths=paths)  # validates (prefix-closed, ranks >= 0)
    return paths


def eagle_path(target: Target, args, workdir: str) -> tuple[str, str]:
    """(directory of the EAGLE drafter for the tree runs, description): --eagle, or an untrained
    drafter (fc = [0 | I], the target's last decoder layer) saved to `workdir`."""
    if args.eagle:
        if "?" in args.eagle:
            raise SystemExit("--eagle takes a directory; set the tree shape with --tree-depth/--top-k/--total-tokens "
                             "and --static-tree.")
        return args.eagle, f"EAGLE drafter {args.eagle} (--eagle)"
    config = EagleConfig(tree="dynamic", depth=args.tree_depth, top_k=args.top_k, total_tokens=args.total_tokens)
    drafter = EagleDrafter.from_target(target, config, init_layer_from_target=True)
    path = drafter.save_pretrained(Path(workdir) / "eagle-untrained")
    return str(path), ("UNTRAINED EAGLE drafter (EagleDrafter.from_target(init_layer_from_target=True): fc = [0 | I], "
                       "the target's last decoder layer; not trained, so expect low acceptance: these rows measure the tree "
                       "machinery, not a trained drafter)")


def tree_drafters(target: Target, path: str, paths: list[list[int]], args) -> dict:
    """name -> (EAGLE drafter for `target`, draft length the loop asks for)."""
    dynamic = vlmspec.build_drafter(
        f"eagle:{path}?tree=dynamic&depth={args.tree_depth}&top_k={args.top_k}&total_tokens={args.total_tokens}", target)
    base = vlmspec.build_drafter(f"eagle:{path}", target)
    static = base.with_config(dataclasses.replace(base.config, tree="static", static_paths=paths, depth=None))
    return {"static tree": (static, max(len(p) for p in paths)), "dynamic tree": (dynamic, args.tree_depth)}


def make_pipelines(targets: dict, drafter_spec: str, lengths: list[int], args, eagle: str, paths) -> dict:
    """(method, mode) -> Pipeline; model and EAGLE drafters get the fast path in the fast mode too."""
    pipes = {}
    for mode, target in targets.items():
        for k in [0, *lengths]:
            drafter = vlmspec.build_drafter(drafter_spec if k > 0 else "none", target)
            if getattr(drafter, "model", None) is not None and mode == "fast":
                accelerate_cpu(drafter.model, fast_config(args))
            name = "plain" if k == 0 else f"chain k={k}"
            pipes[(name, mode)] = Pipeline(target, drafter, ScheduleConfig(kind="fixed", draft_length=k))
        for name, (drafter, k) in tree_drafters(target, eagle, paths, args).items():
            if mode == "fast":
                accelerate_cpu(drafter, fast_config(args))  # its own fc + layer; embedding and head are the target's
            pipes[(name, mode)] = Pipeline(target, drafter, ScheduleConfig(kind="fixed", draft_length=k))
    return pipes


def run_decoding(pipes: dict, args, results: dict) -> None:
    """One round: every prompt through every (method, mode), interleaved finely so that
    background load hits all of them alike; per prompt the fastest round is kept."""
    for i in range(args.prompts):
        for key, pipe in pipes.items():
            result = pipe.generate(_image(i), PROMPTS[i], max_new_tokens=args.max_new_tokens)
            m = result.metrics
            entry = results.setdefault(key, {})
            run = entry.setdefault(i, {"seconds": float("inf")})
            run["outputs"] = result.token_ids
            run["tokens"] = m.new_tokens
            run["forwards"] = m.target_forwards
            drafted = m.mean_draft_length * max(m.target_forwards - 1, 0)
            run["drafted"], run["accepted"] = drafted, m.acceptance_rate * drafted
            run["acceptance"] = m.acceptance_per_position
            if m.total_seconds < run["seconds"]:
                run["seconds"], run["decode_seconds"] = m.total_seconds, m.total_seconds - m.prefill_seconds
                run["draft_seconds"] = m.draft_seconds


def _totals(per_prompt: dict) -> dict:
    keys = ("seconds", "decode_seconds", "tokens", "forwards", "drafted", "accepted", "draft_seconds")
    total = {k: sum(run[k] for run in per_prompt.values()) for k in keys}
    total["outputs"] = [per_prompt[i]["outputs"] for i in sorted(per_prompt)]
    total["acceptance"] = [per_prompt[i]["acceptance"] for i in sorted(per_prompt) if per_prompt[i]["acceptance"]]
    return total


def by_position(acceptance: list[list[float]], first: int = 4) -> str:
    """Acceptance at draft positions (tree depths) 1..first, mean over the prompts that drafted that far."""
    cells = []
    for i in range(first):
        values = [a[i] for a in acceptance if len(a) > i]
        if not values:
            break
        cells.append(f"{statistics.mean(values):.2f}")
    return " / ".join(cells) if cells else "-"


def fast_config(args) -> FastConfig:
    return FastConfig(backend=args.backend, stock_rows=args.stock_rows)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    counts = _ints(args.token_counts)
    lengths = _ints(args.draft_lengths)
    paths = static_paths(args)
    dynamic_nodes = min(args.total_tokens, args.top_k + (args.tree_depth - 1) * args.top_k ** 2)
    tree_counts = {"static tree": len(paths) + 1, "dynamic tree": dynamic_nodes + 1}  # tokens one verify scores
    measured = sorted(set(counts) | set(tree_counts.values()))
    out: list[str] = ["# Verify cost and speculative decoding, stock vs CPU fast path", ""]
    out += [f"- machine: {cpu_name()} ({platform.machine()}), torch {torch.__version__}, "
            f"transformers {__import__('transformers').__version__}, {args.threads} threads, fp32",
            f"- fast path: FastConfig(backend={args.backend!r}, stock_rows={args.stock_rows}); "
            f"drafter {args.drafter!r}; {args.prompts} prompts x {args.max_new_tokens} new tokens; {args.rounds} rounds",
            f"- started {time.strftime('%Y-%m-%d %H:%M:%S')}; load average {os.getloadavg()[0]:.1f} "
            "(shared machine: timings are noisy)", ""]
    if not args.no_linear:
        out += ["## One linear layer (ms per call)", ""]
        out += bench_linear(fast_config(args), counts) + [""]

    target, description = load_target(args)
    out.insert(2, f"- model: {description}")
    # two copies of the model, stock and fast, so runs can be interleaved call by call
    fast_target = Target(copy.deepcopy(target.model), target.processor)
    report = accelerate_cpu(fast_target.model, fast_config(args))
    print(report.summary(), flush=True)
    targets = {"stock": target, "fast": fast_target}
    with tempfile.TemporaryDirectory(prefix="bench_verify_") as workdir:  # the untrained drafter, loaded back
        eagle, eagle_description = eagle_path(target, args, workdir)
        pipes = make_pipelines(targets, args.drafter, lengths, args, eagle, paths)
    out.insert(3, f"- trees: {eagle_description}; static tree {len(paths)} nodes, depth {max(map(len, paths))} "
                  f"(--static-tree); dynamic tree depth {args.tree_depth}, top_k {args.top_k}, "
                  f"total_tokens {args.total_tokens}")
    costs: dict[str, list[dict[int, float]]] = {"stock": [], "fast": []}
    raw: dict = {}
    for round_index in range(args.rounds):
        for mode, t in targets.items():
            costs[mode].append(measure_verify_costs(t, measured, context_length=args.context, repeats=args.repeats))
            print(mode, "verify ms", {n: round(s * 1e3, 1) for n, s in costs[mode][-1].items()}, flush=True)
        run_decoding(pipes, args, raw)
        print(f"round {round_index} done", flush=True)
    results = {key: _totals(per_prompt) for key, per_prompt in raw.items()}

    # 2. verify costs
    med = {mode: {n: min(c[n] for c in costs[mode]) for n in measured} for mode in costs}
    heads = [str(n) + "".join(f" ({name})" for name, size in tree_counts.items() if size == n) for n in measured]
    out += [f"## Verify cost: one target forward of n tokens on a {args.context}-token cache "
            f"(ms; median of {args.repeats} repeats, best of {args.rounds} rounds)", "",
            "| n tokens | " + " | ".join(heads) + " |", "|---" * (len(measured) + 1) + "|"]
    for mode in ("stock", "fast"):
        out.append(f"| {mode} | " + " | ".join(f"{med[mode][n] * 1e3:.1f}" for n in measured) + " |")
    for mode in ("stock", "fast"):
        out.append(f"| {mode} / its 1-token cost | "
                   + " | ".join(f"{med[mode][n] / med[mode][measured[0]]:.2f}x" for n in measured) + " |")
    out.append("| fast / stock | " + " | ".join(f"{med['fast'][n] / med['stock'][n]:.2f}" for n in measured) + " |")
    out.append("")

    # 3. decoding
    rate = {key: e["tokens"] / e["seconds"] for key, e in results.items()}
    out += [f"## Decoding (greedy, end-to-end incl. prefill; per prompt the best of {args.rounds} rounds)", "",
            "tau = new tokens / target forwards (prefill counted, bonus token included; plain = 1.00). "
            "acceptance = accepted / drafted draft tokens (trees: accepted path length / tree depth); "
            "by position = acceptance of draft position (tree depth) 1, 2, 3, 4, mean over prompts. "
            "Speedups are tokens/s ratios against plain decoding in this run, of the same mode and of stock.", "",
            "| method | mode | tok/s | decode tok/s | tau | acceptance | by position | x plain (same mode) | x plain stock |",
            "|---|---|---|---|---|---|---|---|---|"]
    for name in ["plain", *[f"chain k={k}" for k in lengths], *tree_counts]:
        for mode in ("stock", "fast"):
            e = results[(name, mode)]
            tau = e["tokens"] / e["forwards"] if e["forwards"] else 0.0
            acc = f"{e['accepted'] / e['drafted']:.2f}" if e["drafted"] else "-"
            out.append(f"| {name} | {mode} | {rate[(name, mode)]:.1f} | {e['tokens'] / e['decode_seconds']:.1f} | "
                       f"{tau:.2f} | {acc} | {by_position(e['acceptance'])} | "
                       f"{rate[(name, mode)] / rate[('plain', mode)]:.2f} | "
                       f"{rate[(name, mode)] / rate[('plain', 'stock')]:.2f} |")
    reference = results[("plain", "stock")]["outputs"]
    # same prompts in the same order: every (method, mode) must reproduce stock plain decoding token for token
    differ = [f"{name} ({mode})" for (name, mode), e in results.items() if e["outputs"] != reference]
    out += ["", f"Greedy outputs identical across all modes and methods: {'yes' if not differ else 'NO'}"
                + ("" if not differ else f" (differ from stock plain decoding: {', '.join(differ)})")]

    # 4. what the auto-tuner would pick
    best_chain = max(lengths, key=lambda k: rate[(f"chain k={k}", "fast")])
    e = results[(f"chain k={best_chain}", "fast")]
    per_token = e["draft_seconds"] / e["drafted"] if e["drafted"] else 0.0
    acceptance = [statistics.mean(vals) for vals in zip(*[a for a in e["acceptance"] if len(a) >= best_chain])] or [0.5]
    for mode in ("stock", "fast"):
        k = choose_chain_length({n: med[mode][n] for n in counts}, per_token, acceptance, max_length=max(counts) - 1)
        out.append(f"Auto-tuner ({mode} costs, draft {per_token * 1e3:.2f} ms/token, acceptance by position "
                   f"{[round(a, 2) for a in acceptance]}): draft length {k}")
    if report is not None:
        out += ["", f"Fast path: {report.summary()}"]
    text = "\n".join(out) + "\n"
    print(text)
    atomic_write_text(Path(args.out), text)
    print(f"written to {args.out}")
    return 0 if not differ else 1


if __name__ == "__main__":
    sys.exit(main())
