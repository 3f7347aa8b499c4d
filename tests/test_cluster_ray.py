"""One real Ray node (``ray.init`` on this machine): a node actor hosts the session the gateway placed, the
answer comes from it, and killing the actor ends the session with an ``error`` event within 5 s.

Skipped without ``ray`` (``pip install -e '.[cluster]'``)."""

from __future__ import annotations

import asyncio
import time

import pytest
from websockets.asyncio.client import connect

from tests.test_server_speak import SpeakClient

ray = pytest.importorskip("ray", reason="needs ray: pip install -e '.[cluster]'")


@pytest.fixture
def ray_node(monkeypatch):
    """A new one-node Ray cluster of 2 CPUs (``address="local"``: never one already running here)."""
    from server.cluster.ray_nodes import LOOPBACK_ONLY, USAGE_STATS_OFF

    monkeypatch.setenv(*LOOPBACK_ONLY)  # every Ray process of the test on 127.0.0.1
    monkeypatch.setenv(*USAGE_STATS_OFF)
    ray.init(address="local", num_cpus=2, namespace="talking-portrait-test", include_dashboard=False,
             log_to_driver=False, configure_logging=False)
    yield ray.get_runtime_context().get_node_id()
    ray.shutdown()


async def test_a_session_on_a_ray_node_and_the_node_killed(make_config, ray_node):
    from server.cluster.gateway import Gateway
    from server.cluster.ray_nodes import RayDirectory, start_node

    config = make_config(**{"engine.size": 128, "provenance.watermark": False,
                            "cluster.namespace": "talking-portrait-test", "cluster.heartbeat_s": 1.0,
                            "cluster.node_timeout_s": 3.5})
    actor = await start_node(config, "only", ray_node)
    gateway = Gateway(config, RayDirectory(config.cluster.namespace))
    await gateway.start(host="127.0.0.1", port=0)
    client = SpeakClient()
    try:
        assert [n.public()["capacity"] for n in gateway.placement.live()] == [3]  # 2 CPUs / 0.6
        async with connect(f"ws://127.0.0.1:{gateway.port}/ws") as ws:
            answer = await client.connect(ws, mode="mirror")
            assert gateway.placement.node_of(answer["session"]) == "only"
            status = await actor.status.remote()
            assert status["running"] == 1  # the session runs in the actor
            assert (await client.reply(ws, "stats"))["session"] == answer["session"]
            async with asyncio.timeout(20):
                while not client.video:
                    await asyncio.sleep(0.05)
            ray.kill(actor)
            killed = time.monotonic()
            error = await client.reply(ws, "ended", timeout=10)
            assert error["type"] == "error" and "node only stopped answering" in error["message"]
            assert time.monotonic() - killed < 5.0
    finally:
        await client.close()
        await gateway.stop()
