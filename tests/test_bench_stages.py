"""`bench.latency --stages` reads the service's own histograms: the stage rows come out of a
real exposition, processes add up, and quantiles are read from the buckets as Prometheus'
`histogram_quantile` reads them."""

from __future__ import annotations

import math
import socket

import pytest

from bench.stages import ORDER, added, quantile, stage_buckets, table
from dissemination.metrics import STAGES, Metrics
from testbed.ports import free_ports


def test_the_stage_rows_come_from_the_exposition() -> None:
    metrics = Metrics()
    for seconds in (0.002, 0.003, 0.004, 0.2):
        metrics.in_stage("claim", seconds)
    metrics.in_stage("queued", 0.0007)
    metrics.sent_in("webhook", 0.004)
    metrics.sent_in("email", 9.0)  # not the webhook's: not a row
    metrics.first_delivery("webhook", 0.02)
    rows = stage_buckets(metrics.exposition().decode())

    assert set(rows) == set(ORDER)
    assert rows["claim"][math.inf] == 4
    assert rows["claim"][0.0025] == 1
    assert rows["claim"][0.005] == 3
    assert rows["queued"][0.001] == 1
    assert rows["send"][math.inf] == 1
    assert rows["receipt to first delivery"][math.inf] == 1
    assert all(rows[stage][math.inf] == 0 for stage in STAGES if stage not in ("claim", "queued"))


def test_processes_add_up() -> None:
    first, second = Metrics(), Metrics()
    first.in_stage("settle", 0.003)
    second.in_stage("settle", 0.03)
    second.in_stage("settle", 0.03)
    total = added(stage_buckets(m.exposition().decode()) for m in (first, second))
    assert total["settle"][math.inf] == 3
    assert total["settle"][0.005] == 1
    assert total["settle"][0.05] == 3


def test_quantiles_are_interpolated_within_their_bucket() -> None:
    buckets = {0.001: 0.0, 0.002: 10.0, 0.005: 30.0, 0.01: 40.0, math.inf: 40.0}
    assert quantile(buckets, 0.25) == pytest.approx(0.002)
    assert quantile(buckets, 0.5) == pytest.approx(0.002 + 0.003 * 10 / 20)
    assert quantile(buckets, 0.99) == pytest.approx(0.005 + 0.005 * 9.6 / 10)
    assert quantile({0.001: 0.0, math.inf: 0.0}, 0.5) is None
    # past the largest finite bound: that bound, as Prometheus answers
    assert quantile({0.001: 1.0, 0.01: 1.0, math.inf: 5.0}, 0.99) == 0.01


def test_the_table_has_a_line_a_stage_and_says_when_nothing_was_counted() -> None:
    metrics = Metrics()
    metrics.in_stage("store", 0.004)
    lines = table(stage_buckets(metrics.exposition().decode()))
    assert len(lines) == 1 + len(ORDER)
    store = next(line for line in lines if line.split()[0] == "store")
    assert store.split()[1:] == ["1", "3.8", "4.8", "5.0"]
    assert next(line for line in lines if line.split()[0] == "claim").split()[2:] == ["n/a"] * 3


def test_consecutive_ports_are_all_free() -> None:
    first = free_ports(3)
    for port in range(first, first + 3):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))
