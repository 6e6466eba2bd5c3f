"""A publish the leader cannot commit gets the reference's timeout error.

Both followers are stopped (SIGSTOP): the leader appends the publish but no
majority ever has it, so after the proposal deadline the publisher gets
"timed out while committing log" instead of waiting forever. Once the
followers run again the cluster serves publishes as before.
"""

from __future__ import annotations

import time

import pytest

from client import StanError
from cluster.server_clients import PROPOSAL_TIMEOUT
from protocol import errors
from tests.helpers.cluster import StanCluster


async def test_uncommittable_publish_times_out(cluster: StanCluster) -> None:
    leader = await cluster.wait_single_leader()
    sc = await cluster.connect("stuck", pub_ack_wait=PROPOSAL_TIMEOUT + 20)
    await sc.publish("stuck", b"before")
    followers = [n for n in cluster.node_ids if n != leader]
    for nid in followers:
        cluster.pause(nid)
    try:
        started = time.monotonic()
        with pytest.raises(StanError) as err:
            await sc.publish("stuck", b"never committed")
        waited = time.monotonic() - started
    finally:
        for nid in followers:
            cluster.resume(nid)
    assert errors.REPLICATION_TIMEOUT in str(err.value)
    # Answered at the deadline, not by the client's own (much longer) ack wait.
    assert waited < PROPOSAL_TIMEOUT + 10, waited
    await cluster.wait_single_leader()
    sc2 = await cluster.connect("after")
    await sc2.publish("stuck", b"after")
    await cluster.stop_all()
