"""Where a running service's time goes, stage by stage: its `dissemination_stage_seconds`
histograms, with the webhook send's and the receipt-to-first-delivery ones, scraped from the
metrics listener of each of its processes, added up, and read as quantiles the way
Prometheus' `histogram_quantile` reads them (linear within a bucket, so a quantile is as
fine as the buckets around it)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from dissemination.metrics import STAGES

STAGE = "dissemination_stage_seconds"
SEND = "dissemination_send_seconds"
FIRST_DELIVERY = "dissemination_publish_to_first_delivery_seconds"
ORDER = (*STAGES, "send", "receipt to first delivery")
"""The rows of the table, in the order an alert meets them."""

Buckets = dict[float, float]
"""A histogram's cumulative counts by upper bound (`le`), +Inf included."""


def stage_buckets(exposition: str) -> dict[str, Buckets]:
    """The stage histograms in one process's exposition, by row name."""
    found: dict[str, Buckets] = defaultdict(dict)
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if not sample.name.endswith("_bucket"):
                continue
            name = sample.name.removesuffix("_bucket")
            labels = sample.labels
            if name == STAGE:
                row = labels["stage"]
            elif name == SEND and labels.get("channel") == "webhook":
                row = "send"
            elif name == FIRST_DELIVERY:
                row = "receipt to first delivery"
            else:
                continue
            bound = float(labels["le"])
            found[row][bound] = found[row].get(bound, 0.0) + sample.value
    return dict(found)


def added(parts: Iterable[Mapping[str, Buckets]]) -> dict[str, Buckets]:
    """Histograms of several processes (or runs) as one."""
    total: dict[str, Buckets] = defaultdict(dict)
    for part in parts:
        for row, buckets in part.items():
            for bound, count in buckets.items():
                total[row][bound] = total[row].get(bound, 0.0) + count
    return dict(total)


def quantile(buckets: Buckets, fraction: float) -> float | None:
    """The `fraction` quantile of a histogram, interpolated within its bucket; None when it
    counted nothing. In the +Inf bucket it is the largest finite bound, as Prometheus has it."""
    bounds = sorted(buckets)
    total = buckets.get(math.inf, 0.0)
    if not total:
        return None
    rank = fraction * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


async def scrape(ports: Iterable[int]) -> dict[str, Buckets]:
    """The stage histograms of the processes listening on `ports`, added up."""
    parts = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        for port in ports:
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                response.raise_for_status()
                parts.append(stage_buckets(await response.text()))
    return added(parts)


def table(histograms: Mapping[str, Buckets]) -> list[str]:
    """One line a stage: how many passes, and p50, p90 and p99 in ms."""
    lines = [f"  {'stage':<26}{'count':>8}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}"]
    for row in ORDER:
        buckets = histograms.get(row, {})
        cells = [quantile(buckets, fraction) for fraction in (0.5, 0.9, 0.99)]
        shown = "".join(f"{'n/a' if c is None else f'{c * 1000:.1f}':>9}" for c in cells)
        lines.append(f"  {row:<26}{buckets.get(math.inf, 0.0):>8,.0f}{shown}")
    return lines
