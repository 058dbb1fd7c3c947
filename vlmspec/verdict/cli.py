"""The `vlmspec verdict` sub-command: its arguments, the config they build, and the handler."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ..errors import InputError, VlmspecError
from .config import MEMORY_MODES, VerdictConfig, read_config_file

# argparse dest -> VerdictConfig field, for the flags that override --config
_OVERRIDES = {
    "expert": "experts",
    "verdict_model": "verdict",
    "m": "m",
    "memory": "memory",
    "max_answer_tokens": "max_answer_tokens",
    "max_reasoning_tokens": "max_reasoning_tokens",
    "max_verdict_tokens": "max_verdict_tokens",
    "verdict_drafter": "verdict_drafter",
    "expert_drafter": "expert_drafter",
    "device": "device",
    "dtype": "dtype",
}


def add_verdict_parser(subparsers) -> argparse.ArgumentParser:
    """Add the `verdict` sub-command to an argparse subparsers object."""
    parser = subparsers.add_parser(
        "verdict",
        help="Speculative Verdict: several expert VLMs + a verdict model (accuracy mode, NOT lossless)",
        description=(
            "Speculative Verdict - ACCURACY MODE, NOT LOSSLESS: the answer is not any single model's "
            "output. Every expert answers, the experts score each other's answers, the m most agreed-on "
            "experts reason step by step, and the verdict model writes the final answer. Costs more "
            "compute than one model; the cost is reported per stage."
        ),
    )
    parser.add_argument("--image", required=True, help="image file")
    parser.add_argument("--question", required=True, help="question about the image")
    parser.add_argument("--config", help="JSON VerdictConfig (experts, verdict, m, ...); flags below override it")
    parser.add_argument("--expert", action="append", default=None, help="expert checkpoint (repeat, >= m)")
    parser.add_argument("--verdict", dest="verdict_model", help="verdict model checkpoint")
    parser.add_argument("--m", type=int, default=None, help="experts kept by consensus (default 3)")
    parser.add_argument("--memory", choices=MEMORY_MODES, default=None, help="resident (default) or sequential")
    parser.add_argument("--max-answer-tokens", type=int, default=None, help="brief answers, stage 1 (default 32)")
    parser.add_argument("--max-reasoning-tokens", type=int, default=None, help="reasoning paths, stage 3 (default 256)")
    parser.add_argument("--max-verdict-tokens", type=int, default=None, help="the verdict, stage 4 (default 256)")
    parser.add_argument(
        "--verdict-drafter", default=None,
        help="drafter for the verdict model's generation (default prompt-lookup; none, model:PATH)",
    )
    parser.add_argument("--expert-drafter", default=None, help="drafter for the experts' generations (default prompt-lookup)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default: the loader's choice)")
    parser.add_argument("--json", action="store_true", help="print the full result (answers, scores, reasoning, cost) as JSON")
    parser.set_defaults(func=run_verdict_command)
    return parser


def config_from_args(args: argparse.Namespace) -> VerdictConfig:
    """The VerdictConfig of `--config FILE` (if given) with the other flags applied on top."""
    values: dict[str, Any] = read_config_file(args.config) if args.config else {}
    base_dir = Path(args.config).parent if args.config else None
    values.update({field: getattr(args, dest) for dest, field in _OVERRIDES.items() if getattr(args, dest) is not None})
    if "experts" not in values:
        raise InputError("No experts given; pass --expert PATH (repeatable, at least m) or --config FILE.")
    if "verdict" not in values:
        raise InputError("No verdict model given; pass --verdict PATH or --config FILE.")
    return VerdictConfig.from_dict(values, base_dir=base_dir)


def run_verdict_command(args: argparse.Namespace) -> int:
    """Handler of `vlmspec verdict`: prints the result; returns the exit code."""
    try:
        config = config_from_args(args)
        from .runner import VerdictRunner  # torch and transformers: only when a verdict runs

        with VerdictRunner(config) as runner:
            result = runner.run(args.image, args.question)
    except VlmspecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.summary())
    return 0
