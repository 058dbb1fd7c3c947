"""How many tokens to draft next: fixed, adaptive, or cost-aware (measured on this machine).

Every schedule answers `next_length()` and learns from `observe(...)` after each step.
The cost-aware schedule keeps running estimates of the per-token draft time, the verify
time as a function of the number of tokens verified, and the per-token acceptance alpha,
and picks the k maximising expected tokens per second (Leviathan et al.):
    E[tokens | k] = (1 - alpha^(k+1)) / (1 - alpha),  cost(k) = k * t_draft + t_verify(k + 1).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError

SCHEDULE_KINDS = ("fixed", "adaptive", "cost-aware")

DEFAULT_DRAFT_LENGTH = 5  # when neither the user nor the drafter's depth cap says


@dataclass(frozen=True)
class ScheduleConfig:
    kind: str = "fixed"
    draft_length: int = DEFAULT_DRAFT_LENGTH  # fixed length, or the starting length of the others
    min_length: int = 1
    max_length: int = 16
    # cost-aware only: measured verify seconds per number of tokens scored, e.g. from
    # core.autotune.load_or_measure (cached per machine), so the first choice is informed.
    verify_costs: tuple[tuple[int, float], ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise InputError(f"draft schedule must be one of {', '.join(SCHEDULE_KINDS)}; got {self.kind!r}.")
        if not (isinstance(self.draft_length, int) and not isinstance(self.draft_length, bool) and self.draft_length >= 0):
            raise InputError(f"draft_length must be an integer >= 0, got {self.draft_length!r}.")
        if not (1 <= self.min_length <= self.max_length):
            raise InputError(f"need 1 <= min_length <= max_length, got {self.min_length}, {self.max_length}.")

    @classmethod
    def parse(cls, value: "int | str | ScheduleConfig") -> "ScheduleConfig":
        """Accept 5, "5", "adaptive", "cost-aware" or a ScheduleConfig."""
        if isinstance(value, ScheduleConfig):
            return value
        if isinstance(value, bool):
            raise InputError(f"draft_length must be an integer or a schedule name, got {value!r}.")
        if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
            return cls(kind="fixed", draft_length=int(value))
        return cls(kind=str(value), draft_length=4)

    def longest(self) -> int:
        """The longest draft this schedule can ask for."""
        return self.draft_length if self.kind == "fixed" else self.max_length

    def build(self) -> "DraftSchedule":
        if self.kind == "fixed":
            return FixedLength(self.draft_length)
        start = min(max(self.draft_length, self.min_length), self.max_length)
        if self.kind == "adaptive":
            return AdaptiveLength(start, self.min_length, self.max_length)
        schedule = CostAwareLength(start, self.min_length, self.max_length)
        schedule.verify_seconds.update(dict(self.verify_costs))
        return schedule


class DraftSchedule:
    gate = None  # an AcceptanceGate (core/acceptance.py) the drafter consults while drafting, or None

    def next_length(self) -> int:
        raise NotImplementedError

    def observe(self, drafted: int, accepted: int, draft_seconds: float, verify_seconds: float) -> None:
        """Called after every verify step."""

    def trusted(self, drafted: int) -> int:
        """Leading draft tokens to commit without a target check: 0 (lossless) unless approximate."""
        return 0


class FixedLength(DraftSchedule):
    def __init__(self, k: int) -> None:
        self.k = k

    def next_length(self) -> int:
        return self.k


class AdaptiveLength(DraftSchedule):
    """Grow by one while whole drafts are accepted; shrink by one on an early rejection."""

    def __init__(self, start: int, low: int, high: int) -> None:
        self.k, self.low, self.high = start, low, high

    def next_length(self) -> int:
        return self.k

    def observe(self, drafted, accepted, draft_seconds, verify_seconds) -> None:
        if drafted == 0:
            return
        if accepted == drafted:
            self.k = min(self.k + 1, self.high)
        elif accepted < drafted / 2:
            self.k = max(self.k - 1, self.low)


def _fit_line(points: list[tuple[float, float]]) -> tuple[float, float, float]:
    """Least squares through (x, y) points: (mean x, mean y, slope)."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / var if var else 0.0
    return mean_x, mean_y, slope


class CostAwareLength(DraftSchedule):
    """Pick k maximising expected tokens per second from measured costs and acceptance."""

    SMOOTHING = 0.3  # weight of the newest observation in the running averages
    EXPLORE_EVERY = 8  # steps between tries of a neighbouring length

    def __init__(self, start: int, low: int, high: int) -> None:
        self.k, self.low, self.high = start, low, high
        self.draft_seconds_per_token: float | None = None
        self.verify_seconds: dict[int, float] = {}  # tokens verified -> seconds
        self.accepted_total = 0
        self.rejections_total = 0
        self.steps = 0

    def _smooth(self, old: float | None, new: float) -> float:
        return new if old is None else (1 - self.SMOOTHING) * old + self.SMOOTHING * new

    def alpha(self) -> float:
        seen = self.accepted_total + self.rejections_total
        return (self.accepted_total + 1) / (seen + 2)  # Laplace-smoothed per-token acceptance

    def verify_cost(self, tokens: int) -> float:
        """Measured verify time for `tokens`, else a least-squares line through the measurements."""
        if tokens in self.verify_seconds:
            return self.verify_seconds[tokens]
        points = sorted(self.verify_seconds.items())
        if len(points) == 1:
            return points[0][1]
        mean_x, mean_y, slope = _fit_line(points)
        return max(mean_y + max(slope, 0.0) * (tokens - mean_x), 1e-9)

    def expected_rate(self, k: int) -> float:
        a = min(self.alpha(), 0.999)
        expected_tokens = (1 - a ** (k + 1)) / (1 - a)
        cost = k * (self.draft_seconds_per_token or 0.0) + self.verify_cost(k + 1)
        return expected_tokens / cost

    def next_length(self) -> int:
        if not self.verify_seconds:
            return self.k
        best = max(range(self.low, self.high + 1), key=self.expected_rate)
        if self.steps % self.EXPLORE_EVERY == self.EXPLORE_EVERY - 1:
            best = min(max(best + (1 if self.steps // self.EXPLORE_EVERY % 2 else -1), self.low), self.high)
        self.k = best
        return best

    def observe(self, drafted, accepted, draft_seconds, verify_seconds) -> None:
        self.steps += 1
        if drafted:
            self.draft_seconds_per_token = self._smooth(self.draft_seconds_per_token, draft_seconds / drafted)
        self.verify_seconds[drafted + 1] = self._smooth(self.verify_seconds.get(drafted + 1), verify_seconds)
        self.accepted_total += accepted
        self.rejections_total += int(accepted < drafted)


class GatedLength(CostAwareLength):
    """Draft up to the gate's cap and let its predictions stop the draft (core/acceptance.py).

    Stop mode keeps every output exactly the target's; approximate mode (SPRINTER) trusts the
    tokens the predictor approves. The measured costs (as in CostAwareLength) set the stop
    threshold when none is given."""

    def __init__(self, gate, verify_costs: dict[int, float] | None = None) -> None:
        cap = gate.config.max_length
        super().__init__(cap, 1, cap)
        self.gate = gate
        self.verify_seconds.update(verify_costs or {})
        self.step_tokens: float | None = None  # smoothed tokens per step (bonus included)
        self.step_seconds: float | None = None  # smoothed draft + verify seconds per step
        self.draft_seconds: dict[int, float] = {}  # tokens drafted -> smoothed seconds of that draft

    def next_length(self) -> int:
        self.gate.start()
        return self.gate.config.max_length

    def trusted(self, drafted: int) -> int:
        return self.gate.trusted_prefix(drafted)

    def observe(self, drafted, accepted, draft_seconds, verify_seconds) -> None:
        super().observe(drafted, accepted, draft_seconds, verify_seconds)
        # the loop's own rate (tokens per second of drafting + verifying, bonus included) prices a token
        self.step_tokens = self._smooth(self.step_tokens, accepted + 1.0)
        self.step_seconds = self._smooth(self.step_seconds, draft_seconds + verify_seconds)
        if drafted:
            self.draft_seconds[drafted] = self._smooth(self.draft_seconds.get(drafted), draft_seconds)
        if self.draft_seconds_per_token is not None and self.verify_seconds and self.step_seconds > 0:
            self.gate.set_costs(self.marginal_draft_seconds(), self.verify_cost, self.step_tokens / self.step_seconds)

    def marginal_draft_seconds(self) -> float:
        """What one more drafted token adds to a draft: the slope of draft time over draft length.

        A draft's first step also pays fixed work (the drafter catching up on the accepted tokens),
        so the mean time per token overrates the next one; the mean is the fallback until two
        lengths have been seen."""
        points = sorted(self.draft_seconds.items())
        if len(points) < 2:
            return self.draft_seconds_per_token or 0.0
        return max(_fit_line(points)[2], 0.0)
