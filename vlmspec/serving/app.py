"""The HTTP layer of `vlmspec serve` (FastAPI on uvicorn): OpenAI chat completions, models,
health, Prometheus metrics and the live page at ``/``.

FastAPI was chosen because it is the ASGI stack vLLM's and SGLang's OpenAI servers use, it
streams server-sent events with a plain `StreamingResponse`, and it notices a client that
disconnects (the stream's generator is cancelled, and the request's batch slot is freed at
the next step). Decoding happens on the engine's thread (`engine.Engine`); handlers only
parse, wait on an asyncio queue fed from that thread, and format.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from ..api import Pipeline
from ..drafters.registry import drafter_name
from ..errors import ContextLengthError, InputError, VlmspecError
from . import protocol
from .engine import Engine, EngineConfig, Event, QueueFull
from .protocol import ApiError, Limits, StopText

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80)


class ServerMetrics:
    """Prometheus series of one server (its own registry, so several apps can live in one process)."""

    def __init__(self, engine: Engine) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("vlmspec_requests", "Chat completion requests by outcome", ["status"], registry=r)
        self.prompt_tokens = Counter("vlmspec_prompt_tokens", "Prompt tokens (image tokens included)", registry=r)
        self.completion_tokens = Counter("vlmspec_completion_tokens", "Generated tokens", registry=r)
        self.target_forwards = Counter("vlmspec_target_forwards", "Target forwards (prefill included)", registry=r)
        self.drafted_accepted = Counter("vlmspec_accepted_draft_tokens", "Draft tokens accepted", registry=r)
        self.tau = Histogram("vlmspec_request_tau", "Tokens per target forward per request (bonus included)",
                             buckets=(1, 1.25, 1.5, 1.75, 2, 2.5, 3, 4, 6, 8), registry=r)
        self.latency = Histogram("vlmspec_request_latency_seconds", "Request latency", buckets=LATENCY_BUCKETS,
                                 registry=r)
        self.ttft = Histogram("vlmspec_time_to_first_token_seconds", "Time to first token",
                              buckets=LATENCY_BUCKETS, registry=r)
        self.steps = Counter("vlmspec_engine_steps", "Batched decoding steps", registry=r)
        queue = Gauge("vlmspec_queue_depth", "Requests waiting to join the batch", registry=r)
        queue.set_function(lambda: engine.queue_depth)
        active = Gauge("vlmspec_active_sequences", "Sequences in the running batch", registry=r)
        active.set_function(lambda: engine.active)

    def finished(self, event: Event, seconds: float, first_token_seconds: float) -> None:
        m = event.result.metrics
        self.requests.labels("ok").inc()
        self.prompt_tokens.inc(event.prompt_tokens)
        self.completion_tokens.inc(m.new_tokens)
        self.target_forwards.inc(m.target_forwards)
        self.drafted_accepted.inc(max(m.new_tokens - m.target_forwards, 0))
        self.tau.observe(m.tau)
        self.latency.observe(seconds)
        self.ttft.observe(first_token_seconds)


def create_app(
    pipeline: Pipeline,
    *,
    model_id: str = "vlmspec-default",
    engine_config: EngineConfig = EngineConfig(),
    limits: Limits = Limits(),
    api_key: str | None = None,
    max_body_bytes: int = 20 * 2**20,
) -> FastAPI:
    """The ASGI app; the engine thread starts and stops with the app's lifespan."""
    engine = Engine(pipeline, engine_config)
    metrics = ServerMetrics(engine)
    engine.on_step = lambda info: metrics.steps.inc()
    drafter = drafter_name(pipeline.drafter)
    device = pipeline.target.describe_device()

    async def lifespan(app):
        engine.start()
        yield
        engine.shutdown()

    app = FastAPI(title="vlmspec", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        metrics.requests.labels(str(exc.status)).inc()
        return JSONResponse(exc.body(), status_code=exc.status)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if api_key is not None and request.url.path.startswith("/v1/"):
            given = request.headers.get("authorization", "")
            if not secrets.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                metrics.requests.labels("401").inc()
                return JSONResponse(ApiError(401, "Missing or wrong API key: send 'Authorization: Bearer KEY'.",
                                             code="invalid_api_key", kind="authentication_error").body(),
                                    status_code=401)
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_body_bytes:
            metrics.requests.labels("413").inc()
            return JSONResponse(_too_large(max_body_bytes).body(), status_code=413)
        return await call_next(request)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": model_id, "drafter": drafter, "device": device, "active": engine.active,
                "queued": engine.queue_depth}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": model_id, "object": "model", "created": 0, "owned_by": "vlmspec"}]}

    @app.get("/metrics")
    async def prometheus():
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/", response_class=HTMLResponse)
    async def page():
        return HTMLResponse(resources.files("vlmspec.serving").joinpath("static/index.html").read_text("utf-8"))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        raw = await request.body()
        if len(raw) > max_body_bytes:
            raise _too_large(max_body_bytes)
        try:
            body = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"The request body is not valid JSON: {exc}.") from None
        parsed = protocol.parse_request(body, model_id, limits)
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[Event] = asyncio.Queue()
        try:
            handle = engine.submit(parsed.job, on_event=lambda e: loop.call_soon_threadsafe(events.put_nowait, e))
        except QueueFull as exc:
            raise ApiError(503, str(exc), code="server_busy", kind="server_error") from None
        try:
            first = await events.get()
        except asyncio.CancelledError:
            handle.cancel()
            raise
        if first.error is not None:
            handle.cancel()
            raise _api_error(first.error)
        first_token_seconds = time.perf_counter() - started
        cid, created = protocol.completion_id(), protocol.now()
        stops = StopText(parsed.job.options["stop"])
        if parsed.stream:
            chunks = _stream(parsed, first, events, handle, cid, created, stops, metrics, started,
                             first_token_seconds)
            return StreamingResponse(chunks, media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        event = first
        try:
            while event.result is None:
                event = await events.get()
                if event.error is not None:
                    raise _api_error(event.error)
        except asyncio.CancelledError:
            handle.cancel()
            raise
        result = event.result
        metrics.finished(event, time.perf_counter() - started, first_token_seconds)
        return {
            "id": cid, "object": "chat.completion", "created": created, "model": parsed.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": stops.cut(result.text)},
                         "finish_reason": protocol.finish_reason(result.finish_reason), "logprobs": None}],
            "usage": protocol.usage(event.prompt_tokens, result.metrics.new_tokens),
            "vlmspec": protocol.extension(result.metrics, result.drafter),
        }

    return app


async def _stream(parsed, first: Event, events: asyncio.Queue, handle, cid: str, created: int, stops: StopText,
                  metrics: ServerMetrics, started: float, first_token_seconds: float):
    """Server-sent events in OpenAI's chunk format, each with the tokens it carries (draft or target)."""

    def chunk(delta: dict, finish: str | None = None, extra: dict | None = None, choices: bool = True) -> str:
        body = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": parsed.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}] if choices else []}
        body.update(extra or {})
        return f"data: {json.dumps(body)}\n\n"

    tokens_sent, forwards = 0, 0
    t0 = time.perf_counter()
    try:
        yield chunk({"role": "assistant", "content": ""})
        event = first
        while True:
            if event.error is not None:
                err = _api_error(event.error)
                yield f"data: {json.dumps(err.body())}\n\n"
                break
            if event.tokens:
                forwards += 1
                tokens_sent += len(event.tokens)
                text = stops.feed("".join(t.text for t in event.tokens))
                elapsed = time.perf_counter() - t0
                live = {"tokens": [{"id": t.id, "text": t.text, "drafted": t.drafted} for t in event.tokens],
                        "tau": round(tokens_sent / forwards, 3),
                        "tokens_per_second": round(tokens_sent / elapsed, 2) if elapsed > 0 else None}
                yield chunk({"content": text}, extra={"vlmspec": live})
            if event.result is not None:
                result = event.result
                tail = stops.finish(result.text)
                metrics.finished(event, time.perf_counter() - started, first_token_seconds)
                yield chunk({"content": tail} if tail else {}, protocol.finish_reason(result.finish_reason),
                            extra={"vlmspec": protocol.extension(result.metrics, result.drafter)})
                if parsed.include_usage:
                    yield chunk({}, extra={"usage": protocol.usage(event.prompt_tokens, result.metrics.new_tokens)},
                                choices=False)
                break
            event = await events.get()
        yield "data: [DONE]\n\n"
    finally:
        handle.cancel()  # a client that went away frees its slot; after the end this is a no-op


def _api_error(exc: Exception) -> ApiError:
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, InputError):
        code = "context_length_exceeded" if isinstance(exc, ContextLengthError) else "invalid_request"
        return ApiError(400, str(exc), code=code)
    if isinstance(exc, VlmspecError):
        return ApiError(500, str(exc), code="generation_failed", kind="server_error")
    return ApiError(500, f"Internal error while generating: {type(exc).__name__}: {exc}", kind="server_error")


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"The request body is larger than this server's limit of {limit} bytes; send a smaller "
                         "image or start the server with a larger --max-body-mb.", code="request_too_large")

