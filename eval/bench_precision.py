"""Low precision: how often speculative decoding reproduces `model.generate` in bf16 / fp16, and
what it costs, beside float32 (the exact reference), in one run on one machine.

Why: in float32 vlmspec's output equals `model.generate(do_sample=False)` token for token. In
bf16 / fp16, scoring k+1 tokens in one forward rounds differently from scoring them one at a
time (other GEMM blocking, other reduction order), so where the target's top two logits nearly
tie, the speculative run and `model.generate` can pick different tokens. This benchmark
measures how often, and where.

Per precision (float32, bfloat16, float16, and bfloat16 with the LM head in float32: the last
hidden state is cast up and the head's weights kept in float32) and per method (plain
one-token decoding through vlmspec, the given drafter, a chain of 3 with it):
  - exact runs: share of prompts whose tokens equal `model.generate` in the same precision;
  - token agreement: share of the reference's tokens reproduced before the first divergence;
  - agreement with float32's `model.generate` (what the precision itself changes);
  - at each first divergence, the reference's top-1 minus top-2 logit (how close the tie was);
  - speed: tokens/s against `model.generate` in the same precision, and against float32's;
    tau (tokens per target forward, bonus included); what `fast_cpu` decided for the precision.
Prompts: the held-out prompt mix (test-split scenes, held-out wordings, instructions, photos).

    python eval/bench_precision.py                                 # default model + its drafter
    python eval/bench_precision.py --prompts 4 --max-new-tokens 24 --out /tmp/precision.md
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

VARIANTS = ("float32", "bfloat16", "float16", "bfloat16+fp32-head")


def lm_head_in_fp32(model) -> None:
    """Keep `model`'s LM head (weights and matmul) in float32: logits come out in float32."""
    import torch

    head = model.get_output_embeddings()
    # a fresh float32 copy: the head is often tied to the (bf16) input embeddings, which stay as they are
    head.weight = torch.nn.Parameter(head.weight.detach().float().clone(), requires_grad=False)
    if head.bias is not None:
        head.bias = torch.nn.Parameter(head.bias.detach().float().clone(), requires_grad=False)
    head.register_forward_pre_hook(lambda module, args: tuple(a.float() if torch.is_tensor(a) else a for a in args))


def load_variant(args, variant: str):
    import vlmspec

    dtype = variant.split("+")[0]
    pipe = vlmspec.load(args.target, args.drafter, dtype=dtype)
    if variant.endswith("+fp32-head"):
        from vlmspec.fast import restore

        restore(pipe.target.model)  # the fast path's packed copies are per dtype: keep this variant stock
        pipe.target.fast_cpu_report = "off (LM head cast to float32 for this variant)"
        lm_head_in_fp32(pipe.target.model)
    return pipe


def reference_runs(pipe, inputs, max_new_tokens: int) -> list[dict]:
    """`model.generate(do_sample=False)` on each prompt: tokens, seconds, and every step's top-2 gap."""
    import torch

    model = pipe.target.model
    rows = []
    for image, prompt in inputs:
        model_inputs = pipe.prepare(image, prompt)
        eos = model.generation_config.eos_token_id
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**model_inputs, do_sample=False, max_new_tokens=max_new_tokens, output_scores=True,
                                 return_dict_in_generate=True, eos_token_id=eos, pad_token_id=eos if isinstance(eos, int) else None)
        seconds = time.perf_counter() - t0
        ids = out.sequences[0, model_inputs["input_ids"].shape[1]:].tolist()
        gaps = []
        for score in out.scores:
            top = torch.topk(score[0].float(), 2).values
            gaps.append(float(top[0] - top[1]))
        rows.append({"token_ids": ids, "seconds": seconds, "gaps": gaps, "forwards": len(ids)})
    return rows


def vlmspec_runs(pipe, inputs, max_new_tokens: int) -> list[dict]:
    rows = []
    for image, prompt in inputs:
        t0 = time.perf_counter()
        result = pipe.generate(image, prompt, max_new_tokens=max_new_tokens)
        rows.append({"token_ids": list(result.token_ids), "seconds": time.perf_counter() - t0,
                     "forwards": result.metrics.target_forwards})
    return rows


def first_divergence(out: list[int], ref: list[int]) -> int | None:
    for i, (a, b) in enumerate(zip(out, ref)):
        if a != b:
            return i
    return None if len(out) == len(ref) else min(len(out), len(ref))


def compare(rows, reference, fp32_reference, plain_seconds, fp32_plain_seconds) -> dict:
    exact, agreed, total, gaps, vs_fp32 = 0, 0, 0, [], 0
    for row, ref, ref32 in zip(rows, reference, fp32_reference):
        where = first_divergence(row["token_ids"], ref["token_ids"])
        exact += where is None
        agreed += len(ref["token_ids"]) if where is None else where
        total += len(ref["token_ids"])
        if where is not None and where < len(ref["gaps"]):
            gaps.append(ref["gaps"][where])
        where32 = first_divergence(row["token_ids"], ref32["token_ids"])
        vs_fp32 += len(ref32["token_ids"]) if where32 is None else where32
    tokens = sum(len(r["token_ids"]) for r in rows)
    seconds = sum(r["seconds"] for r in rows)
    return {
        "exact_runs": exact / len(rows),
        "token_agreement": agreed / max(total, 1),
        "agreement_vs_fp32": vs_fp32 / max(sum(len(r["token_ids"]) for r in fp32_reference), 1),
        "divergence_gaps": gaps,
        "tokens_per_s": tokens / seconds,
        "speed_vs_generate": (tokens / seconds) / (sum(len(r["token_ids"]) for r in reference) / plain_seconds),
        "speed_vs_fp32_generate": (tokens / seconds) / fp32_plain_seconds,
        "tau": tokens / max(sum(r["forwards"] for r in rows), 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default=None)
    parser.add_argument("--drafter", default="auto")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="eval/results/precision.md")
    args = parser.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or "float32" not in variants:
        parser.error(f"--variants takes {', '.join(VARIANTS)} and must include float32; got {args.variants!r}")

    from tqdm.auto import tqdm

    from vlmspec import NoDrafter, Pipeline, ScheduleConfig
    from vlmspec.atomic import atomic_write_json, atomic_write_text
    from vlmspec.data.prompt_mix import prompt_mix
    from vlmspec.drafters.registry import drafter_name

    inputs = [(p.images or None, p.prompt) for p in prompt_mix(args.prompts, seed=args.seed, heldout=True)]
    entries, devices, fp32_reference, fp32_speed = [], {}, None, None
    for variant in tqdm(sorted(variants, key=lambda v: v != "float32"), desc="precisions"):
        pipe = load_variant(args, variant)
        target, drafter = pipe.target, pipe.drafter
        devices[variant] = target.describe_device()
        methods = [("plain (vlmspec, 1 token / forward)", Pipeline(target, NoDrafter())),
                   (f"drafter {drafter_name(drafter)}", pipe),
                   ("chain k=3", Pipeline(target, drafter.chain_drafter(3), ScheduleConfig(draft_length=3)))]
        reference_runs(pipe, inputs[:1], 4)  # warm-up, untimed
        for _, method in methods:
            method.generate(inputs[0][0], inputs[0][1], max_new_tokens=4)
        reference = reference_runs(pipe, inputs, args.max_new_tokens)
        plain_seconds = sum(r["seconds"] for r in reference)
        if variant == "float32":
            fp32_reference = reference
            fp32_speed = sum(len(r["token_ids"]) for r in reference) / plain_seconds
        entry = {"variant": variant, "generate_tokens_per_s": sum(len(r["token_ids"]) for r in reference) / plain_seconds,
                 "generate_vs_fp32": compare(reference, fp32_reference, fp32_reference, plain_seconds, fp32_speed)["agreement_vs_fp32"],
                 "methods": {}}
        for name, method in methods:
            rows = vlmspec_runs(method, inputs, args.max_new_tokens)
            entry["methods"][name] = compare(rows, reference, fp32_reference, plain_seconds, fp32_speed)
        entries.append(entry)
        del pipe, methods, target, drafter
    if any(m["exact_runs"] < 1.0 for e in entries if e["variant"] == "float32" for m in e["methods"].values()):
        print("LOSSLESS VIOLATION in float32", file=sys.stderr)
        status = 1
    else:
        status = 0
    out = Path(args.out)
    atomic_write_json(out.with_suffix(".json"), {"entries": entries, "devices": devices, "args": vars(args)}, indent=2)
    atomic_write_text(out, render(entries, devices, args))
    print(out.read_text())
    return status


def render(entries, devices, args) -> str:
    lines = [
        "# Low precision: agreement with `model.generate` and speed (bf16 / fp16 beside float32)",
        "",
        f"- {args.prompts} held-out prompt-mix prompts, greedy, max_new_tokens {args.max_new_tokens}; "
        "all precisions in one process, one after another; regenerate: `python eval/bench_precision.py "
        f"--prompts {args.prompts} --max-new-tokens {args.max_new_tokens}`",
        "- reference = `model.generate(do_sample=False)` in the same precision; exact = every token equal; "
        "agreement = share of the reference's tokens reproduced before the first divergence; gap = the "
        "reference's top-1 minus top-2 logit where the run first diverged",
        "- speed = tokens/s against `model.generate` in the same precision (and against float32's); "
        "tau = tokens per target forward, bonus included",
        "",
        "Devices (what `fast_cpu` decided per precision):",
        "",
    ]
    lines += [f"- {variant}: {device}" for variant, device in devices.items()]
    lines += ["", "| precision | method | exact runs | token agreement | agreement vs fp32 generate | "
              "divergence gap (median, max) | speed vs generate | speed vs fp32 generate | tau |",
              "|---|---|---:|---:|---:|---|---:|---:|---:|"]
    for e in entries:
        lines.append(f"| {e['variant']} | `model.generate` | 100% | 1.000 | {e['generate_vs_fp32']:.3f} | - | 1.00x | "
                     f"{e['generate_tokens_per_s'] / entries[0]['generate_tokens_per_s']:.2f}x | 1.00 |")
        for name, m in e["methods"].items():
            gaps = m["divergence_gaps"]
            gap = f"{statistics.median(gaps):.3f}, {max(gaps):.3f} ({len(gaps)})" if gaps else "none"
            lines.append(f"| {e['variant']} | {name} | {m['exact_runs'] * 100:.0f}% | {m['token_agreement']:.3f} | "
                         f"{m['agreement_vs_fp32']:.3f} | {gap} | {m['speed_vs_generate']:.2f}x | "
                         f"{m['speed_vs_fp32_generate']:.2f}x | {m['tau']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
