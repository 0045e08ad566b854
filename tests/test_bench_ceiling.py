"""`bench.fanout --ceiling`'s arithmetic: a send's floor is its ledger row's store steps in
the service's process and PostgreSQL plus the raw leg's send, and the cores bound the rate
and the ratios by it."""

from __future__ import annotations

import pytest

from bench.ceiling import Ceiling, describe, ledger_us

STEPS = {
    "plan": {"wall": 48.4, "this process": 31.4, "of which collector": 2.4, "PostgreSQL": 16.0},
    "claim": {"wall": 64.9, "this process": 35.5, "of which collector": 4.5, "PostgreSQL": 31.0},
    "settle": {"wall": 92.1, "this process": 49.6, "of which collector": 0.0, "PostgreSQL": 36.0},
}


def test_a_rows_ledger_cost_is_its_process_and_store_cpu_over_every_step() -> None:
    # neither the wall time nor the collector's share (already inside the process's) counts
    assert ledger_us(STEPS) == pytest.approx(31.4 + 35.5 + 49.6 + 16.0 + 31.0 + 36.0)
    assert ledger_us({"plan": {"this process": 10.0}}) == 10.0  # SQLite: no PostgreSQL


def test_the_floor_bounds_the_rate_and_the_ratios() -> None:
    ceiling = Ceiling(ledger_us=200.0, raw_us=142.0, cores=2)
    assert ceiling.floor_us == 342.0
    assert ceiling.rate == pytest.approx(2e6 / 342.0)  # 5,848 a second
    assert ceiling.over(12_311.0) == pytest.approx(5847.95 / 12_311.0, rel=1e-4)  # 0.475
    assert ceiling.over(4_829.0) == pytest.approx(5847.95 / 4_829.0, rel=1e-4)  # 1.21
    assert ceiling.over(None) is None
    assert ceiling.over(0.0) is None


def test_the_line_names_the_parts_and_the_bounds() -> None:
    line = describe("webhook", Ceiling(200.0, 142.0, 2), 12_311.0, 4_829.0)
    assert line == (
        "webhook  a send costs at least 200 (ledger) + 142 (raw client and sinks) = 342 µs of"
        " CPU: on 2 cores at most 5,848/s; service/raw at most 0.475, service/peer at most 1.21"
    )
    assert describe("sms", Ceiling(200.0, 190.0, 2), None, None).endswith("at most 5,128/s")
