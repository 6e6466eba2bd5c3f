"""How long clients cannot publish when the leader dies (no other load).

Each run SIGKILLs the leader, then sends a probe publish every 20 ms (each waiting
for its own ack) until one is acknowledged: the figure is the time from the kill
to that ack. The killed node is restarted and catches up before the next run.
The median goes to the terminal summary and to ``cluster-figures.json``.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

from tests.helpers.cluster import ROLE_FOLLOWER, StanCluster
from tests.helpers.traffic import probe_publish

RUNS = 5
#: An election must be over well within this (s); the median is well under 1 s.
MAX_FAILOVER = 10.0


async def test_time_from_leader_kill_to_first_publish(
    cluster: StanCluster, report_figure: Callable[..., Any]
) -> None:
    leader = await cluster.wait_single_leader()
    sc = await cluster.connect("prober", pub_ack_wait=2.0)
    await sc.publish("probe", b"warm-up")
    to_publish: list[float] = []
    to_leader: list[float] = []
    for run in range(1, RUNS + 1):
        t_kill = cluster.kill(leader)

        async def elected(old: str = leader) -> tuple[str, float]:
            nid = await cluster.wait_single_leader(exclude=[old])
            return nid, time.monotonic()

        (new_leader, t_elected), t_acked = await asyncio.gather(
            elected(), probe_publish(sc, "probe", f"run{run}")
        )
        to_publish.append(t_acked - t_kill)
        to_leader.append(t_elected - t_kill)
        cluster.restart(leader)
        await cluster.wait_caught_up(leader, new_leader)
        await cluster.wait_role(leader, ROLE_FOLLOWER)
        leader = new_leader

    report_figure(
        "failover_time_idle",
        runs=RUNS,
        kill_to_first_ack_s=[round(s, 3) for s in to_publish],
        median_kill_to_first_ack_s=round(statistics.median(to_publish), 3),
        kill_to_leader_on_serverz_s=[round(s, 3) for s in to_leader],
        median_kill_to_leader_s=round(statistics.median(to_leader), 3),
    )
    assert max(to_publish) < MAX_FAILOVER, to_publish
    assert not sc.closed
