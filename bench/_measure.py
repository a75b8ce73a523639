"""What every benchmark here measures with: one definition of a percentile."""
from __future__ import annotations


def percentile(samples: list[float], fraction: float) -> float:
    """The sample at ``fraction`` of the sorted samples (nearest rank; 0.99 = p99)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
