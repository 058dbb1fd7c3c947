"""`vlmspec serve` over real HTTP: a server process on 127.0.0.1, the official `openai` client,
raw httpx for bad input; answers equal `Pipeline.generate` for each request alone."""

from __future__ import annotations

import base64
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from vlmspec import Target
from vlmspec.api import Pipeline
from vlmspec.drafters.registry import build_drafter

from conftest import random_image, start_serve_process

KEY = "sk-test-key"


def data_url(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def server(tiny_llava_path, tmp_path_factory):
    images = tmp_path_factory.mktemp("allowed")
    random_image(5).save(images / "five.png")
    proc, base = start_serve_process(
        tiny_llava_path, "--drafter", f"model:{tiny_llava_path}", "--max-batch", "3", "--api-key", KEY,
        "--model-id", "tiny", "--image-dir", str(images), "--max-body-mb", "0.25")
    yield {"base": base, "images": images}
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def pipe(tiny_llava_path):
    target = Target.load(tiny_llava_path)
    return Pipeline(target, build_drafter(f"model:{tiny_llava_path}", target))


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server["base"] + "/v1", api_key=KEY, max_retries=0, timeout=120)


def user(image, text: str) -> list[dict]:
    parts = [] if image is None else [{"type": "image_url", "image_url": {"url": data_url(image)}}]
    return [{"role": "user", "content": parts + [{"type": "text", "text": text}]}]


def local(messages) -> list[dict]:
    """The same chat as Pipeline.prepare_chat takes it (images decoded)."""
    from vlmspec.serving.protocol import Limits, parse_request

    return parse_request({"model": "tiny", "messages": messages}, "tiny", Limits()).job.messages


def alone(pipe, messages, **options):
    return pipe.generate(inputs=pipe.prepare_chat(local(messages)), **options)


def test_models_health_and_page(server, client):
    assert [m.id for m in client.models.list().data] == ["tiny"]
    health = httpx.get(server["base"] + "/health").json()
    assert health["status"] == "ok" and health["model"] == "tiny" and health["drafter"].startswith("model:")
    page = httpx.get(server["base"] + "/")
    assert page.status_code == 200 and "/v1/chat/completions" in page.text and "tok-draft" in page.text


def test_openai_client_greedy_equals_generate(client, pipe):
    messages = user(random_image(1), "Describe this.")
    reply = client.chat.completions.create(model="tiny", messages=messages, max_tokens=24, temperature=0)
    want = alone(pipe, messages, max_new_tokens=24)
    assert reply.choices[0].message.content == want.text
    assert reply.usage.completion_tokens == len(want.token_ids)
    assert reply.usage.prompt_tokens == pipe.prepare_chat(local(messages))["input_ids"].shape[1]
    assert reply.choices[0].finish_reason == ("length" if want.finish_reason == "length" else "stop")
    ext = reply.model_extra["vlmspec"]
    assert ext["lossless"] is True and ext["tau"] == pytest.approx(want.metrics.tau, abs=1e-3)


def test_openai_client_streaming_equals_generate(client, pipe):
    messages = user(random_image(2), "Hi there, what is shown in this picture? Answer in detail.")
    stream = client.chat.completions.create(model="tiny", messages=messages, max_tokens=30, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    pieces, tokens, usage, finish = [], [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            pieces.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
        tokens += (chunk.model_extra.get("vlmspec") or {}).get("tokens", [])
    want = alone(pipe, messages, max_new_tokens=30)
    assert "".join(pieces) == want.text
    assert [t["id"] for t in tokens] == want.token_ids
    assert sum(not t["drafted"] for t in tokens) == want.metrics.target_forwards
    assert usage.completion_tokens == len(want.token_ids) and finish in ("stop", "length")


def test_concurrent_requests_each_equal_generate_alone(client, pipe):
    prompts = ["Describe this.", "x", "What colour dominates?", "Tell me a story.", "Count.", "Hi"]
    jobs = [(user(random_image(20 + i) if i % 3 else None, p), 6 + 5 * i) for i, p in enumerate(prompts)]

    def ask(job):
        messages, n = job
        return client.chat.completions.create(model="tiny", messages=messages, max_tokens=n, temperature=0)

    with ThreadPoolExecutor(len(jobs)) as pool:
        replies = list(pool.map(ask, jobs))
    for (messages, n), reply in zip(jobs, replies):
        assert reply.choices[0].message.content == alone(pipe, messages, max_new_tokens=n).text


def test_sampling_with_seed_equals_generate(client, pipe):
    messages = user(random_image(3), "Describe this.")
    options = dict(max_tokens=20, temperature=0.9, top_p=0.95, seed=1234)
    replies = [client.chat.completions.create(model="tiny", messages=messages, **options) for _ in range(2)]
    want = alone(pipe, messages, max_new_tokens=20, temperature=0.9, top_p=0.95, seed=1234)
    assert replies[0].choices[0].message.content == replies[1].choices[0].message.content == want.text


def test_stop_strings_are_left_out_like_openai(client, pipe):
    messages = user(random_image(4), "Describe this.")
    full = alone(pipe, messages, max_new_tokens=30).text
    stop = full[len(full) // 2: len(full) // 2 + 3]
    if not stop.strip():
        pytest.skip("no usable stop string in this answer")
    reply = client.chat.completions.create(model="tiny", messages=messages, max_tokens=30, temperature=0, stop=[stop])
    assert reply.choices[0].message.content == full[: full.index(stop)]
    assert reply.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="tiny", messages=messages, max_tokens=30, temperature=0, stop=[stop], stream=True) if c.choices)
    assert streamed == full[: full.index(stop)]


def test_local_image_paths_only_inside_the_allowed_folder(server, client, pipe):
    inside = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": str(server["images"] / "five.png")}},
                                           {"type": "text", "text": "Describe this."}]}]
    reply = client.chat.completions.create(model="tiny", messages=inside, max_tokens=8, temperature=0)
    assert reply.choices[0].message.content == alone(pipe, user(random_image(5), "Describe this."), max_new_tokens=8).text
    outside = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "/etc/passwd"}},
                                            {"type": "text", "text": "hi"}]}]
    r = post(server, outside_body := {"model": "tiny", "messages": outside})
    assert r.status_code == 400 and "outside the allowed image folder" in r.json()["error"]["message"], outside_body


def post(server, body, headers=None, raw: bytes | None = None):
    headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json", **(headers or {})}
    return httpx.post(server["base"] + "/v1/chat/completions", content=raw if raw is not None else json.dumps(body),
                      headers=headers, timeout=60)


@pytest.mark.parametrize("case", ["malformed", "no-messages", "not-an-image", "bad-base64", "remote-url", "unknown-field",
                                  "too-long", "bad-temperature", "penalty", "n", "wrong-model", "assistant-last",
                                  "empty-prompt"])
def test_bad_input_gets_a_4xx_naming_the_problem(server, case):
    ok_msgs = user(None, "hi")
    bodies = {
        "no-messages": ({"model": "tiny"}, 400, "'messages' is required"),
        "not-an-image": ({"model": "tiny", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(b"not a png").decode()}},
            {"type": "text", "text": "hi"}]}]}, 400, "image"),
        "bad-base64": ({"model": "tiny", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}]}]}, 400, "not valid base64"),
        "remote-url": ({"model": "tiny", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]}, 400, "remote images"),
        "unknown-field": ({"model": "tiny", "messages": ok_msgs, "foo": 1}, 400, "Unknown field(s) 'foo'"),
        "too-long": ({"model": "tiny", "messages": ok_msgs, "max_tokens": 10**6}, 400, "context"),
        "bad-temperature": ({"model": "tiny", "messages": ok_msgs, "temperature": 7}, 400, "'temperature'"),
        "penalty": ({"model": "tiny", "messages": ok_msgs, "presence_penalty": 0.5}, 400, "presence_penalty"),
        "n": ({"model": "tiny", "messages": ok_msgs, "n": 3}, 400, "n=3"),
        "wrong-model": ({"model": "gpt-4o", "messages": ok_msgs}, 404, "not served here"),
        "assistant-last": ({"model": "tiny", "messages": [{"role": "assistant", "content": "x"}]}, 400, "last message"),
        "empty-prompt": ({"model": "tiny", "messages": user(None, "   ")}, 400, "no text"),
    }
    if case == "malformed":
        r, status, words = post(server, None, raw=b'{"model": "tiny", "messages": ['), 400, "not valid JSON"
    else:
        body, status, words = bodies[case]
        r = post(server, body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert words in error["message"] and error["type"]
    if case == "too-long":
        assert error["code"] == "context_length_exceeded"


def test_oversized_body_is_refused(server):
    big = random_image(9, 600, 600)  # random pixels: a PNG far above the 0.25 MB limit
    r = post(server, {"model": "tiny", "messages": user(big, "hi")})
    assert r.status_code == 413 and "larger than this server's limit" in r.json()["error"]["message"]


def test_api_key_is_required(server):
    body = {"model": "tiny", "messages": user(None, "hi"), "max_tokens": 2}
    assert post(server, body, headers={"Authorization": ""}).status_code == 401
    wrong = post(server, body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(server["base"] + "/v1/models").status_code == 401


def test_a_client_that_disconnects_mid_stream_frees_its_slot(server):
    body = {"model": "tiny", "messages": user(random_image(6), "Describe this."), "max_tokens": 400,
            "temperature": 0, "stream": True}
    with httpx.stream("POST", server["base"] + "/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as r:
        lines = r.iter_lines()
        assert next(lines).startswith("data: ")
    deadline = time.monotonic() + 60  # bounded wait for the engine's next step
    while httpx.get(server["base"] + "/health").json()["active"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert httpx.get(server["base"] + "/health").json()["active"] == 0


def test_metrics_are_prometheus_text(server, client):
    client.chat.completions.create(model="tiny", messages=user(None, "hi"), max_tokens=3, temperature=0)
    text = httpx.get(server["base"] + "/metrics").text
    for name in ("vlmspec_requests_total", "vlmspec_completion_tokens_total", "vlmspec_target_forwards_total",
                 "vlmspec_request_tau_bucket", "vlmspec_request_latency_seconds_bucket", "vlmspec_queue_depth",
                 "vlmspec_active_sequences", "vlmspec_time_to_first_token_seconds_bucket"):
        assert name in text
    assert 'vlmspec_requests_total{status="ok"}' in text


def test_serve_binds_to_loopback_by_default():
    from vlmspec.cli import build_parser

    args = build_parser().parse_args(["serve"])
    assert args.host == "127.0.0.1" and args.func.__name__ == "_run_serve"
