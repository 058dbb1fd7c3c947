"""`vlmspec serve`: load a target + drafter once and answer OpenAI chat-completion requests."""

from __future__ import annotations

import sys


def add_serve_parser(subparsers) -> None:
    p = subparsers.add_parser("serve", help="an OpenAI-compatible HTTP server with continuous speculative batching")
    p.add_argument("--target", default=None, help="LLaVA-style checkpoint dir or name (default: the built-in demo model)")
    p.add_argument("--drafter", default="auto", help="drafter spec, as for `vlmspec generate` (default: auto)")
    p.add_argument("--model-id", default=None, help="the id clients send as 'model' (default: the target's name)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch", type=int, default=8, help="requests decoded together at most (default 8)")
    p.add_argument("--max-queue", type=int, default=256, help="waiting requests beyond this get 503")
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1/*")
    p.add_argument("--image-dir", default=None, help="allow image_url paths inside this folder (default: none)")
    p.add_argument("--max-body-mb", type=float, default=20.0, help="largest request body (default 20 MB)")
    p.add_argument("--max-tokens", type=int, default=256, help="max_tokens when a request gives none")
    p.add_argument("--draft-length", default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default=None)
    p.add_argument("--trust-remote-code", action="store_true")
    p.add_argument("--fast-cpu", choices=["auto", "on", "off"], default="auto")
    p.set_defaults(func=_run_serve)


def _run_serve(args) -> int:
    import uvicorn

    from ..api import load
    from ..drafters.registry import drafter_name
    from .app import create_app
    from .engine import EngineConfig
    from .protocol import Limits

    try:
        engine_config = EngineConfig(max_batch=args.max_batch, max_queue=args.max_queue)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    pipe = load(args.target, args.drafter, device=args.device, dtype=args.dtype, draft_length=args.draft_length,
                trust_remote_code=args.trust_remote_code,
                fast_cpu={"auto": "auto", "on": True, "off": False}[args.fast_cpu])
    model_id = args.model_id or _model_id(args.target)
    app = create_app(pipe, model_id=model_id, engine_config=engine_config,
                     limits=Limits(default_max_tokens=args.max_tokens, image_dir=args.image_dir),
                     api_key=args.api_key, max_body_bytes=int(args.max_body_mb * 2**20))
    print(f"vlmspec serve: model {model_id!r}, drafter {drafter_name(pipe.drafter)}, "
          f"http://{args.host}:{args.port}/ (OpenAI API at /v1)", file=sys.stderr, flush=True)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0


def _model_id(target) -> str:
    import os

    from ..models.default import DEFAULT_MODEL

    if target is None:
        return DEFAULT_MODEL
    return os.path.basename(os.path.normpath(str(target))) or str(target)
