"""Benchmark: which batch sizes pay off? Batched vs one-by-one generation, measured in one run.

For each batch size B the same B (image, prompt) pairs are generated (a) one at a time
with `Pipeline.generate` and (b) together with `Pipeline.generate_batch`; outputs are
checked to be identical and the throughput ratio (b)/(a) is reported. Greedy decoding.

    python eval/bench_batch.py                       # default model, synthetic scenes
    python eval/bench_batch.py --target DIR --drafter prompt-lookup --sizes 1,2,4,8
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default=None, help="checkpoint dir or name (default: the default model)")
    parser.add_argument("--drafter", default="prompt-lookup")
    parser.add_argument("--draft-length", default="5")
    parser.add_argument("--sizes", default="1,2,4,8")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--out", default="eval/results/batch.md")
    args = parser.parse_args(argv)

    import vlmspec
    from vlmspec.atomic import atomic_write_text
    from vlmspec.data import DESCRIBE_PROMPT, generate_scene

    pipe = vlmspec.load(args.target, args.drafter, draft_length=args.draft_length)
    sizes = [int(s) for s in args.sizes.split(",")]
    pairs = [(generate_scene(f"bench-batch-{i}").image, DESCRIBE_PROMPT) for i in range(max(sizes))]
    pipe.generate(*pairs[0], max_new_tokens=8)  # warm-up

    rows = []
    for size in sizes:
        batch = pairs[:size]
        t0 = time.perf_counter()
        alone = [pipe.generate(image, prompt, max_new_tokens=args.max_new_tokens) for image, prompt in batch]
        t1 = time.perf_counter()
        together = pipe.generate_batch(batch, max_new_tokens=args.max_new_tokens)
        t2 = time.perf_counter()
        identical = all(a.token_ids == b.token_ids for a, b in zip(alone, together))
        tokens = sum(len(r.token_ids) for r in together)
        rows.append({
            "batch_size": size,
            "tokens": tokens,
            "one_by_one_tok_s": tokens / (t1 - t0),
            "batched_tok_s": tokens / (t2 - t1),
            "speedup": (t1 - t0) / (t2 - t1),
            "identical": identical,
            "mean_tau": sum(r.metrics.tau for r in together) / size,
        })
        print(json.dumps(rows[-1]), file=sys.stderr)

    lines = [
        f"Batched vs one-by-one generation ({args.drafter}, k={args.draft_length}, "
        f"{args.max_new_tokens} new tokens, greedy), measured in one run on this machine.",
        "",
        "| batch size | tokens | one by one tok/s | batched tok/s | batched / one by one | outputs identical | mean tau |",
        "| ---: | ---: | ---: | ---: | ---: | :---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['batch_size']} | {r['tokens']} | {r['one_by_one_tok_s']:.1f} | {r['batched_tok_s']:.1f} | "
            f"{r['speedup']:.2f}x | {'yes' if r['identical'] else 'NO'} | {r['mean_tau']:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    atomic_write_text(Path(args.out), text)
    return 0 if all(r["identical"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
