"""What the load generator records (latencies, errors, 503s waited out, each trial's time) and
the figures made from it: nearest-rank percentiles, trials per second in a window."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field


@dataclass
class Stats:
    latencies: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    busy: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # 503s waited out
    error_samples: list[str] = field(default_factory=list)
    trials_done: list[float] = field(default_factory=list)  # monotonic time of each ok submit
    votes_sent: int = 0
    joins: int = 0

    def error(self, what: str, detail: str) -> None:
        self.errors[what] += 1
        if len(self.error_samples) < 10:
            self.error_samples.append(f"{what}: {detail[:300]}")


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of seconds, in milliseconds."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1] * 1000


def rate_in_window(times: list[float], start: float, end: float) -> float:
    n = sum(1 for t in times if start <= t < end)
    return n / (end - start) if end > start else 0.0
