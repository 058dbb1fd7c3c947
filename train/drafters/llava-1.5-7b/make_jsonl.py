"""Turn a LLaVA-format instruction file into the trainer's JSON-lines prompts (answers left out).

    python train/drafters/llava-1.5-7b/make_jsonl.py LLAVA.json --out data/llava-instruct \
        [--limit 60000] [--heldout 64] [--seed 0] [--text-only-rows]

LLAVA.json: a JSON list (or JSON lines) of {"id", "image" (optional), "conversations":
[{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", ...}, ...]} - the layout of
LLaVA-Instruct-150K (`llava_instruct_150k.json`, COCO train2017 images) and of the LLaVA-1.5
mix (`llava_v1_5_mix665k.json`, images under coco/, gqa/, ocr_vqa/, textvqa/, vg/). Each row
gives ONE prompt: its first human turn with the `<image>` placeholder removed (the target's
processor puts the image tokens in). No response is written: the recipe's
`data.self_distill` has the target answer every prompt itself. Rows without an image are
skipped unless --text-only-rows. The rows are shuffled (--seed); the first --heldout go to
heldout.jsonl (the recipe's eval.source), the next --limit to train.jsonl. Image paths stay
as in the file: set the source's `image_root` to the folder they are relative to.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path


def read_rows(path: Path) -> list[dict]:
    text = path.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        return json.loads(text)
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def to_prompt(row: dict) -> str | None:
    for turn in row.get("conversations") or []:
        if turn.get("from") in ("human", "user"):
            value = str(turn.get("value", "")).replace("<image>", "").strip()
            return value or None
    return None


def convert(rows: list[dict], limit: int | None, heldout: int, seed: int, text_only_rows: bool):
    out, seen = [], {}
    for index, row in enumerate(rows):
        prompt = to_prompt(row)
        image = row.get("image")
        if prompt is None or (image is None and not text_only_rows):
            continue
        base = str(row.get("id", index))
        seen[base] = seen.get(base, 0) + 1  # ids repeat in the mixes: keep them unique
        sample_id = base if seen[base] == 1 else f"{base}#{seen[base]}"
        out.append({"id": f"llava/{sample_id}", "image": image, "prompt": prompt})
    random.Random(seed).shuffle(out)
    held, train = out[:heldout], out[heldout:]
    return (train if limit is None else train[:limit]), held


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="LLaVA-format JSON (list) or JSON lines")
    parser.add_argument("--out", type=Path, required=True, help="folder for train.jsonl and heldout.jsonl")
    parser.add_argument("--limit", type=int, default=None, help="at most this many training prompts")
    parser.add_argument("--heldout", type=int, default=64, help="prompts kept out of training, for eval_tau")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--text-only-rows", action="store_true", help="keep rows that have no image")
    args = parser.parse_args(argv)
    train, held = convert(read_rows(args.source), args.limit, args.heldout, args.seed, args.text_only_rows)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.jsonl", train), ("heldout.jsonl", held)):
        (args.out / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"{len(train)} training prompts, {len(held)} held out -> {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
