"""OpenAI chat-completions requests in, vlmspec jobs out; responses and errors in OpenAI's shape.

`parse_request(body, ...)` checks a decoded JSON body field by field and returns a `Job`
(messages with decoded images + `Pipeline.batch_sequence` options) or raises `ApiError`
naming the field. Accepted: the fields of OpenAI's chat-completions API that vlmspec can
honour (``model``, ``messages`` with text and ``image_url`` parts, ``max_tokens`` /
``max_completion_tokens``, ``temperature`` (default 1.0, as OpenAI), ``top_p``, ``seed``,
``stop``, ``stream``, ``stream_options.include_usage``, ``n`` = 1, ``user``) plus vLLM's
``top_k``. Fields OpenAI defines that would change the output in ways vlmspec does not
implement (penalties, logprobs, tools, ...) are refused unless left at their neutral
value; unknown fields are refused.
"""

from __future__ import annotations

import base64
import binascii
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from ..errors import ImageError
from ..images import load_image
from .engine import Job

# OpenAI fields accepted only at their neutral value (anything else changes the output).
NEUTRAL = {"frequency_penalty": (0, 0.0, None), "presence_penalty": (0, 0.0, None), "logprobs": (False, None),
           "top_logprobs": (None, 0), "logit_bias": (None, {}), "tools": (None, []), "tool_choice": (None, "none"),
           "response_format": (None, {"type": "text"}), "parallel_tool_calls": (None, False, True),
           "functions": (None, []), "function_call": (None, "none"), "service_tier": (None, "auto", "default"),
           "store": (None, False), "metadata": (None, {}), "modalities": (None, ["text"]),
           "reasoning_effort": (None,)}
KNOWN = {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "seed",
         "stop", "stream", "stream_options", "n", "user", *NEUTRAL}


class ApiError(Exception):
    """An error answered as ``{"error": {...}}`` with an HTTP status."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class Limits:
    default_max_tokens: int = 256
    image_dir: str | None = None  # local image paths are read only inside this folder (None: never)
    max_images: int = 8


@dataclass
class ChatRequest:
    job: Job
    stream: bool
    include_usage: bool
    model: str


def parse_request(body: object, served_model: str, limits: Limits = Limits()) -> ChatRequest:
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    unknown = sorted(set(body) - KNOWN)
    if unknown:
        raise ApiError(400, f"Unknown field(s) {', '.join(map(repr, unknown))}; see the OpenAI chat-completions "
                            "API for the fields this server accepts.", param=unknown[0], code="unknown_field")
    for name, neutral in NEUTRAL.items():
        if name in body and body[name] not in neutral:
            raise ApiError(400, f"{name}={body[name]!r} is not supported by this server (speculative decoding "
                                f"keeps the target's own distribution); leave {name} out.", param=name,
                           code="unsupported_parameter")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "'model' is required: the id from GET /v1/models.", param="model")
    if model != served_model:
        raise ApiError(404, f"The model {model!r} is not served here; this server serves {served_model!r} "
                            "(GET /v1/models).", param="model", code="model_not_found")
    n = body.get("n", 1)
    if n not in (1, None):
        raise ApiError(400, f"n={n!r}: this server returns one choice per request; send n=1 or leave it out.",
                       param="n", code="unsupported_parameter")
    messages, images = _messages(body.get("messages"), limits)
    options = {
        "max_new_tokens": _max_tokens(body, limits),
        "temperature": _number(body, "temperature", 1.0, 0.0, 2.0),
        "top_p": _number(body, "top_p", None, 0.0, 1.0, low_open=True),
        "top_k": None if body.get("top_k") == -1 else _integer(body, "top_k", None, 1),  # -1: vLLM's "no top-k"
        "seed": _integer(body, "seed", None, 0, 2**63 - 1),
        "stop": _stop(body.get("stop")),
    }
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise ApiError(400, f"'stream' must be true or false, got {stream!r}.", param="stream")
    stream_options = body.get("stream_options") or {}
    if not isinstance(stream_options, dict) or set(stream_options) - {"include_usage", "continuous_usage_stats"}:
        raise ApiError(400, "'stream_options' may hold only include_usage.", param="stream_options")
    return ChatRequest(Job(messages, options), bool(stream), bool(stream_options.get("include_usage")), model)


# ------------------------------------------------------------------------- fields
def _number(body, name, default, low, high, low_open=False):
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            (low < value if low_open else low <= value) and value <= high):
        raise ApiError(400, f"'{name}' must be a number in {'(' if low_open else '['}{low}, {high}], got {value!r}.",
                       param=name)
    return float(value)


def _integer(body, name, default, low, high=None):
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        raise ApiError(400, f"'{name}' must be an integer >= {low}, got {value!r}.", param=name)
    return value


def _max_tokens(body, limits: Limits) -> int:
    both = [k for k in ("max_completion_tokens", "max_tokens") if body.get(k) is not None]
    if not both:
        return limits.default_max_tokens
    value = body[both[0]]
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ApiError(400, f"'{both[0]}' must be a positive integer, got {value!r}.", param=both[0])
    return value


def _stop(stop) -> tuple[str, ...]:
    if stop is None:
        return ()
    items = [stop] if isinstance(stop, str) else stop
    if not isinstance(items, list) or len(items) > 4 or not all(isinstance(s, str) and s for s in items):
        raise ApiError(400, "'stop' must be a non-empty string or a list of up to 4 non-empty strings.", param="stop")
    return tuple(items)


def _messages(messages, limits: Limits) -> tuple[list[dict], int]:
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' is required: a non-empty list of {role, content} objects.", param="messages")
    out, images = [], 0
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise ApiError(400, f"{where} must be an object with 'role' and 'content'.", param=where)
        role, content = message.get("role"), message.get("content")
        if role == "developer":  # OpenAI's newer name for system
            role = "system"
        if role not in ("system", "user", "assistant"):
            raise ApiError(400, f"{where}.role must be 'system', 'user' or 'assistant', got {role!r}.",
                           param=f"{where}.role")
        extra = set(message) - {"role", "content", "name"}
        if extra:
            raise ApiError(400, f"{where} has unsupported field(s) {sorted(extra)} (tool calls are not supported).",
                           param=where)
        if isinstance(content, str):
            out.append({"role": role, "content": [{"type": "text", "text": content}]})
            continue
        if not isinstance(content, list) or not content:
            raise ApiError(400, f"{where}.content must be a string or a non-empty list of parts.",
                           param=f"{where}.content")
        parts = []
        for j, part in enumerate(content):
            at = f"{where}.content[{j}]"
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text" and isinstance(part.get("text"), str):
                parts.append({"type": "text", "text": part["text"]})
            elif kind == "image_url":
                if role != "user":
                    raise ApiError(400, f"{at}: only user messages may hold images.", param=at)
                images += 1
                if images > limits.max_images:
                    raise ApiError(400, f"More than {limits.max_images} images in one request.", param=at)
                parts.append({"type": "image", "image": _image(part.get("image_url"), at, limits)})
            else:
                raise ApiError(400, f"{at} must be {{'type': 'text', 'text': ...}} or "
                                    "{'type': 'image_url', 'image_url': {'url': ...}}.", param=at)
        out.append({"role": role, "content": parts})
    if out[-1]["role"] != "user":
        raise ApiError(400, "The last message must come from the user.", param=f"messages[{len(out) - 1}].role")
    return out, images


def _image(spec, at: str, limits: Limits):
    url = spec.get("url") if isinstance(spec, dict) else spec
    if not isinstance(url, str) or not url:
        raise ApiError(400, f"{at}.image_url.url is missing.", param=f"{at}.image_url")
    try:
        if url.startswith("data:"):
            header, _, payload = url.partition(",")
            if ";base64" not in header or not payload:
                raise ApiError(400, f"{at}: a data: URL must be base64 (data:image/png;base64,...).", param=at)
            try:
                data = base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                raise ApiError(400, f"{at}: the data: URL is not valid base64.", param=at, code="invalid_image")
            return load_image(data)
        if url.startswith(("http://", "https://")):
            raise ApiError(400, f"{at}: this server does not fetch remote images; send the image inline as a "
                                "data: URL (data:image/png;base64,...).", param=at, code="invalid_image")
        return load_image(_local_path(url, at, limits))
    except ImageError as exc:
        raise ApiError(400, f"{at}: {exc}", param=at, code="invalid_image") from None


def _local_path(url: str, at: str, limits: Limits) -> Path:
    if limits.image_dir is None:
        raise ApiError(400, f"{at}: local image paths are not allowed on this server (start it with "
                            "--image-dir DIR to allow a folder); send a data: URL instead.", param=at,
                       code="invalid_image")
    path = url[len("file://"):] if url.startswith("file://") else url
    root = Path(limits.image_dir).resolve()
    full = (root / path).resolve() if not os.path.isabs(path) else Path(path).resolve()
    if root != full and root not in full.parents:
        raise ApiError(400, f"{at}: {url!r} lies outside the allowed image folder.", param=at, code="invalid_image")
    return full


# ------------------------------------------------------------------------ responses
def completion_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def finish_reason(reason: str) -> str:
    return "length" if reason == "length" else "stop"


def extension(m, drafter: str) -> dict:
    """The ``vlmspec`` field from a request's `Metrics`: how the answer was made (lossless speculative decoding)."""
    return {"drafter": drafter, "lossless": m.lossless, "verification": m.verification, "tau": round(m.tau, 4), "acceptance_rate": round(m.acceptance_rate, 4),
            "target_forwards": m.target_forwards, "tokens_per_second": round(m.tokens_per_second, 2)}


def now() -> int:
    return int(time.time())


class StopText:
    """OpenAI leaves the stop sequence out of the answer: cut the text at the first stop string,
    and while streaming hold back a tail that could still become one."""

    def __init__(self, stops: tuple[str, ...]) -> None:
        self.stops, self.text, self.sent = stops, "", 0

    def cut(self, text: str) -> str:
        hits = [text.find(s) for s in self.stops if s in text]
        return text[: min(hits)] if hits else text

    def feed(self, piece: str) -> str:
        """The next piece that is safe to send."""
        self.text += piece
        safe = self.cut(self.text)
        if len(safe) == len(self.text):  # no stop yet: keep back a suffix that begins a stop string
            hold = max((k for s in self.stops for k in range(1, len(s)) if safe.endswith(s[:k])), default=0)
            safe = safe[: len(safe) - hold]
        out, self.sent = safe[self.sent:], max(self.sent, len(safe))
        return out

    def finish(self, final_text: str) -> str:
        """What is left to send once the answer is complete."""
        rest = self.cut(final_text)[self.sent:]
        self.sent += len(rest)
        return rest
