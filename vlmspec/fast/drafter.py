"""The CPU fast path for a drafter: its linears packed by measurement, bf16 allowed.

A drafter's forwards are small (one decoder layer, a trimmed LM head, a few rows), so on CPU
their cost is mostly torch's stock multi-row GEMM re-packing each weight on every call
(cpu_linear.py). The same per-shape timing as the target's (`accelerate_cpu`, backend "auto")
decides each layer's path, with one difference: a drafter may run a bf16 copy of its float32
weights ("mkldnn-bf16"), because what it computes is a proposal the target checks in its own
precision. Rounding there can change which tokens are proposed (speed), never what is
generated: greedy outputs stay token-identical and sampled ones keep the target's
distribution, since the verifier uses exactly the draft probabilities the drafter sampled from.

Applied by `vlmspec.drafters.build_drafter` when the target's own fast path is on (the user
asked for CPU speed and the machine measured it pays), to the modules the drafter lists in
`cpu_fast_modules()`.

    report = accelerate_drafter(drafter)     # FastReport; report.summary() for the logs
"""

from __future__ import annotations

import torch.nn as nn

from .cpu_linear import FastConfig, FastReport, accelerate_cpu, pack_now

DRAFTER_FAST_CONFIG = FastConfig(modules=("language_model", "lm_head"), stock_rows=0, reduced_precision=True)


def accelerate_drafter(drafter, config: FastConfig = DRAFTER_FAST_CONFIG) -> FastReport:
    """Pack the linears of `drafter.cpu_fast_modules()` (in place) and return one combined report."""
    modules = list(getattr(drafter, "cpu_fast_modules", lambda: [drafter])())
    combined = FastReport(enabled=False, reason="", backend=config.backend)
    reasons = []
    for index, module in enumerate(modules):
        if not isinstance(module, nn.Module):
            continue
        report = accelerate_cpu(module, config)
        prefix = "" if index == 0 else f"[{index}]."
        combined.replaced.update({prefix + k: v for k, v in report.replaced.items()})
        combined.skipped.update({prefix + k: v for k, v in report.skipped.items()})
        combined.fallbacks.update({prefix + k: v for k, v in report.fallbacks.items()})
        combined.shape_choice.update(report.shape_choice)
        combined.shape_timings_ms.update(report.shape_timings_ms)
        combined.extra_bytes += report.extra_bytes
        if report.enabled:
            pack_now(module)
        elif report.reason:
            reasons.append(report.reason)
    combined.enabled = bool(combined.replaced)
    if not combined.enabled:
        combined.reason = "; ".join(dict.fromkeys(reasons)) or "no drafter linear qualified"
    return combined


__all__ = ["DRAFTER_FAST_CONFIG", "accelerate_drafter"]
