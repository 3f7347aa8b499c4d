"""The gateway with in-process nodes (no Ray): each ``NodeService`` hosts real sessions (box engine), the
gateway places offers on them and relays events; a node that stops answering ends its sessions with an
``error`` event; channels reach overlays on every node; draining and joining nodes; start-up errors of the
cluster command are one line."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
from typing import Any

import pytest
from websockets.asyncio.client import connect

from avatar.errors import ConfigError
from server.cluster.gateway import Gateway, NodeGone, NodeHandle, NodeUnavailable
from server.cluster.node import NodeService
from tests.conftest import ROOT
from tests.test_server_channels import Controller, Overlay
from tests.test_server_speak import SpeakClient

FAST = {"cluster.heartbeat_s": 0.5, "cluster.node_timeout_s": 2.5, "engine.size": 64,
        "provenance.watermark": False}


class LocalNode:
    """A ``NodeHandle`` calling a ``NodeService`` in this process; ``dead``: every call fails, as for a
    machine that went silent (``NodeUnavailable``) or an actor Ray saw die (``NodeGone``)."""

    def __init__(self, service: NodeService) -> None:
        self.service = service
        self.dead: type[NodeUnavailable] | None = None

    async def call(self, method: str, *args: Any, timeout: float) -> Any:
        if self.dead is not None:
            await asyncio.sleep(min(timeout, 0.05))
            raise self.dead(f"{method}: node is dead")
        try:
            return await asyncio.wait_for(getattr(self.service, method)(*args), timeout)
        except TimeoutError:
            raise NodeUnavailable(f"{method} timed out") from None


class LocalDirectory:
    def __init__(self) -> None:
        self.nodes: dict[str, LocalNode] = {}

    async def discover(self) -> dict[str, NodeHandle]:
        return dict(self.nodes)

    def forget(self, name: str) -> None:
        pass


async def add_node(directory: LocalDirectory, config, engine, name: str, capacity: int) -> LocalNode:
    service = NodeService(config, name, capacity, engine)
    await service.start()
    directory.nodes[name] = LocalNode(service)
    return directory.nodes[name]


@pytest.fixture
async def cluster(make_config, box_engine_factory):
    """(gateway, directory, add(name, capacity)); everything stopped afterwards."""
    config = make_config(**FAST)
    directory = LocalDirectory()
    engine = box_engine_factory(fps=25, size=64)
    gateway = Gateway(config, directory)

    async def add(name: str, capacity: int) -> LocalNode:
        return await add_node(directory, config, engine, name, capacity)

    yield gateway, directory, add
    await gateway.stop()
    for node in directory.nodes.values():
        await node.service.stop()


async def test_the_gateway_health_lists_the_sizes_its_nodes_render(cluster, http_get):
    gateway, _, add = cluster
    await gateway.start(host="127.0.0.1", port=0)
    status, _, body = await http_get(gateway.port, "/health")
    assert status == 200 and json.loads(body)["sizes"] == [gateway.config.engine.size]  # no node yet
    await add("a", 1)
    await gateway.discover()
    status, _, body = await http_get(gateway.port, "/health")
    assert status == 200 and json.loads(body)["sizes"] == [64]  # the box engine's one size


async def test_offers_are_placed_on_nodes_with_room_and_events_come_back(cluster):
    gateway, directory, add = cluster
    await add("a", 1)
    await add("b", 1)
    await gateway.start(host="127.0.0.1", port=0)
    url = f"ws://127.0.0.1:{gateway.port}/ws"
    clients = [SpeakClient(), SpeakClient(), SpeakClient()]
    try:
        async with connect(url) as ws1, connect(url) as ws2, connect(url) as ws3:
            first = await clients[0].connect(ws1)
            second = await clients[1].connect(ws2)
            assert first["type"] == second["type"] == "answer"
            nodes = {gateway.placement.node_of(reply["session"]) for reply in (first, second)}
            assert nodes == {"a", "b"}  # one each: both had room for one
            for name, node in directory.nodes.items():  # the real Session runs on the node
                sessions = list(node.service.app.sessions)
                assert len(sessions) == 1 and sessions[0].running, name
            sdp = clients[0].pc.localDescription.sdp
            refused = await clients[2].request(ws3, {"type": "offer", "sdp": sdp}, "answer")
            assert refused == {"type": "error",
                               "message": "server busy: 2 sessions running on 2 nodes, try later"}
            stats = await clients[0].reply(ws1, "stats")
            assert stats["type"] == "stats" and stats["session"] == first["session"]
            async with asyncio.timeout(10):
                while not clients[0].video:
                    await asyncio.sleep(0.05)  # media flows from the node's own peer connection
            reply = await clients[0].request(ws1, {"type": "interrupt"}, "interrupted")
            assert reply["type"] == "interrupted" and reply["dropped_s"] >= 0  # answered by the node
        async with asyncio.timeout(5):  # sockets closed: the nodes closed their sessions, slots free
            while (any(len(n.service.app.sessions) for n in directory.nodes.values())
                   or gateway.placement.running()):
                await asyncio.sleep(0.05)
    finally:
        for client in clients:
            await client.close()


@pytest.mark.parametrize(("failure", "within_s"), [(NodeUnavailable, 5.0), (NodeGone, 1.5)])
async def test_a_node_that_stops_answering_ends_its_sessions_and_new_ones_go_elsewhere(cluster, failure,
                                                                                      within_s):
    gateway, directory, add = cluster
    await add("a", 1)
    await gateway.start(host="127.0.0.1", port=0)
    url = f"ws://127.0.0.1:{gateway.port}/ws"
    first, second = SpeakClient(), SpeakClient()
    try:
        async with connect(url) as ws1, connect(url) as ws2:
            answer = await first.connect(ws1)
            assert gateway.placement.node_of(answer["session"]) == "a"
            await add("b", 1)  # joins while the gateway runs
            async with asyncio.timeout(5):
                while "b" not in gateway.placement.nodes:
                    await asyncio.sleep(0.05)
            directory.nodes["a"].dead = failure
            killed = time.monotonic()
            error = await first.reply(ws1, "ended", timeout=5.0)
            assert time.monotonic() - killed < within_s  # silent: node_timeout_s (2.5 s); died: at once
            assert error == {"type": "error",
                             "message": "the session ended: node a stopped answering; start a new one"}
            ended = await first.reply(ws1, "ended")
            assert ended["type"] == "ended" and ended["session"] == answer["session"]
            placed = await second.connect(ws2)
            assert gateway.placement.node_of(placed["session"]) == "b"
            # the first socket may start again: the cluster is full now (b holds one)
            sdp = second.pc.localDescription.sdp
            again = await first.request(ws1, {"type": "offer", "sdp": sdp}, "answer")
            assert again["message"].startswith("server busy")
    finally:
        await first.close()
        await second.close()


async def test_a_controller_reaches_overlays_on_every_node(cluster):
    gateway, directory, add = cluster
    await add("a", 1)
    await add("b", 1)
    await gateway.start(host="127.0.0.1", port=0)
    url = f"ws://127.0.0.1:{gateway.port}/ws"
    overlays = [Overlay(), Overlay()]
    try:
        async with connect(url) as page1, connect(url) as page2, connect(url) as remote:
            joined = [await overlays[0].join(page1, "stage"), await overlays[1].join(page2, "stage")]
            assert {gateway.placement.node_of(j["session"]) for j in joined} == {"a", "b"}
            controller = Controller(remote)
            reply = await controller.ask({"type": "say", "text": "hola", "channel": "backstage"})
            assert reply == {"type": "error", "message": "no session on channel 'backstage'"}
            reply = await controller.ask({"type": "say", "text": "hola", "channel": "stage", "key": "x" * 20})
            assert reply["message"].startswith("wrong key for channel 'stage'")
            reply = await controller.ask({"type": "say", "text": "Hola", "voice": "es", "channel": "stage"})
            assert reply == {"type": "queued", "request": "say", "voice": "es", "channel": "stage",
                             "sessions": 2}
            started = {(await controller.next("speaking_started"))["session"] for _ in range(2)}
            assert started == {j["session"] for j in joined}  # events of both nodes' sessions, tagged
            reply = await controller.ask({"type": "interrupt", "channel": "stage"})
            assert reply["type"] == "interrupted" and reply["sessions"] == 2
    finally:
        for overlay in overlays:
            await overlay.close()


async def test_a_draining_node_keeps_its_session_and_takes_no_new_one(cluster):
    gateway, directory, add = cluster
    await add("a", 2)
    await gateway.start(host="127.0.0.1", port=0)
    url = f"ws://127.0.0.1:{gateway.port}/ws"
    first, second = SpeakClient(), SpeakClient()
    try:
        async with connect(url) as ws1, connect(url) as ws2:
            await first.connect(ws1)
            status = await gateway.drain("a")
            assert status["draining"] is True
            refused = await second.request(ws2, {"type": "offer", "sdp": first.pc.localDescription.sdp},
                                           "answer")
            assert refused == {"type": "error",
                               "message": "server busy: all 1 parametric nodes are draining, try later"}
            assert (await first.reply(ws1, "stats"))["type"] == "stats"  # the running session goes on
            await gateway.drain("a", False)
            assert (await second.connect(ws2))["type"] == "answer"
    finally:
        await first.close()
        await second.close()


async def test_an_offer_cancelled_in_flight_gives_its_slot_back(make_config):
    """The socket's handler cancelled (shutdown) while a node holds the offer: the slot counted as pending
    for that offer is free again."""
    from server.app import SocketState
    from server.limits import MessageRateLimit

    class Stalled:
        async def call(self, method: str, *args: Any, timeout: float) -> Any:
            if method == "status":
                return {"engine": "parametric", "capacity": 1, "running": 0, "draining": False}
            await asyncio.sleep(3600)  # the offer never gets an answer

    directory = LocalDirectory()
    directory.nodes["a"] = Stalled()  # type: ignore[assignment]
    gateway = Gateway(make_config(**FAST), directory)
    try:
        assert await gateway.discover() == ["a"]
        state = SocketState(peer="test", limit=MessageRateLimit(100, 100))
        offer = '{"type": "offer", "sdp": "v=0\\r\\nm=video 9 UDP/TLS/RTP/SAVPF 96\\r\\n"}'
        handling = asyncio.ensure_future(gateway.handle_message(state, offer, lambda text: asyncio.sleep(0)))
        async with asyncio.timeout(5):
            while gateway.placement.nodes["a"].pending == 0:
                await asyncio.sleep(0.01)
        handling.cancel()
        with pytest.raises(asyncio.CancelledError):
            await handling
        assert gateway.placement.nodes["a"].pending == 0
        assert gateway.placement.place("parametric").name == "a"  # its one slot is free
    finally:
        await gateway.stop()


def test_the_gateways_frame_totals_do_not_go_down_when_a_session_ends(make_config):
    from server.cluster.gateway import RemoteAvatar, RemoteSession
    from server.logs import SessionLog

    gateway = Gateway(make_config(**FAST), LocalDirectory())

    def frames_sent() -> float:
        line = next(line for line in gateway.metrics.render().splitlines()
                    if line.startswith("avatar_frames_sent_total "))
        return float(line.split()[1])

    session = RemoteSession("s1", "a", "c1", RemoteAvatar("default"), gateway,
                            SessionLog(logging.getLogger("test"), "s1"))
    gateway.sessions.add(session)  # type: ignore[arg-type]
    session.counters = {"frames_sent": 250.0, "queue_depth": 2.0}  # from its latest stats event
    assert frames_sent() == 250
    gateway._forget_session(session)  # it ended (socket closed, node lost or its "ended" event)
    gateway._forget_session(session)  # told twice: counted once
    assert len(gateway.sessions) == 0 and frames_sent() == 250


def test_bad_cluster_configuration_is_one_line_at_start_up(make_config, tmp_path):
    with pytest.raises(ConfigError, match=r"^cluster.session_cost.parametric.CPU must be above 0"):
        make_config(**{"cluster.session_cost": {"parametric": {"CPU": 0}}})
    with pytest.raises(ConfigError, match=r"^cluster.session_cost.emo.GPU must be above 0 and at most 1024 "
                                          r"\(a share of the resource per session\), got 2000$"):
        make_config(**{"cluster.session_cost": {"emo": {"GPU": 2000}}})
    with pytest.raises(ConfigError, match=r"^cluster.heartbeat_s \+ cluster.node_timeout_s must be at most"):
        make_config(**{"cluster.heartbeat_s": 2.0, "cluster.node_timeout_s": 4.0})
    with pytest.raises(ConfigError, match="avatar.allow_upload is not supported on a cluster gateway"):
        Gateway(make_config(**{"avatar.allow_upload": True}), LocalDirectory())
    with pytest.raises(ConfigError, match="cluster.session_cost has no entry for engine 'emo'"):
        Gateway(make_config(**{"engine.name": "emo", "cluster.session_cost": {"parametric": {"CPU": 1}}}),
                LocalDirectory())
    from server.cluster.ray_nodes import node_capacity

    with pytest.raises(ConfigError, match=r"^node gpu-less cannot hold one emo session: it has GPU 0, a "
                                          r"session needs GPU 0.5 \(cluster.session_cost\)$"):
        node_capacity(make_config(**{"engine.name": "emo"}), {"CPU": 16}, "gpu-less")


@pytest.mark.parametrize(("argv", "message"), [
    (["local", "--nodes", "0"], "error: --nodes must be 1..16, got 0"),
    (["local", "--cpus-per-node", "1", "--set", "cluster.session_cost={parametric: {CPU: 2}}"],
     "error: node node-1 cannot hold one parametric session: it has CPU 1, a session needs CPU 2 "
     "(cluster.session_cost)"),
    (["gateway", "--address", "nowhere"], "error: cluster.address must be HOST:PORT of the Ray head, got "
                                          "'nowhere'"),
    (["node"], "error: cluster.address is empty: give the Ray head as HOST:PORT (--address)"),
    (["status", "--set", "cluster.node_timeout_s=9"], "error: cluster.node_timeout_s must be between 0.5 and "
                                                      "4.5, got 9.0"),
])
def test_the_cluster_command_refuses_bad_configuration_in_one_line(argv, message, capsys):
    pytest.importorskip("ray", reason="the cluster command needs ray (pip install -e '.[cluster]')")
    from server.cluster.__main__ import main

    assert main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines() == [message]


def test_the_cluster_command_runs_as_a_module():
    result = subprocess.run([sys.executable, "-m", "server.cluster", "local", "--nodes", "99"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stderr.strip()) == (2, "error: --nodes must be 1..16, got 99")
