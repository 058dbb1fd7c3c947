"""The `vlmspec` command line: `vlmspec generate | eval | verdict | train | serve ...`.

`generate` streams text to stdout as tokens are accepted and prints the metrics at the
end (to stderr, so stdout stays the answer); `--json` prints one JSON object instead.
Errors vlmspec raises on purpose are printed as one line, exit status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings

from .errors import VlmspecError, VlmspecWarning


def _add_generate_parser(subparsers) -> None:
    p = subparsers.add_parser("generate", help="generate an answer for one image and prompt (lossless speculative decoding)")
    p.add_argument("--image", action="append", default=None, help="image path (repeat for several images)")
    p.add_argument("--prompt", required=True, help="the question or instruction")
    p.add_argument("--target", default=None, help="LLaVA-style checkpoint dir or name (default: the built-in demo model)")
    p.add_argument("--drafter", default="auto",
                   help="'auto' (default: the best drafter shipped for the target, else prompt lookup), "
                        "'none', 'prompt-lookup', 'eagle:DIR', 'vispec:DIR', 'msd:DIR', 'specvlm:DIR', 'model:PATH'")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--draft-length", default=None,
                   help="an integer, 'adaptive', 'cost-aware' or 'learned' (the drafter's acceptance predictor "
                        "stops each draft; lossless) (default: the drafter's depth cap, else 5)")
    p.add_argument("--verification", choices=["exact", "approximate"], default="exact",
                   help="exact (lossless, default) or approximate: SPRINTER, NOT lossless; tokens the acceptance "
                        "predictor approves are kept without the target's check")
    p.add_argument("--acceptance-threshold", type=float, default=None,
                   help="predictor threshold (learned: default from measured costs; approximate: default 0.5)")
    p.add_argument("--predictor", default=None,
                   help="acceptance predictor directory (default: the one beside the drafter's weights)")
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None)
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--fast-cpu", choices=["auto", "on", "off"], default="auto",
                   help="pre-packed CPU linears for cheap multi-token verification (default: auto, measured)")
    p.add_argument("--json", action="store_true", help="print one JSON object (text, token ids, metrics)")
    p.set_defaults(func=_run_generate)


def _run_generate(args) -> int:
    from .api import load

    pipe = load(
        args.target,
        args.drafter,
        device=args.device,
        dtype=args.dtype,
        draft_length=args.draft_length,
        trust_remote_code=args.trust_remote_code,
        fast_cpu={"auto": "auto", "on": True, "off": False}[args.fast_cpu],
        verification=args.verification,
        acceptance_threshold=args.acceptance_threshold,
        predictor=args.predictor,
    )
    images = args.image or None
    options = dict(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        seed=args.seed,
        stop=args.stop,
    )
    if args.json:
        result = pipe.generate(images, args.prompt, **options)
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    stream = pipe.generate(images, args.prompt, stream=True, **options)
    for piece in stream:
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    m = stream.result.metrics
    print(
        f"[drafter {stream.result.drafter}, {m.new_tokens} tokens, {m.target_forwards} target forwards, tau {m.tau:.2f}, "
        f"{m.tokens_per_second:.1f} tok/s, first token {m.time_to_first_token * 1000:.0f} ms, "
        f"finish: {stream.result.finish_reason}"
        + ("" if stream.result.lossless else f", {stream.result.verification}: "
           f"{m.unchecked_tokens} tokens kept without the target's check") + "]",
        file=sys.stderr,
    )
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("vlmspec")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlmspec", description="Lossless speculative decoding for LLaVA-style VLMs.")
    parser.add_argument("--version", action="version", version=f"vlmspec {_version()}")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_generate_parser(subparsers)
    for module_name, hook in (
        ("vlmspec.evaluation.cli", "add_eval_parser"),
        ("vlmspec.verdict.cli", "add_verdict_parser"),
        ("vlmspec.training.cli", "add_train_parser"),
        ("vlmspec.serving.cli", "add_serve_parser"),
        ("vlmspec.export.cli", "add_export_parser"),
    ):
        module = __import__(module_name, fromlist=[hook])
        getattr(module, hook)(subparsers)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """vlmspec's own warnings as one 'warning:' line; others as Python prints them."""
    if issubclass(category, VlmspecWarning):
        print(f"warning: {message}", file=sys.stderr)
    else:
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            return args.func(args)
    except VlmspecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
