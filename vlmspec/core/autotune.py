"""Auto-tuning the draft shape from measured verify cost and observed acceptance, per machine.

Two halves:

1. Measuring (`measure_verify_costs`, `load_or_measure`): the seconds one target forward
   takes to score n tokens on top of a KV cache of realistic length, for a few n (median
   of a few repeats). On CPU this curve decides everything: if 8 tokens cost 1.1x one
   token, long drafts pay; if they cost 4x, only short ones do. Results are cached as
   JSON under `$VLMSPEC_HOME/autotune/` (default `~/.cache/vlmspec/autotune/`), one file
   per key = (device / CPU model name, torch version, thread count, model fingerprint
   = model type + hidden size + layers + vocab + dtype, CPU fast path on/off, context
   length), written atomically (temp file + os.replace). A later call with the same key
   reads the file instead of measuring; token counts missing from it are measured and merged.

2. Choosing (pure functions, unit-testable with made-up numbers):
   * `choose_chain_length(costs, draft_cost_per_token, acceptance)`: draft length k
     maximising expected tokens per second for a chain:
         E[tokens | k] = 1 + sum_{i=1..k} prod_{j<=i} p_j     (bonus token included; tau)
         cost(k)       = k * draft_cost_per_token + verify(k + 1)
     where p_j is the acceptance rate of draft position j given positions < j were
     accepted (a scalar alpha means p_j = alpha: Leviathan et al.'s (1 - a^(k+1)) / (1 - a)).
   * `choose_tree(costs, draft_cost_per_level, acceptance_by_depth, grid)`: EAGLE-2 style
     dynamic tree (`total_tokens` draft nodes kept, `depth` levels, `top_k` children per
     expanded node and frontier nodes per level, as in vlmspec/drafters/eagle.py).
     Tree model (documented assumption, a calibrated drafter):
       - at depth d the drafter's rank-r candidate (r = 0 is its top-1) is the target's
         token with probability a_d * (1 - a_d)^r, where a_d = acceptance_by_depth[d - 1]
         is the top-1 acceptance rate at depth d (what a chain measures); so the top-r
         candidates together cover 1 - (1 - a_d)^r of the mass;
       - a node's probability of lying on the accepted path is the product of these along
         its path, and the drafter's path score is that same number;
       - the tree is grown exactly as EAGLE-2 does: level 1 = the root's top_k children; at
         each next level the top_k best frontier nodes get top_k children each; after
         `depth` levels the `total_tokens` best nodes are kept (ancestor-closed, since a
         child never scores above its parent).
       Then E[tokens per step] = 1 + sum of the kept nodes' probabilities (nodes of one
       depth are mutually exclusive, so their sum is P(accepted length >= d)), and
         cost = depth * draft_cost_per_level + verify(kept nodes + 1).
   Verify costs for token counts not measured are interpolated linearly between the
   measured ones and extrapolated beyond the largest with the slope of the last two.

    costs = load_or_measure(pipe.target, token_counts=(1, 2, 4, 8, 16))
    k = choose_chain_length(costs, draft_cost_per_token=0.004, acceptance=0.7)
    tree = choose_tree(costs, 0.006, [0.8, 0.7, 0.6, 0.6], TreeGrid())
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import platform
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from ..atomic import atomic_write_json
from ..errors import InputError, OneTimeSetupWarning

CACHE_VERSION = 1
DEFAULT_TOKEN_COUNTS = (1, 2, 4, 8, 16)


# ---------------------------------------------------------------- verify costs
def interpolate_cost(costs: Mapping[int, float], tokens: int) -> float:
    """Seconds to verify `tokens` tokens: measured, else piecewise-linear in the measured points."""
    if not costs:
        raise InputError("need at least one measured verify cost")
    if tokens in costs:
        return float(costs[tokens])
    points = sorted((int(n), float(s)) for n, s in costs.items())
    if tokens <= points[0][0]:
        return points[0][1]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x0 <= tokens <= x1:
            return y0 + (y1 - y0) * (tokens - x0) / (x1 - x0)
    if len(points) == 1:
        return points[0][1]
    (x0, y0), (x1, y1) = points[-2], points[-1]
    slope = max((y1 - y0) / (x1 - x0), 0.0)
    return y1 + slope * (tokens - x1)


def _check_costs(costs: Mapping[int, float]) -> None:
    if not costs:
        raise InputError("verify costs are empty; measure at least one token count")
    for n, s in costs.items():
        if int(n) < 1 or not (float(s) > 0):
            raise InputError(f"verify costs need token counts >= 1 and positive seconds, got {n}: {s}")


# ---------------------------------------------------------------- chains
def expected_chain_tokens(acceptance: float | Sequence[float], k: int) -> float:
    """E[tokens per step] for a k-token chain, bonus included: 1 + sum_i prod_{j<=i} p_j."""
    rates = _rates(acceptance, k)
    total, reach = 1.0, 1.0
    for p in rates[:k]:
        reach *= p
        total += reach
    return total


def _rates(acceptance: float | Sequence[float], k: int) -> list[float]:
    if isinstance(acceptance, (int, float)):
        rates = [float(acceptance)]
    else:
        rates = [float(a) for a in acceptance]
    if not rates:
        raise InputError("acceptance must be a rate in [0, 1] or a non-empty sequence of them")
    if any(not (0.0 <= a <= 1.0) for a in rates):
        raise InputError(f"acceptance rates must lie in [0, 1], got {rates}")
    return rates + [rates[-1]] * max(k - len(rates), 0)  # positions past the data keep the last rate


def choose_chain_length(
    costs: Mapping[int, float],
    draft_cost_per_token: float,
    acceptance: float | Sequence[float],
    *,
    min_length: int = 0,
    max_length: int | None = None,
) -> int:
    """Draft length k in [min_length, max_length] maximising E[tokens | k] / cost(k). 0 = don't draft.

    costs: {tokens verified: seconds}; max_length defaults to (largest measured count - 1).
    """
    _check_costs(costs)
    if draft_cost_per_token < 0:
        raise InputError(f"draft_cost_per_token must be >= 0, got {draft_cost_per_token}")
    if max_length is None:
        max_length = max(int(n) for n in costs) - 1
    if not (0 <= min_length <= max_length):
        raise InputError(f"need 0 <= min_length <= max_length, got {min_length}, {max_length}")
    _rates(acceptance, 1)  # validate

    def rate(k: int) -> float:
        cost = k * draft_cost_per_token + interpolate_cost(costs, k + 1)
        return expected_chain_tokens(acceptance, k) / cost

    return max(range(min_length, max_length + 1), key=lambda k: (rate(k), -k))


def per_position_acceptance(steps: Sequence[tuple[int, int]], prior: float = 0.5, strength: float = 1.0) -> list[float]:
    """Per-position acceptance rates from observed (drafted, accepted) pairs of chain steps.

    p_i = (#steps with accepted >= i + strength * prior) / (#steps that drafted >= i and
    accepted >= i - 1 + strength): the rate at position i given positions < i were accepted.
    """
    if not steps:
        raise InputError("need at least one observed (drafted, accepted) step")
    longest = max(d for d, _ in steps)
    rates = []
    for i in range(1, longest + 1):
        tried = sum(1 for d, a in steps if d >= i and a >= i - 1)
        hits = sum(1 for d, a in steps if d >= i and a >= i)
        rates.append((hits + strength * prior) / (tried + strength))
    return rates


# ---------------------------------------------------------------- trees
@dataclass(frozen=True)
class TreeGrid:
    """Candidate dynamic-tree shapes. Validated at construction."""

    total_tokens: tuple[int, ...] = (4, 8, 16, 24, 32, 48, 64)  # draft nodes kept (root excluded)
    depth: tuple[int, ...] = (1, 2, 3, 4, 5, 6, 7, 8)
    top_k: tuple[int, ...] = (1, 2, 4, 8)

    def __post_init__(self) -> None:
        for name in ("total_tokens", "depth", "top_k"):
            values = tuple(getattr(self, name))
            if not values or any(not isinstance(v, int) or v < 1 for v in values):
                raise InputError(f"TreeGrid.{name} must be a non-empty tuple of ints >= 1, got {values!r}")
            object.__setattr__(self, name, values)


@dataclass(frozen=True)
class TreeChoice:
    total_tokens: int
    depth: int
    top_k: int
    nodes: int  # draft nodes the model keeps (<= total_tokens when the tree cannot grow that large)
    expected_tokens: float  # E[tokens per step], bonus included (tau)
    step_seconds: float  # depth * draft cost per level + verify(nodes + 1)
    tokens_per_second: float


def tree_node_probabilities(acceptance_by_depth: Sequence[float], total_tokens: int, depth: int, top_k: int) -> list[tuple[int, float]]:
    """(depth, P(on accepted path)) of the nodes kept by an EAGLE-2 tree under the model above."""
    rates = _rates(list(acceptance_by_depth), depth)
    frontier = [1.0]  # probabilities of the nodes expanded at the current level (the root)
    generated: list[tuple[float, int]] = []
    for d in range(1, depth + 1):
        a = rates[d - 1]
        level = [p * a * (1 - a) ** r for p in frontier for r in range(top_k)]
        generated.extend((p, d) for p in level)
        frontier = heapq.nlargest(top_k, level)
    kept = heapq.nlargest(total_tokens, generated, key=lambda item: (item[0], -item[1]))
    return [(d, p) for p, d in kept]


def expected_tree_tokens(acceptance_by_depth: Sequence[float], total_tokens: int, depth: int, top_k: int) -> tuple[float, int]:
    """(E[tokens per step] incl. bonus, nodes kept) for an EAGLE-2 tree under the model above."""
    kept = tree_node_probabilities(acceptance_by_depth, total_tokens, depth, top_k)
    return 1.0 + sum(p for _, p in kept), len(kept)


def choose_tree(
    costs: Mapping[int, float],
    draft_cost_per_level: float,
    acceptance_by_depth: Sequence[float],
    grid: TreeGrid = TreeGrid(),
) -> TreeChoice:
    """The (total_tokens, depth, top_k) of `grid` maximising expected tokens per second."""
    _check_costs(costs)
    if draft_cost_per_level < 0:
        raise InputError(f"draft_cost_per_level must be >= 0, got {draft_cost_per_level}")
    _rates(list(acceptance_by_depth), 1)
    best: TreeChoice | None = None
    for total in grid.total_tokens:
        for depth in grid.depth:
            for top_k in grid.top_k:
                tokens, nodes = expected_tree_tokens(acceptance_by_depth, total, depth, top_k)
                seconds = depth * draft_cost_per_level + interpolate_cost(costs, nodes + 1)
                choice = TreeChoice(total, depth, top_k, nodes, tokens, seconds, tokens / seconds)
                # ties: prefer the smaller tree (less memory, less drafting)
                if best is None or (choice.tokens_per_second, -nodes, -depth) > (best.tokens_per_second, -best.nodes, -best.depth):
                    best = choice
    assert best is not None
    return best


# ---------------------------------------------------------------- measuring
VerifyFn = Callable[[int], Any]  # runs one verify forward of n tokens on top of the prepared cache


def _verify_fn_for_target(target, context_length: int) -> tuple[VerifyFn, Callable[[], None]]:
    """A verify callable for a vlmspec `Target` (prefill / forward / rollback): (run(n), cleanup)."""
    from .cache import cache_length

    vocab = int(getattr(target, "vocab_size", 0) or 0)
    if vocab <= 0:
        raise InputError("the target has no vocab_size; pass a callable run(n_tokens) instead")
    device = getattr(target, "device", torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (1, context_length), generator=generator).to(device)  # [1, context]
    image_token = getattr(target, "image_token_id", None)
    if image_token is not None:
        ids[ids == image_token] = 0  # text only: no image placeholder without pixels
    state, _ = target.prefill({"input_ids": ids, "attention_mask": torch.ones_like(ids)})
    base = cache_length(state.cache)
    tokens = torch.randint(0, vocab, (1, 4096), generator=generator).to(device)
    if image_token is not None:
        tokens[tokens == image_token] = 0

    def run(n: int) -> None:
        try:
            target.forward(state, tokens[:, :n])  # [1, n] on top of the cache
        finally:
            target.rollback(state, base)

    return run, lambda: None


def measure_verify_costs(
    target,
    token_counts: Sequence[int] = DEFAULT_TOKEN_COUNTS,
    *,
    context_length: int = 256,
    repeats: int = 5,
    warmup: int = 1,
    statistic: str = "median",
    timer: Callable[[], float] = time.perf_counter,
) -> dict[int, float]:
    """{n: seconds of one forward scoring n tokens on a cache of `context_length`} (median of repeats).

    `target`: a vlmspec `Target` (prefill / forward / rollback are used; the cache is
    rolled back after every forward), or any callable `run(n)` that does one such forward.
    Token counts are interleaved across repeats so background load hits all of them alike.
    """
    counts = sorted({int(n) for n in token_counts})
    if not counts or counts[0] < 1:
        raise InputError(f"token_counts must be integers >= 1, got {list(token_counts)}")
    if repeats < 1 or warmup < 0:
        raise InputError(f"need repeats >= 1 and warmup >= 0, got {repeats}, {warmup}")
    if statistic not in ("median", "min"):
        raise InputError(f"statistic must be 'median' or 'min', got {statistic!r}")
    if callable(target) and not hasattr(target, "prefill"):
        run = target
    else:
        run, _ = _verify_fn_for_target(target, context_length)
    for _ in range(warmup):
        for n in counts:
            run(n)
    samples: dict[int, list[float]] = {n: [] for n in counts}
    for _ in range(repeats):
        for n in counts:
            start = timer()
            run(n)
            samples[n].append(timer() - start)
    pick = statistics.median if statistic == "median" else min
    return {n: float(pick(values)) for n, values in samples.items()}


# ---------------------------------------------------------------- cache
def vlmspec_home() -> Path:
    return Path(os.environ.get("VLMSPEC_HOME") or Path.home() / ".cache" / "vlmspec")


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown-cpu"


def model_fingerprint(model) -> str:
    """model type + hidden size + layers + vocab + dtype (+ device type) of a transformers model."""
    config = getattr(model, "config", None)
    if config is None:
        raise InputError("cannot fingerprint a model without .config; pass fingerprint='...'")
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    try:
        param = next(model.parameters())
        dtype, device = str(param.dtype).replace("torch.", ""), param.device.type
    except (StopIteration, AttributeError):
        dtype, device = "unknown", "unknown"
    parts = [
        str(getattr(config, "model_type", "?")),
        f"h{getattr(text, 'hidden_size', '?')}",
        f"l{getattr(text, 'num_hidden_layers', '?')}",
        f"v{getattr(text, 'vocab_size', '?')}",
        dtype,
        device,
    ]
    return "-".join(parts)


def cache_key(
    fingerprint: str,
    *,
    context_length: int,
    fast_cpu: bool | str | None = None,
    threads: int | None = None,
    device: str = "cpu",
    statistic: str = "median",
) -> dict:
    """Everything a verify-cost measurement depends on."""
    if device.startswith("cuda") and torch.cuda.is_available():
        hardware = torch.cuda.get_device_name(torch.device(device))
    else:
        hardware = cpu_name()
    return {
        "version": CACHE_VERSION,
        "hardware": hardware,
        "torch": torch.__version__,
        "threads": int(threads if threads is not None else torch.get_num_threads()),
        "model": fingerprint,
        "fast_cpu": fast_cpu,
        "context_length": int(context_length),
        "statistic": statistic,
    }


def cache_path(key: dict, home: str | os.PathLike | None = None) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    root = Path(home) if home is not None else vlmspec_home()
    return root / "autotune" / f"verify-{digest}.json"


def _read_cache(path: Path, key: dict) -> dict[int, float]:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        if payload.get("key") != key:
            return {}
        return {int(n): float(s) for n, s in payload.get("costs", {}).items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}  # missing or corrupt: measure again


NOISE_RATIO = 2.0  # verifying n tokens may not cost more than twice verifying m > n tokens


def plausible_costs(costs: Mapping[int, float], ratio: float = NOISE_RATIO) -> bool:
    """Whether a cost table could come from a quiet machine: verifying more tokens is never far
    cheaper than verifying fewer (a load spike during one measurement breaks this)."""
    counts = sorted(costs)
    return all(costs[n] <= ratio * costs[m] for i, n in enumerate(counts) for m in counts[i + 1:])


def _costs_text(costs: Mapping[int, float]) -> str:
    return " ".join(f"{n}:{s * 1e3:.1f}ms" for n, s in sorted(costs.items()))


PACKED_MARKER = "_vlmspec_fast"  # the attribute vlmspec.fast puts on every linear it packs


def has_packed_linears(model) -> bool:
    """Whether `vlmspec.fast` packed some of the model's linears (read off the marker, so the
    core needs no import from above it)."""
    return any(hasattr(m, PACKED_MARKER) for m in model.modules())


def load_or_measure(
    target,
    token_counts: Sequence[int] = DEFAULT_TOKEN_COUNTS,
    *,
    fingerprint: str | None = None,
    fast_cpu: bool | str | None = None,
    context_length: int = 256,
    repeats: int = 5,
    home: str | os.PathLike | None = None,
    refresh: bool = False,
    statistic: str = "median",
    **measure_kwargs,
) -> dict[int, float]:
    """Verify costs for `token_counts` from this machine's cache, measuring (and caching) what is missing.

    fingerprint: defaults to `model_fingerprint(target.model)`; pass one for a plain callable.
    fast_cpu: whether (or which) CPU fast path is on; defaults to whether target.model has packed linears.
    """
    model = getattr(target, "model", None)
    if fingerprint is None:
        if model is None:
            raise InputError("pass fingerprint='...' when the target has no .model")
        fingerprint = model_fingerprint(model)
    if fast_cpu is None and model is not None:
        fast_cpu = has_packed_linears(model)
    device = "cpu"
    if model is not None:
        try:
            device = str(next(model.parameters()).device)
        except StopIteration:
            pass
    key = cache_key(fingerprint, context_length=context_length, fast_cpu=fast_cpu, device=device, statistic=statistic)
    path = cache_path(key, home)
    costs = {} if refresh else _read_cache(path, key)
    missing = sorted({int(n) for n in token_counts} - set(costs))
    if missing:
        warnings.warn(f"measuring this model's verify cost for {len(missing)} token counts on this machine "
                      f"(once: cached in {path}, later runs skip it)", OneTimeSetupWarning, stacklevel=2)
        measure = lambda: measure_verify_costs(target, missing, context_length=context_length,  # noqa: E731
                                               repeats=repeats, statistic=statistic, **measure_kwargs)
        costs.update(measure())
        if not plausible_costs(costs):  # a busy machine: a bigger batch measured far cheaper than a smaller one
            costs.update(measure())
        if not plausible_costs(costs):
            warnings.warn(f"verify costs measured on a busy machine look wrong ({_costs_text(costs)}); used for "
                          "this run only, not cached: measure again when the machine is quiet", OneTimeSetupWarning,
                          stacklevel=2)
            return {int(n): costs[int(n)] for n in sorted({int(n) for n in token_counts})}
        atomic_write_json(path, {"key": key, "costs": {str(n): s for n, s in sorted(costs.items())}, "measured_at": time.time()},
                          indent=1, sort_keys=True)
    return {int(n): costs[int(n)] for n in sorted({int(n) for n in token_counts})}
