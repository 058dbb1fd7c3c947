"""Keep the CPU fast path only where it measurably pays: `accelerate_target(target)`.

Packed linears (cpu_linear.py) help a lot on some CPUs (an AMD EPYC whose MKL GEMM re-packs
weights on every multi-row call) and not at all on others (an Intel Xeon with AVX-512, where
stock MKL is already nearly flat for 2-16 rows). So the decision is made end to end, on the
target itself: verify cost of n = 1, 2, 4, 8 tokens on a realistic KV cache, stock vs fast
(`vlmspec.core.autotune.load_or_measure`, cached per machine / torch / threads / model, so
only the first run on a machine pays the measurement), and the fast path stays only if

    sum over n > 1 of fast(n) <= (1 - min_gain) * sum over n > 1 of stock(n)
    and fast(1) <= (1 + max_single_loss) * stock(1)

i.e. multi-token verification gets cheaper and plain decoding does not get noticeably dearer.

    report = accelerate_target(pipe.target)          # FastConfig() defaults
    print(report.summary(), report.verify_ms)
"""

from __future__ import annotations

from dataclasses import dataclass

from .cpu_linear import FastConfig, FastReport, accelerate_cpu, pack_now, restore


@dataclass(frozen=True)
class DecideConfig:
    """How `accelerate_target` measures and decides. Validated at construction."""

    token_counts: tuple[int, ...] = (1, 2, 4, 8)
    context_length: int = 256
    repeats: int = 5
    min_gain: float = 0.03  # multi-token verify must get at least 3% cheaper
    max_single_loss: float = 0.05  # 1-token (plain decoding) may get at most 5% dearer

    def __post_init__(self) -> None:
        counts = tuple(int(n) for n in self.token_counts)
        if 1 not in counts or len(counts) < 2 or min(counts) < 1:
            raise ValueError(f"DecideConfig.token_counts must include 1 and a count > 1, got {self.token_counts!r}")
        object.__setattr__(self, "token_counts", counts)
        if self.context_length < 1 or self.repeats < 1:
            raise ValueError("DecideConfig.context_length and repeats must be >= 1")
        if not (0 <= self.min_gain < 1 and 0 <= self.max_single_loss):
            raise ValueError("DecideConfig needs 0 <= min_gain < 1 and max_single_loss >= 0")


@dataclass
class TargetFastReport:
    """`accelerate_cpu`'s report plus the measurement the decision used."""

    fast: FastReport
    kept: bool
    reason: str
    verify_ms: dict[str, dict[int, float]]  # "stock" / "fast" -> tokens -> ms

    @property
    def enabled(self) -> bool:
        return self.kept

    def summary(self) -> str:
        costs = "; ".join(f"{mode} " + " ".join(f"{n}:{ms:.1f}" for n, ms in c.items()) for mode, c in self.verify_ms.items())
        head = self.fast.summary() if self.kept else f"CPU fast path off: {self.reason}"
        return f"{head} [verify ms {costs}]" if costs else head


def _config_tag(config: FastConfig) -> str:
    return f"{config.backend}/stock_rows={config.stock_rows}/groups={','.join(config.modules)}/min={config.min_params}"


def accelerate_target(
    target,
    config: FastConfig = FastConfig(),
    decide: DecideConfig = DecideConfig(),
    *,
    home=None,
    measure_kwargs: dict | None = None,
) -> TargetFastReport:
    """Accelerate `target.model` (a vlmspec Target) and keep it only if verification got faster."""
    from ..core.autotune import load_or_measure

    if config.reduced_precision:
        raise ValueError("accelerate_target: FastConfig(reduced_precision=True) would round the target's float32 "
                         "weights to bf16, and the target's output is the reference; it is for drafters only")
    model = target.model
    restore(model)
    report = accelerate_cpu(model, config)
    if not report.enabled:
        return TargetFastReport(report, False, report.reason, {})
    kwargs = dict(context_length=decide.context_length, repeats=decide.repeats, home=home, statistic="min")
    kwargs.update(measure_kwargs or {})
    fast = load_or_measure(target, decide.token_counts, fast_cpu=_config_tag(config), **kwargs)
    restore(model)
    stock = load_or_measure(target, decide.token_counts, fast_cpu=False, **kwargs)
    verify_ms = {"stock": {n: s * 1e3 for n, s in stock.items()}, "fast": {n: s * 1e3 for n, s in fast.items()}}
    keep, reason = should_keep(stock, fast, decide)
    if keep:
        report = accelerate_cpu(model, config)  # plans are cached: no re-tuning
        pack_now(model)  # pack at load, so the first generate runs as fast as the next ones
    return TargetFastReport(report, keep and report.enabled, reason, verify_ms)


def should_keep(stock: dict[int, float], fast: dict[int, float], decide: DecideConfig = DecideConfig()) -> tuple[bool, str]:
    """The decision rule of the module docstring on two {tokens: seconds} tables."""
    multi = [n for n in decide.token_counts if n > 1 and n in stock and n in fast]
    s_multi, f_multi = sum(stock[n] for n in multi), sum(fast[n] for n in multi)
    if not multi or f_multi > (1 - decide.min_gain) * s_multi:
        return False, (f"measured no gain: multi-token verify {f_multi * 1e3:.1f} ms fast vs {s_multi * 1e3:.1f} ms "
                       f"stock (needs {decide.min_gain:.0%} less)")
    if fast[1] > (1 + decide.max_single_loss) * stock[1]:
        return False, f"1-token forward got dearer: {fast[1] * 1e3:.1f} ms fast vs {stock[1] * 1e3:.1f} ms stock"
    return True, f"multi-token verify {f_multi / s_multi:.2f}x of stock, 1 token {fast[1] / stock[1]:.2f}x"
