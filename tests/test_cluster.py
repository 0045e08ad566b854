"""Scale-out on a real RabbitMQ cluster, the CI-sized run of `scripts/cluster`: a webhook
fan-out of 1,000 through two service instances on a 3-node cluster on loopback (nodes of
their own, beside the machine's broker) and a fresh PostgreSQL database; a broker node is
killed a quarter of the way through (the one the surviving instance is connected to), one
service instance half way. Every target is received, and every duplicate is a row the
service flagged resent."""

from __future__ import annotations

import os
import shutil

import pytest

from testbed.rabbitcluster import RABBITMQ_BIN
from testbed.scaleout import Plan, run

pytestmark = pytest.mark.slow


@pytest.mark.timeout(420)
async def test_a_fan_out_survives_a_broker_node_and_a_service_instance_dying() -> None:
    if not os.environ.get("DISSEMINATION_CLUSTER_TEST"):
        pytest.skip(
            "opt-in (DISSEMINATION_CLUSTER_TEST=1): in full runs the machine's own broker "
            "stopped answering soon after this test; until that is understood it runs alone"
        )
    if not (RABBITMQ_BIN / "rabbitmq-server").is_file() and not shutil.which("rabbitmq-server"):
        pytest.skip("rabbitmq-server is not installed: the cluster needs its own nodes")
    lines: list[str] = []
    outcome = await run(
        Plan(targets=1000, stuck_after_seconds=20, timeout_seconds=180), lines.append
    )
    print("\n" + "\n".join(outcome.lines()))
    assert any(line.startswith("killed broker node") for line in lines)
    assert any(line.startswith("killed service instance 0") for line in lines)
    assert outcome.lost == 0
    assert outcome.states == {"sent": 1000}
    assert outcome.duplicated <= outcome.resent  # duplicates only among rows flagged resent
