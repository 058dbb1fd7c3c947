"""`vlmspec train ...` / `python -m vlmspec.training ...`: train a drafter from a JSON config.

    python -m vlmspec.training --config train/drafters/eagle.json --set max_steps=200
    accelerate launch --config_file train/drafters/multi_gpu.yaml -m vlmspec.training --config ...

`add_train_parser(subparsers)` adds the `train` sub-command (func=run_train_command) to
another argparse parser; `main(argv)` is the stand-alone entry point.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from ..errors import VlmspecError


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="JSON training config (see train/drafters/*.json)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, dotted, value as JSON: --set loss.w_ce=0.2 (repeatable)")
    parser.add_argument("--output-dir", default=None, help="overrides output_dir")
    parser.add_argument("--target", default=None, help="overrides target (checkpoint folder or vlmspec-default)")
    parser.add_argument("--resume", default=None, help='"latest" or a checkpoints/step-N folder')
    parser.add_argument("--max-steps", type=int, default=None, help="overrides max_steps")
    parser.add_argument("--prepare-data-only", action="store_true",
                        help="build the data (self-distillation included), report bad samples, and stop")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("train", help="train a drafter (eagle, vispec, msd, specvlm) against a target, or "
                                                 "a drafter's acceptance predictor (train/acceptance/*.json)")
    _add_arguments(parser)
    parser.set_defaults(func=run_train_command)
    return parser


def _config_from_args(args):
    from .config import TrainConfig

    overrides = list(args.overrides)
    for name, value in (("output_dir", args.output_dir), ("target", args.target), ("resume", args.resume),
                        ("max_steps", args.max_steps)):
        if value is not None:
            overrides.append(f"{name}={json.dumps(value)}")
    if args.no_progress:
        overrides.append("progress_bar=false")
    return TrainConfig.from_json(args.config, overrides)


def interrupted_message(output_dir, config_path: str) -> str:
    """What to tell a user who pressed Ctrl-C: the newest complete checkpoint and how to resume."""
    from pathlib import Path

    latest = Path(output_dir) / "checkpoints" / "latest"
    resume = f"vlmspec train --config {config_path} --resume latest"
    if latest.is_file() and (latest.parent / latest.read_text().strip()).is_dir():
        where = latest.parent / latest.read_text().strip()
        return f"interrupted: the newest complete checkpoint is {where}; continue with: {resume}"
    return (f"interrupted before the first checkpoint (none in {latest.parent}); run it again to start over, "
            f"or set checkpoint_every lower (--set checkpoint_every=50) to checkpoint sooner; later runs continue with: {resume}")


def _acceptance_config(args):
    """The AcceptanceTrainConfig when --config is an acceptance-predictor recipe, else None."""
    from pathlib import Path

    from ..errors import InputError
    from .acceptance import AcceptanceTrainConfig, is_acceptance_config

    try:
        data = json.loads(Path(args.config).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"Could not read the training config {args.config}: {exc}") from None
    if not is_acceptance_config(data):
        return None
    overrides = list(args.overrides)
    if args.output_dir is not None:
        overrides.append(f"output_dir={json.dumps(args.output_dir)}")
    if args.target is not None:
        overrides.append(f"target={json.dumps(args.target)}")
    if args.no_progress:
        overrides.append("progress_bar=false")
    return AcceptanceTrainConfig.from_dict(data, overrides)


def run_train_command(args) -> int:
    from .trainer import Trainer

    acceptance = _acceptance_config(args)
    if acceptance is not None:  # an AcceptancePredictor for a drafter (learned stop / approximate verification)
        from .acceptance import train_acceptance

        summary = train_acceptance(acceptance)
        print(json.dumps({k: v for k, v in summary.items() if k != "train"}, indent=2, default=str))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    for name in ("accelerate", "accelerate.accelerator", "accelerate.checkpointing"):
        # "Saving current state ..." per file at every checkpoint: vlmspec logs one line per checkpoint itself
        logging.getLogger(name).setLevel(logging.WARNING)
    config = _config_from_args(args)
    trainer = Trainer(config)
    if args.prepare_data_only:
        trainer.setup()
        sizes = {k: len(v) for k, v in trainer.pools.items()}
        print(json.dumps({"pools": sizes, "bad_samples": trainer.report.summary()}, indent=2))
        return 0
    try:
        result = trainer.train()
    except KeyboardInterrupt:
        print(interrupted_message(config.output_dir, args.config), file=sys.stderr)
        return 130
    if trainer.accelerator.is_main_process:
        summary = {"drafter": str(result.drafter_dir), "steps": result.steps, "final_eval": result.final_eval}
        print(json.dumps(summary, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlmspec.training", description=__doc__.splitlines()[0])
    _add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_train_command(args)
    except VlmspecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
