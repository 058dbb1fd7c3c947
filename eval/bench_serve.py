"""Load test of `vlmspec serve`: concurrent HTTP clients vs the same requests one at a time.

A server process is started on 127.0.0.1 (loopback only), C clients each send R chat
completions (greedy, an image and a prompt each, a mix of prompt styles), all counted and
time-boxed. Then the server is stopped and the same requests run one at a time through
`vlmspec.generate` in this process. Reported: requests answered / lost / errored, whether
every server answer equals its `vlmspec.generate` answer, throughput (completion tokens/s
over the wall time of each phase) and p50 / p95 latency. A Markdown report and a plot.

    python eval/bench_serve.py                                 # default model, 16 clients x 4 requests
    python eval/bench_serve.py --clients 4 --requests 2 --max-tokens 16 --out /tmp/serve.md
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

PROMPTS = (  # a mix of styles; none of them is the training template's exact wording
    "Describe this picture in a few sentences.",
    "What colour is the largest shape?",
    "How many shapes can you see? Answer with a number.",
    "List the objects in the image, one per line.",
    "Write a haiku about autumn.",
    "Is there anything red in the image?",
)


def cpu_description() -> str:
    """CPU model and the vector units that decide kernel choices (recorded in every report)."""
    model, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    units = [u for u in ("avx2", "avx512f", "amx_bf16") if u in flags]
    return f"{model}, {os.cpu_count()} cores, {'/'.join(units) or 'no AVX2'}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


def build_requests(clients: int, per_client: int) -> list[dict]:
    from vlmspec.data import generate_scene

    requests = []
    for i in range(clients * per_client):
        image = generate_scene(f"bench-serve-{i}").image
        requests.append({"index": i, "image": image, "prompt": PROMPTS[i % len(PROMPTS)]})
    return requests


def data_url(image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def start_server(args, port: int):
    """The server under test (loopback) and its /health answer."""
    from vlmspec.serving.launch import start_server as launch

    command = ["--max-batch", str(args.max_batch), "--drafter", args.drafter, "--model-id", "bench"]
    if args.target:
        command += ["--target", args.target]
    proc, _, health = launch(command, port=port, timeout_s=args.startup_timeout)
    return proc, health


async def run_clients(base: str, requests: list[dict], clients: int, max_tokens: int, time_box: float) -> dict:
    """C clients, each sending its share of requests one after another; every outcome is counted."""
    import httpx

    outcomes: dict[int, dict] = {}
    deadline = time.monotonic() + time_box

    async def client(worker: int, http: httpx.AsyncClient) -> None:
        for req in requests[worker::clients]:
            body = {"model": "bench", "temperature": 0, "max_tokens": max_tokens, "messages": [{
                "role": "user", "content": [{"type": "image_url", "image_url": {"url": req["url"]}},
                                            {"type": "text", "text": req["prompt"]}]}]}
            t0 = time.perf_counter()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                outcomes[req["index"]] = {"status": "not sent (time box)"}
                continue
            try:
                reply = await http.post(base + "/v1/chat/completions", json=body, timeout=remaining)
            except httpx.HTTPError as exc:
                outcomes[req["index"]] = {"status": f"error: {type(exc).__name__}"}
                continue
            seconds = time.perf_counter() - t0
            if reply.status_code != 200:
                outcomes[req["index"]] = {"status": f"HTTP {reply.status_code}: {reply.text[:200]}"}
                continue
            data = reply.json()
            outcomes[req["index"]] = {"status": "ok", "seconds": seconds, "text": data["choices"][0]["message"]
                                      ["content"], "tokens": data["usage"]["completion_tokens"],
                                      "tau": data["vlmspec"]["tau"]}

    limits = httpx.Limits(max_connections=clients)
    async with httpx.AsyncClient(limits=limits) as http:
        t0 = time.perf_counter()
        await asyncio.gather(*(client(w, http) for w in range(clients)))
        wall = time.perf_counter() - t0
    return {"outcomes": outcomes, "wall": wall}


def run_sequential(args, requests: list[dict]) -> dict:
    import vlmspec

    def one(req):
        return vlmspec.generate(req["image"], req["prompt"], target=args.target, drafter=args.drafter,
                                max_new_tokens=args.max_tokens)

    one(requests[0])  # load + warm-up, not timed (the server's load is not timed either)
    outcomes = {}
    t0 = time.perf_counter()
    for req in requests:
        s = time.perf_counter()
        result = one(req)
        outcomes[req["index"]] = {"seconds": time.perf_counter() - s, "text": result.text,
                                  "tokens": result.metrics.new_tokens, "tau": result.metrics.tau}
    return {"outcomes": outcomes, "wall": time.perf_counter() - t0}


def summarize(phase: dict) -> dict:
    done = [o for o in phase["outcomes"].values() if o.get("status", "ok") == "ok"]
    seconds = [o["seconds"] for o in done]
    tokens = sum(o["tokens"] for o in done)
    return {"answered": len(done), "tokens": tokens, "wall": phase["wall"], "tok_s": tokens / phase["wall"],
            "req_s": len(done) / phase["wall"], "p50": percentile(seconds, 50) if seconds else None,
            "p95": percentile(seconds, 95) if seconds else None,
            "mean_tau": statistics.mean(o["tau"] for o in done) if done else None}


def plot(server: dict, sequential: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (lat, thr) = plt.subplots(1, 2, figsize=(10, 4))
    for name, phase in (("server (concurrent)", server), ("vlmspec.generate one at a time", sequential)):
        seconds = sorted(o["seconds"] for o in phase["outcomes"].values() if "seconds" in o)
        lat.plot(seconds, [(i + 1) / len(seconds) for i in range(len(seconds))], label=name)
    lat.set_xlabel("request latency (s)")
    lat.set_ylabel("share of requests")
    lat.set_title("Latency CDF")
    lat.legend()
    s, q = summarize(server), summarize(sequential)
    bars = thr.bar(["server", "one at a time"], [s["tok_s"], q["tok_s"]], color=["tab:blue", "tab:orange"])
    thr.bar_label(bars, fmt="%.1f")
    thr.set_ylabel("completion tokens / s")
    thr.set_title(f"Throughput ({s['tok_s'] / q['tok_s']:.2f}x)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    from vlmspec.atomic import atomic_write_bytes

    atomic_write_bytes(path, buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default=None, help="checkpoint dir or name (default: the default model)")
    parser.add_argument("--drafter", default="auto")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=4, help="requests per client")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--time-box", type=float, default=900.0, help="seconds for the concurrent phase")
    parser.add_argument("--startup-timeout", type=float, default=300.0)
    parser.add_argument("--out", default="eval/results/serve.md")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.requests < 1 or args.max_tokens < 1:
        parser.error("--clients, --requests and --max-tokens must be >= 1")

    from vlmspec.atomic import atomic_write_text

    requests = build_requests(args.clients, args.requests)
    for req in requests:
        req["url"] = data_url(req["image"])
    from vlmspec.serving.launch import free_port

    port = free_port()
    proc, health = start_server(args, port)
    try:
        warm = asyncio.run(run_clients(f"http://127.0.0.1:{port}", [{**requests[0], "index": -1}], 1, 8, 120.0))
        if warm["outcomes"][-1]["status"] != "ok":  # one untimed request, as the baseline gets one
            raise RuntimeError(f"the server's warm-up request failed: {warm['outcomes'][-1]['status']}")
        server = asyncio.run(run_clients(f"http://127.0.0.1:{port}", requests, args.clients, args.max_tokens,
                                         args.time_box))
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    sequential = run_sequential(args, requests)

    s, q = summarize(server), summarize(sequential)
    failures = {i: o["status"] for i, o in server["outcomes"].items() if o["status"] != "ok"}
    lost = len(requests) - len(server["outcomes"])
    mismatched = [i for i, o in server["outcomes"].items()
                  if o["status"] == "ok" and o["text"] != sequential["outcomes"][i]["text"]]
    out = Path(args.out)
    plot(server, sequential, out.with_suffix(".png"))
    lines = [
        "# `vlmspec serve` load test",
        "",
        f"- {args.clients} concurrent clients x {args.requests} requests = {len(requests)} chat completions over "
        f"loopback, greedy, max_tokens {args.max_tokens}, an image + one of {len(PROMPTS)} prompt styles each; "
        f"server `--max-batch {args.max_batch}`, drafter `{health.get('drafter')}`, target `{health.get('model')}`",
        f"- machine: {cpu_description()}; server device: {health.get('device', 'n/a')}",
        f"- time box {args.time_box:.0f} s for the concurrent phase; the baseline is the same requests one at a "
        "time through `vlmspec.generate` in one process (model loaded and warmed up first, as the server's is)",
        f"- regenerate: `python eval/bench_serve.py --clients {args.clients} --requests {args.requests} "
        f"--max-tokens {args.max_tokens} --max-batch {args.max_batch}`",
        "",
        "| run | answered | errors | lost | completion tokens | wall (s) | tokens/s | requests/s | p50 latency (s) "
        "| p95 latency (s) | mean tau |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| server, {args.clients} clients | {s['answered']} | {len(failures)} | {lost} | {s['tokens']} | "
        f"{s['wall']:.1f} | {s['tok_s']:.1f} | {s['req_s']:.2f} | {s['p50']:.2f} | {s['p95']:.2f} | "
        f"{s['mean_tau']:.2f} |",
        f"| `vlmspec.generate`, one at a time | {q['answered']} | 0 | 0 | {q['tokens']} | {q['wall']:.1f} | "
        f"{q['tok_s']:.1f} | {q['req_s']:.2f} | {q['p50']:.2f} | {q['p95']:.2f} | {q['mean_tau']:.2f} |",
        "",
        f"Throughput server / one at a time: **{s['tok_s'] / q['tok_s']:.2f}x**. Server answers equal to "
        f"`vlmspec.generate`: {s['answered'] - len(mismatched)} / {s['answered']}"
        + (f" (differ: {mismatched})" if mismatched else "") + ".",
        "Latency is per request as the client sees it: under load it includes waiting for a batch slot and "
        "sharing each step with up to `--max-batch` others, so it is not comparable to a lone request's; "
        "throughput is the figure that says what batching buys.",
        "",
        f"![latency and throughput]({out.with_suffix('.png').name})",
    ]
    if failures:
        lines += ["", "Failed requests:", ""] + [f"- {i}: {status}" for i, status in sorted(failures.items())]
    text = "\n".join(lines) + "\n"
    atomic_write_text(out, text)
    print(text)
    print(json.dumps({"server": s, "sequential": q, "failures": failures, "lost": lost,
                      "mismatched": mismatched}), file=sys.stderr)
    return 0 if not failures and not lost and not mismatched else 1


if __name__ == "__main__":
    sys.exit(main())
