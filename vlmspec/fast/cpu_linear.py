"""Faster multi-row `nn.Linear` on CPU: weights pre-packed once for oneDNN or MKL.

Why: speculative decoding verifies k+1 tokens in one target forward, so its win depends
on that forward costing about as much as a 1-token forward. On CPU torch's stock fp32
`F.linear` runs 1 row as a matrix-vector product but 2+ rows as a GEMM that re-packs
the whole weight matrix on every call; for small row counts that packing dominates and
a 2..8-row forward can cost ~2x a 1-row one. Packing the weight once, into the layout
the GEMM kernel wants, removes that per-call cost.

Paths (all in this torch build, used through `torch.ops`, no extension to compile):
  "mkldnn": W' = torch.ops.mkldnn._reorder_linear_weight(W); y = torch.ops.mkldnn._linear_pointwise(x, W', b, "none", [], "")
            oneDNN inner product; any number of rows; row-invariant (row i of a k-row call equals a 1-row call).
  "mkl":    W' = torch.ops.mkl._mkl_reorder_linear_weight(W, R); y = torch.ops.mkl._mkl_linear(x, W', W, b, R)
            MKL packed GEMM for up to R rows; more rows (prefill) go through stock F.linear.
  "mkldnn-bf16": the same oneDNN op on a bfloat16 copy of a float32 weight (activations cast to bf16,
            the result back to float32, the bias added in float32). Only with
            FastConfig(reduced_precision=True), which vlmspec sets for drafters and never for a target:
            a drafter's output is a proposal the target checks, so its rounding changes speed, never
            what is generated. Where bf16 GEMMs are native (AVX512-BF16, AMX) it is several times
            cheaper than float32 for few rows; elsewhere the timing rejects it.
  "stock":  F.linear (what nn.Linear does).
  "auto":   (default) per distinct weight shape, time stock vs "mkldnn" (and "mkldnn-bf16" where
            allowed; the packed path faster over all row counts is kept) on 2, 4, 8, 16 rows and
            dispatch each call by its row count to the faster one (a per-shape "plan", e.g.
            "1:stock 2:stock 3-4:mkldnn 5-:mkldnn"); plans are cached per CPU / torch / threads in
            $VLMSPEC_HOME/fast/. Where oneDNN does not pay (an Intel CPU whose MKL GEMM is
            already good at few rows) it keeps stock, where it does (the AMD EPYC of the issue)
            it packs. Timing on a busy machine is noisy: a mis-pick costs speed, not accuracy.
Calls with at most `stock_rows` rows (default 1: plain decoding) keep F.linear, whose
matrix-vector path is already bandwidth-bound and which oneDNN's per-call overhead only slows.
MKL's packed GEMM was bit-identical to stock F.linear here but not faster; it is offered
only as an explicit backend.
These are the same ops torch.compile(freezing=True)'s inductor CPU pass emits for linears
(torch/_inductor/fx_passes/mkldnn_fusion.py), used eagerly: no graph capture, so dynamic
KV caches, tree masks and variable token counts keep working.

How: each selected `nn.Linear` gets its class switched in place to `PackedLinear` (a
subclass of nn.Linear): the same module object, the same `weight` / `bias` Parameters
(so state_dict keys, `save_pretrained`, tied LM-head/embedding weights and hooks are
untouched), plus a packed copy of the weight held outside the state dict. The packed
copy is rebuilt lazily when the weight changes (load_state_dict, in-place edits,
deepcopy, .to()), detected from the weight's storage pointer and version counter.
Gradients: when autograd is recording and a parameter requires grad the stock path is
used, so training is unaffected. Any error in a packed op (or a missing op) falls back
to F.linear for that layer, recorded in the report / `fast_status(model)`.
`restore(model)` switches every module back to plain nn.Linear and frees the copies.

Cost: one packed copy per layer (+1x the linear weights' memory). Weight dtypes: float32, and bfloat16
for a target loaded in bf16 (timed the same way; oneDNN runs bf16 GEMMs on AVX512-BF16 / AMX).

    from vlmspec.fast import FastConfig, accelerate_cpu, restore
    report = accelerate_cpu(model)                 # FastConfig(): backend="auto"
    print(report.summary())
    restore(model)
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.autotune import PACKED_MARKER, has_packed_linears

BACKENDS = ("auto", "mkldnn", "mkl", "mkldnn-bf16", "stock")  # mkldnn-bf16 only with reduced_precision
MODULE_GROUPS = ("language_model", "lm_head", "projector", "vision")
_PACKED_BACKENDS = ("mkldnn", "mkl")
REDUCED_PATH = "mkldnn-bf16"  # a bf16 copy of a float32 weight: drafters only (FastConfig.reduced_precision)
_TUNE_ROWS = (1, 2, 4, 8, 16)


@dataclass(frozen=True)
class FastConfig:
    """What `accelerate_cpu` does. Validated at construction."""

    enabled: bool = True
    backend: str = "auto"  # one of BACKENDS, see the module docstring
    modules: tuple[str, ...] = ("language_model", "lm_head", "projector")  # subset of MODULE_GROUPS
    min_params: int = 1024  # skip linears with fewer weight elements (out * in)
    stock_rows: int = 1  # calls with at most this many rows use F.linear (1 row: its matrix-vector path is already fast)
    mkl_max_rows: int = 32  # "mkl": rows packed for; calls with more rows use F.linear
    # Weight dtypes to consider. bfloat16 is timed like float32 (stock vs oneDNN per row count) for a
    # target the user loaded in bf16; a float32 target never becomes bf16 (exactness is fp32's).
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16)
    tune_repeats: int = 5  # "auto": timing repeats per (shape, path, rows)
    tune_cache: bool = True  # "auto": keep the per-shape plans in $VLMSPEC_HOME/fast/ (per CPU, torch, threads)
    # "auto" may also time a bf16 copy of float32 weights ("mkldnn-bf16"). Never for a target (its
    # float32 output is the reference); for a drafter it changes proposals, not outputs.
    reduced_precision: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.enabled, bool):
            raise ValueError(f"FastConfig.enabled must be a bool, got {self.enabled!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"FastConfig.backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.backend == "mkldnn-bf16" and self.reduced_precision is not True:
            raise ValueError("FastConfig.backend='mkldnn-bf16' rounds float32 weights to bf16: it needs "
                             "reduced_precision=True, which is for drafters only (never a target)")
        modules = (self.modules,) if isinstance(self.modules, str) else tuple(self.modules)
        unknown = [m for m in modules if m not in MODULE_GROUPS]
        if unknown or not modules:
            raise ValueError(f"FastConfig.modules must be a non-empty subset of {MODULE_GROUPS}, got {self.modules!r}")
        object.__setattr__(self, "modules", modules)
        if not (isinstance(self.min_params, int) and self.min_params >= 0):
            raise ValueError(f"FastConfig.min_params must be an int >= 0, got {self.min_params!r}")
        if not (isinstance(self.stock_rows, int) and self.stock_rows >= 0):
            raise ValueError(f"FastConfig.stock_rows must be an int >= 0, got {self.stock_rows!r}")
        if not (isinstance(self.mkl_max_rows, int) and 1 <= self.mkl_max_rows <= 4096):
            raise ValueError(f"FastConfig.mkl_max_rows must be an int in [1, 4096], got {self.mkl_max_rows!r}")
        if not self.dtypes or not all(isinstance(d, torch.dtype) for d in self.dtypes):
            raise ValueError(f"FastConfig.dtypes must be a non-empty tuple of torch dtypes, got {self.dtypes!r}")
        object.__setattr__(self, "dtypes", tuple(self.dtypes))
        if not isinstance(self.tune_cache, bool):
            raise ValueError(f"FastConfig.tune_cache must be a bool, got {self.tune_cache!r}")
        if not isinstance(self.reduced_precision, bool):
            raise ValueError(f"FastConfig.reduced_precision must be a bool, got {self.reduced_precision!r}")
        if not (isinstance(self.tune_repeats, int) and self.tune_repeats >= 1):
            raise ValueError(f"FastConfig.tune_repeats must be an int >= 1, got {self.tune_repeats!r}")


@dataclass
class FastReport:
    """What `accelerate_cpu` did."""

    enabled: bool  # True when at least one layer was switched to a packed path
    reason: str  # why nothing was done, or "" when something was
    backend: str  # the configured backend
    replaced: dict[str, str] = field(default_factory=dict)  # module name -> plan, e.g. "1:stock 2-:mkldnn"
    skipped: dict[str, str] = field(default_factory=dict)  # module name -> why it kept the stock path
    fallbacks: dict[str, str] = field(default_factory=dict)  # module name -> error that forced the stock path
    shape_choice: dict[str, str] = field(default_factory=dict)  # "OUTxIN[+bias]-dtype" -> plan (or the error)
    shape_timings_ms: dict[str, dict[str, dict[int, float]]] = field(default_factory=dict)  # "auto": shape -> path -> rows -> ms
    extra_bytes: int = 0  # memory held by the packed copies

    def summary(self) -> str:
        if not self.enabled:
            return f"CPU fast path off: {self.reason}"
        paths: dict[str, int] = {}
        for path in self.replaced.values():
            paths[path] = paths.get(path, 0) + 1
        text = ", ".join(f"{n} via {p}" for p, n in sorted(paths.items()))
        extra = f"; {len(self.fallbacks)} fell back to stock" if self.fallbacks else ""
        return (f"CPU fast path on: {len(self.replaced)} linears packed ({text}), {len(self.skipped)} left stock"
                f"{extra}; +{self.extra_bytes / 2**20:.0f} MiB")


# ---------------------------------------------------------------------- ops
def available_backends() -> dict[str, str]:
    """Packed paths this torch build offers: name -> "" when usable, else the reason it is not."""
    status: dict[str, str] = {}
    generator = torch.Generator().manual_seed(0)  # the caller's RNG state is not touched
    w = torch.randn(8, 16, generator=generator)
    x = torch.randn(2, 16, generator=generator)
    ref = F.linear(x, w)
    for name in _PACKED_BACKENDS:
        try:
            packed = _pack(name, w, 4)
            y = _run(name, x, packed, w, None, 4)
            if not torch.allclose(y, ref, atol=1e-4, rtol=1e-4):
                raise RuntimeError("wrong result in self-test")
            status[name] = ""
        except Exception as exc:  # missing op, CPU without the ISA, build without MKL/oneDNN, ...
            status[name] = f"{type(exc).__name__}: {exc}"[:200]
    return status


def _pack(backend: str, weight: torch.Tensor, mkl_rows: int) -> torch.Tensor:
    w = weight.detach()
    if backend in ("mkldnn", REDUCED_PATH):
        if not torch.backends.mkldnn.is_available():
            raise RuntimeError("torch.backends.mkldnn is not available in this build")
        if backend == REDUCED_PATH:
            w = w.to(torch.bfloat16)  # a bf16 copy of a float32 weight (drafters only)
        return torch.ops.mkldnn._reorder_linear_weight(w)  # [out, in] in oneDNN's blocked layout
    if backend == "mkl":
        if not torch.backends.mkl.is_available():
            raise RuntimeError("torch.backends.mkl is not available in this build")
        return torch.ops.mkl._mkl_reorder_linear_weight(w, mkl_rows)  # opaque MKL packed buffer
    raise ValueError(backend)


def _run(backend: str, x: torch.Tensor, packed: torch.Tensor, weight: torch.Tensor, bias, mkl_rows: int):
    if backend == "mkldnn":
        return torch.ops.mkldnn._linear_pointwise(x.contiguous(), packed, bias, "none", [], "")  # [..., out]
    if backend == REDUCED_PATH:
        y = torch.ops.mkldnn._linear_pointwise(x.to(torch.bfloat16).contiguous(), packed, None, "none", [], "")
        y = y.to(x.dtype)  # [..., out]
        return y if bias is None else y + bias
    rows = x.numel() // x.shape[-1]
    if rows > mkl_rows or rows == 0:
        return F.linear(x, weight, bias)
    x2 = x.reshape(rows, x.shape[-1])  # [rows, in]
    y = torch.ops.mkl._mkl_linear(x2, packed, weight.detach(), bias, mkl_rows)  # [rows, out]
    return y.reshape(*x.shape[:-1], weight.shape[0])


# ------------------------------------------------------------------- module
Plan = tuple  # ((max_rows, path), ...) ascending; rows above the last bound use the last path


def _path_for(plan: Plan, rows: int) -> str:
    for bound, path in plan:
        if rows <= bound:
            return path
    return plan[-1][1]


@dataclass
class _PackState:
    backend: str  # the packed path this layer uses ("mkldnn" | "mkl")
    mkl_rows: int
    plan: Plan = ()  # row-count -> path ("stock" or backend)
    packed: torch.Tensor | None = None
    key: tuple = ()
    broken: str = ""  # non-empty: the error that made this layer fall back to F.linear
    dtype: torch.dtype = torch.float32  # the weight dtype it was set up for; another one (.half()) -> F.linear

    # A packed copy cannot be copied or pickled (oneDNN tensors are opaque, an MKL packed
    # buffer must not move): copies start unpacked and repack on their first forward.
    def __getstate__(self) -> dict:
        return {**self.__dict__, "packed": None, "key": ()}

    def __deepcopy__(self, memo) -> "_PackState":
        return _PackState(self.backend, self.mkl_rows, self.plan, None, (), self.broken, self.dtype)


def _weight_key(weight: torch.Tensor, bias: torch.Tensor | None) -> tuple:
    """Changes when the weight is replaced (new storage) or edited in place (version counter)."""
    try:
        return (weight.data_ptr(), weight._version, None if bias is None else (bias.data_ptr(), bias._version))
    except RuntimeError:  # inference tensors have no version counter
        return (weight.data_ptr(), -1, None if bias is None else (bias.data_ptr(), -1))


class PackedLinear(nn.Linear):
    """nn.Linear whose CPU forward uses a weight packed once (set up only by `accelerate_cpu`)."""

    _vlmspec_fast: _PackState

    def _packed(self) -> torch.Tensor:
        state = self._vlmspec_fast
        key = _weight_key(self.weight, self.bias)
        if state.packed is None or key != state.key:
            state.packed = _pack(state.backend, self.weight, state.mkl_rows)
            state.key = _weight_key(self.weight, self.bias)
        return state.packed

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [..., in] -> [..., out]
        state = self._vlmspec_fast
        if (
            state.broken
            or x.device.type != "cpu"
            or x.dtype != self.weight.dtype
            or self.weight.device.type != "cpu"
            or (torch.is_grad_enabled() and (self.weight.requires_grad or x.requires_grad))
            or x.numel() == 0
            or _path_for(state.plan, x.numel() // x.shape[-1]) == "stock"
        ):
            return F.linear(x, self.weight, self.bias)
        try:
            return _run(state.backend, x, self._packed(), self.weight, self.bias, state.mkl_rows)
        except Exception as exc:  # an op missing or refusing this input: stock path from now on
            state.broken = f"{type(exc).__name__}: {exc}"[:300]
            state.packed = None
            return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        state = getattr(self, "_vlmspec_fast", None)
        path = "?" if state is None else ("stock (fallback)" if state.broken else _plan_text(state.plan))
        return f"{super().extra_repr()}, packed={path}"


def _plan_text(plan: Plan) -> str:
    parts, low = [], 1
    for bound, path in plan:
        high = "" if bound == _INF else str(bound)
        parts.append(f"{low}-{high}:{path}" if high != str(low) else f"{low}:{path}")
        low = bound + 1
    return " ".join(parts)


_INF = 1 << 62


def _merge(plan: list[tuple[int, str]]) -> Plan:
    merged: list[tuple[int, str]] = []
    for bound, path in plan:
        if merged and merged[-1][1] == path:
            merged[-1] = (bound, path)
        else:
            merged.append((bound, path))
    return tuple(merged)


# --------------------------------------------------------------------- API
def _group_of(name: str, module: nn.Module, output_embeddings: nn.Module | None) -> str:
    parts = name.split(".")
    if any(p in ("vision_tower", "vision_model", "visual", "vision_encoder") for p in parts):
        return "vision"
    if any("projector" in p for p in parts):
        return "projector"
    if module is output_embeddings or parts[-1] == "lm_head":
        return "lm_head"
    return "language_model"


def _time_ms(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


@torch.inference_mode()
def _tune_shape(weight: torch.Tensor, bias, packed_paths: tuple[str, ...], config: FastConfig):
    """Time stock vs each packed path per row count; keep the packed path that, used where it beats
    stock, costs least over the row counts; return (plan: per row count stock or that path,
    {path: {rows: ms}}). A packed path this CPU refuses (no bf16 oneDNN kernels, say) is left
    out; if the first one fails the shape fails. Inputs come from a local generator: the
    caller's RNG state is not touched."""
    packed = {}
    for path in packed_paths:
        try:
            packed[path] = _pack(path, weight, config.mkl_max_rows)
            _run(path, torch.zeros(1, 2, weight.shape[1], dtype=weight.dtype), packed[path], weight, bias,
                 config.mkl_max_rows)
        except Exception:
            if path == packed_paths[0]:
                raise
            packed.pop(path, None)  # an optional path (bf16) this machine cannot run
    packed_paths = tuple(packed)
    generator = torch.Generator().manual_seed(0)
    rows_list = [r for r in _TUNE_ROWS if r > config.stock_rows]
    timings: dict[str, dict[int, float]] = {"stock": {}, **{path: {} for path in packed_paths}}
    for rows in rows_list:
        x = torch.randn(1, rows, weight.shape[1], generator=generator).to(weight.dtype)  # [1, rows, in]
        fns = {"stock": lambda x=x: F.linear(x, weight, bias)}
        fns.update({path: (lambda x=x, path=path: _run(path, x, packed[path], weight, bias, config.mkl_max_rows))
                    for path in packed_paths})
        for fn in fns.values():
            fn()  # warm-up
        for _ in range(2):  # interleaved rounds so background noise hits every path alike
            for name, fn in fns.items():
                ms = _time_ms(fn, config.tune_repeats)
                timings[name][rows] = min(ms, timings[name].get(rows, float("inf")))
    best = min(packed_paths, key=lambda path: sum(min(timings["stock"][r], timings[path][r]) for r in rows_list))
    plan = [(config.stock_rows, "stock")] if config.stock_rows else []
    for i, rows in enumerate(rows_list):
        bound = _INF if i == len(rows_list) - 1 else rows
        plan.append((bound, min(("stock", best), key=lambda n: timings[n][rows])))
    return _merge(plan), timings


def _tune_cache_path(config: FastConfig) -> "Path":
    from ..core.autotune import cpu_name, vlmspec_home

    key = json.dumps([cpu_name(), torch.__version__, torch.get_num_threads(), config.stock_rows,
                      config.mkl_max_rows, config.tune_repeats, list(_TUNE_ROWS)])
    return vlmspec_home() / "fast" / f"linear-plans-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def _load_plans(config: FastConfig) -> dict[str, list]:
    if not config.tune_cache:
        return {}
    try:
        return json.loads(_tune_cache_path(config).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _save_plans(config: FastConfig, plans: dict[str, list]) -> None:
    if not config.tune_cache:
        return
    from ..atomic import atomic_write_json

    try:
        atomic_write_json(_tune_cache_path(config), plans, indent=1, sort_keys=True)
    except OSError:
        pass  # a read-only home only costs re-tuning next time


def accelerate_cpu(model: nn.Module, config: FastConfig = FastConfig()) -> FastReport:
    """Switch the selected `nn.Linear`s of `model` to pre-packed CPU paths, in place. See module docstring."""
    report = FastReport(enabled=False, reason="", backend=config.backend)
    if not config.enabled:
        report.reason = "disabled by FastConfig(enabled=False)"
        return report
    params = list(model.parameters())
    if not params:
        report.reason = "the model has no parameters"
        return report
    devices = {p.device.type for p in params}
    if devices != {"cpu"}:
        report.reason = f"the model is on {', '.join(sorted(devices))}; the packed linear path is CPU-only"
        return report
    if config.backend == "stock":
        report.reason = "backend='stock' keeps torch's own linear"
        return report
    status = available_backends()
    packed_path = "mkldnn" if config.backend == "auto" else config.backend
    why_not = status["mkldnn" if packed_path == REDUCED_PATH else packed_path]
    if why_not:
        report.reason = f"the {packed_path} path is not usable in this torch build: {why_not}"
        return report

    try:
        output_embeddings = model.get_output_embeddings()
    except Exception:
        output_embeddings = None
    plans = _load_plans(config) if config.backend == "auto" else {}
    plans_changed = False
    plan_by_shape: dict[str, Plan] = {}
    for name, module in model.named_modules():
        if type(module) is PackedLinear:
            report.skipped[name] = "already packed"
            continue
        if type(module) is not nn.Linear:
            continue
        group = _group_of(name, module, output_embeddings)
        weight, bias = module.weight, module.bias
        if group not in config.modules:
            report.skipped[name] = f"group {group!r} not in FastConfig.modules"
            continue
        if weight.dtype not in config.dtypes:
            report.skipped[name] = f"dtype {weight.dtype} not in FastConfig.dtypes"
            continue
        if weight.numel() < config.min_params:
            report.skipped[name] = f"{weight.numel()} weights < min_params={config.min_params}"
            continue
        reduced = config.reduced_precision and config.backend in ("auto", REDUCED_PATH) and weight.dtype == torch.float32
        shape = f"{weight.shape[0]}x{weight.shape[1]}{'+bias' if bias is not None else ''}-{str(weight.dtype)[6:]}"
        shape += "-bf16ok" if reduced else ""  # its own plan: a target's never holds the bf16 path
        if shape not in plan_by_shape:
            try:
                if config.backend != "auto":
                    # bf16 weights are bf16 already: the reduced-precision backend is plain oneDNN for them
                    fixed = "mkldnn" if packed_path == REDUCED_PATH and weight.dtype != torch.float32 else packed_path
                    plan = _merge(([(config.stock_rows, "stock")] if config.stock_rows else []) + [(_INF, fixed)])
                elif shape in plans:
                    plan = tuple((int(b), str(p)) for b, p in plans[shape])
                else:
                    paths = (packed_path, REDUCED_PATH) if reduced and packed_path == "mkldnn" else (packed_path,)
                    plan, timings = _tune_shape(weight, bias, paths, config)
                    report.shape_timings_ms[shape] = timings
                    plans[shape] = [list(item) for item in plan]
                    plans_changed = True
            except Exception as exc:
                plan = (("fail", f"{type(exc).__name__}: {exc}"[:300]),)
            plan_by_shape[shape] = plan
            report.shape_choice[shape] = plan[0][1] if plan[0][0] == "fail" else _plan_text(plan)
        plan = plan_by_shape[shape]
        if plan[0][0] == "fail":
            report.fallbacks[name] = plan[0][1]
            continue
        if all(path == "stock" for _, path in plan):
            report.skipped[name] = "stock linear measured fastest for every row count"
            continue
        layer_path = next(path for _, path in plan if path != "stock")  # the one packed path of this plan
        if layer_path == REDUCED_PATH and not reduced:
            report.skipped[name] = "a cached plan names the bf16 path, which this config does not allow"
            continue
        state = _PackState(backend=layer_path, mkl_rows=config.mkl_max_rows, plan=plan, dtype=weight.dtype)
        try:
            with torch.no_grad():
                state.packed = _pack(layer_path, weight, config.mkl_max_rows)
                state.key = _weight_key(weight, bias)
                probe = torch.randn(2, weight.shape[1], generator=torch.Generator().manual_seed(1)).to(weight.dtype)
                got = _run(layer_path, probe, state.packed, weight, bias, config.mkl_max_rows)
                want = F.linear(probe, weight, bias)
                scale = float(want.abs().max()) + 1.0
                bf16 = weight.dtype != torch.float32 or layer_path == REDUCED_PATH
                tolerance = 3e-2 if bf16 else 1e-3  # bf16 keeps ~3 significant digits
                if not torch.isfinite(got).all() or float((got - want).abs().max()) > tolerance * scale:
                    raise RuntimeError("packed result differs from F.linear")
        except Exception as exc:
            report.fallbacks[name] = f"{type(exc).__name__}: {exc}"[:300]
            continue
        setattr(module, PACKED_MARKER, state)  # module._vlmspec_fast: what core.autotune looks for
        module.__class__ = PackedLinear
        report.replaced[name] = _plan_text(plan)
        report.extra_bytes += _nbytes(state.packed)
    if plans_changed:
        _save_plans(config, plans)
    report.enabled = bool(report.replaced)
    if not report.enabled:
        report.reason = "no nn.Linear qualified (see skipped / fallbacks)"
    return report


def _nbytes(t: torch.Tensor) -> int:
    try:
        return t.numel() * t.element_size()
    except Exception:
        return 0


def restore(model: nn.Module) -> int:
    """Switch every PackedLinear in `model` back to plain nn.Linear; returns how many."""
    count = 0
    for module in model.modules():
        if type(module) is PackedLinear:
            module.__class__ = nn.Linear
            del module._vlmspec_fast
            count += 1
    return count


def fast_status(model: nn.Module) -> dict[str, str]:
    """Module name -> current path ("mkldnn" | "mkl" | "stock (fallback: <error>)") for packed modules."""
    out = {}
    for name, module in model.named_modules():
        if type(module) is PackedLinear:
            state = module._vlmspec_fast
            out[name] = f"stock (fallback: {state.broken})" if state.broken else _plan_text(state.plan)
    return out


def pack_now(model: nn.Module) -> int:
    """Pack every packed linear's weight now instead of on its first forward; returns how many.
    A layer whose packing fails falls back to the stock path, as it would on first use."""
    count = 0
    for module in model.modules():
        if type(module) is PackedLinear and not module._vlmspec_fast.broken:
            try:
                module._packed()
                count += 1
            except Exception as exc:  # noqa: BLE001 - same fallback as forward()
                module._vlmspec_fast.broken = f"{type(exc).__name__}: {exc}"[:300]
    return count


def is_accelerated(model: nn.Module) -> bool:
    return has_packed_linears(model)
