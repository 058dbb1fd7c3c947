"""`vlmspec export --format eagle|eagle3 --engine vllm|sglang DRAFTER_DIR OUT_DIR`: a trained
drafter as an engine's EAGLE draft checkpoint.

`add_export_parser(subparsers)` adds the `export` sub-command (func=run_export_command) to another
argparse parser. Refusals (a combination that would compute another drafter) and bad folders are
VlmspecErrors: `vlmspec.cli.main` prints them as one line and exits 2.
"""

from __future__ import annotations

import argparse
import json


def add_export_parser(subparsers) -> argparse.ArgumentParser:
    from . import DTYPE_NAMES, ENGINES, FORMATS  # torch-free: building the parser loads no torch

    parser = subparsers.add_parser(
        "export", help="write a trained drafter as a vLLM / SGLang EAGLE draft checkpoint (exact mappings only)")
    parser.add_argument("--format", required=True, choices=FORMATS,
                        help="eagle: the EAGLE-1/2 draft layout (exact for plain eagle drafters); eagle3: the "
                             "EAGLE-3 layout (refused: it computes differently, see the error)")
    parser.add_argument("--engine", required=True, choices=ENGINES)
    parser.add_argument("--target", default=None,
                        help="the checkpoint folder or name the drafter was trained against (only its config is "
                             "read; default: vlmspec-default)")
    parser.add_argument("--dtype", default=None, choices=DTYPE_NAMES, help="tensor dtype (default: as saved)")
    parser.add_argument("--full-vocab", action="store_true",
                        help="a drafter trained with a trimmed vocabulary drafts over the target's whole vocabulary "
                             "in the engine (vLLM takes no trimmed vocabulary); same weights, its proposals can "
                             "differ from vlmspec's, outputs stay lossless")
    parser.add_argument("--trust-remote-code", action="store_true")
    parser.add_argument("drafter_dir", metavar="DRAFTER_DIR", help="a saved vlmspec drafter folder")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="the folder to write (replaced whole if an earlier export)")
    parser.set_defaults(func=run_export_command)
    return parser


def run_export_command(args) -> int:
    from .engines import EXPORT_INFO_NAME, export_drafter

    out = export_drafter(args.drafter_dir, args.out_dir, format=args.format, engine=args.engine,
                         target=args.target, dtype=args.dtype, trust_remote_code=args.trust_remote_code,
                         full_vocab=args.full_vocab)
    info = json.loads((out / EXPORT_INFO_NAME).read_text())
    print(f"wrote {out} ({args.engine} {args.format} draft checkpoint)")
    print(f"serve it with: {info['launch']}")
    return 0
