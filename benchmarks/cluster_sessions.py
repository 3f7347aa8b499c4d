"""Sessions across a local Ray cluster: placement, fresh frames, and a node killed mid-stream.

    python benchmarks/cluster_sessions.py                              # 3 nodes x 2 CPUs, 8 sessions
    python benchmarks/cluster_sessions.py --nodes 3 --sessions 8 --seconds 24 --kill-at 12 --json out.json

Starts ``ray.cluster_utils.Cluster`` (a head without CPUs and ``--nodes`` Ray nodes, each its own raylet
and worker processes on this machine), a node actor on each (``server/cluster``) held by this
process, and the gateway (``python -m server.cluster gateway``) in its own process, as in production (the
clients' video decoding here must not starve it). ``--sessions`` aiortc clients (mirror mode, vowel
bursts as their microphone) offer through the gateway one after the other; each is placed by the gateway's
``Placement`` (read back from the gateway's log). At ``--kill-at``
seconds the node holding the most sessions is removed (its raylet and workers killed, no grace). Then:

* clients of the killed node: seconds from the kill to their ``error`` event (target < 5 s);
* the other clients: fresh frames per second before and after the kill, by the server's own count
  (``frames_fresh`` in its stats events) and at the client (a decoded picture that differs from the
  previous one by more than ``CHANGED``), and their longest gap between two frames within 5 s after the kill
  (a stall would show here);
* two more offers after the kill: the first goes to a surviving node with room, and once the cluster is
  full the next gets ``server busy``.

Every process runs on the cores this command is given (``taskset``); the clients decode every stream on
the same cores, so the rates are a lower bound.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from websockets.asyncio.client import connect

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import server  # noqa: E402,F401  (one BLAS thread)
from benchmarks.stream_benchmark import free_port  # noqa: E402
from server.cluster.ray_nodes import LOOPBACK_ONLY, USAGE_STATS_OFF, WORKER_NICENESS, require_ray, start_node  # noqa: E402
from server.config import load_config  # noqa: E402
from tests.media import vowel_bursts  # noqa: E402
from tests.paced_audio import PacedAudioTrack  # noqa: E402

CHANGED = 0.5
"""Mean absolute change (0-255 grey, every 8th pixel) above which a received picture counts as new: the
re-encoded repeats of one picture differ by less."""


class Client:
    """One aiortc client: its session, node, frames (arrival time, fresh?) and events."""

    def __init__(self, number: int, url: str, audio: np.ndarray) -> None:
        self.number = number
        self.url = url
        self.audio = audio
        self.session: str | None = None
        self.refused: str | None = None
        self.frames: list[tuple[float, bool]] = []
        self.errors: list[tuple[float, str]] = []
        self.ended: list[tuple[float, str]] = []
        self.stats: list[dict] = []
        self._last: np.ndarray | None = None
        self.pc = RTCPeerConnection()
        self.stop = asyncio.Event()

    async def _record(self, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                arrived = time.monotonic()
                small = frame.to_ndarray(format="gray")[::8, ::8].astype(np.float32)
                new = self._last is None or float(np.abs(small - self._last).mean()) > CHANGED
                self.frames.append((arrived, new))
                self._last = small
        except MediaStreamError:
            return

    async def run(self) -> None:
        pc = self.pc
        pc.addTrack(PacedAudioTrack(self.audio))
        pc.addTransceiver("video", direction="recvonly")
        tasks: list[asyncio.Task] = []
        pc.on("track", lambda t: tasks.append(asyncio.ensure_future(self._record(t))) if t.kind == "video"
              else None)
        async with connect(self.url, max_size=None) as ws:
            await pc.setLocalDescription(await pc.createOffer())
            await ws.send(json.dumps({"type": "offer", "sdp": pc.localDescription.sdp}))
            while True:
                reply = json.loads(await ws.recv())
                if reply["type"] == "answer":
                    self.session = reply["session"]
                    await pc.setRemoteDescription(RTCSessionDescription(reply["sdp"], "answer"))
                    break
                if reply["type"] == "error":
                    self.refused = reply["message"]
                    await pc.close()
                    return

            async def events() -> None:
                async for raw in ws:
                    event = json.loads(raw)
                    now = time.monotonic()
                    if event["type"] == "error":
                        self.errors.append((now, event["message"]))
                    elif event["type"] == "ended":
                        self.ended.append((now, event["reason"]))
                    elif event["type"] == "stats":
                        self.stats.append({**event, "at": now})

            reader = asyncio.ensure_future(events())
            await self.stop.wait()
            reader.cancel()
        await pc.close()
        for task in tasks:
            task.cancel()

    def fresh_fps(self, start: float, end: float) -> float | None:
        fresh = [t for t, new in self.frames if new and start <= t < end]
        return round(len(fresh) / (end - start), 2) if end > start else None

    def server_fresh_fps(self, start: float, end: float) -> float | None:
        """Fresh frames per second by the server's own count (``frames_fresh`` in its stats events)."""
        inside = [s for s in self.stats if start <= s["at"] < end and "frames_fresh" in s]
        if len(inside) < 2:
            return None
        first, last = inside[0], inside[-1]
        return round((last["frames_fresh"] - first["frames_fresh"]) / max(1e-6, last["at"] - first["at"]), 2)

    def received_fps(self, start: float, end: float) -> float | None:
        got = [t for t, _ in self.frames if start <= t < end]
        return round(len(got) / (end - start), 2) if end > start else None

    def longest_gap(self, start: float, end: float) -> float | None:
        return self.gap(start, end)[0]

    def gap(self, start: float, end: float) -> tuple[float | None, float | None]:
        """The longest time without a frame within [start, end) (counted from ``start``), and when it
        began (seconds after ``start``)."""
        times = np.array([start, *(t for t, _ in self.frames if start <= t < end)])
        if len(times) < 2:
            return None, None
        gaps = np.diff(times)
        at = int(np.argmax(gaps))
        return round(float(gaps[at]), 3), round(float(times[at] - start), 2)


def placed_on(log_path: Path, session: str | None) -> str | None:
    """The node the gateway's log says ``session`` was placed on."""
    if session is None:
        return None
    found = re.search(rf"session={session} placed on node (\S+)", log_path.read_text())
    return found.group(1) if found else None


async def run(args: argparse.Namespace) -> dict:
    ray = require_ray()
    from ray.cluster_utils import Cluster

    config = load_config(args.config, args.set, {"server.port": 0, "engine.size": args.size})
    os.environ.setdefault(*WORKER_NICENESS)  # node actors at normal priority, as `local` starts them
    os.environ.setdefault(*USAGE_STATS_OFF)
    os.environ.setdefault(*LOOPBACK_ONLY)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    started = time.monotonic()
    ray_nodes = [cluster.add_node(num_cpus=args.cpus_per_node) for _ in range(args.nodes)]
    ray.init(address=cluster.address, namespace=config.cluster.namespace, log_to_driver=False,
             configure_logging=False)
    cluster.wait_for_nodes()
    names = [f"node-{i + 1}" for i in range(args.nodes)]
    actors = await asyncio.gather(*(start_node(config, name, n.node_id) for name, n in zip(names, ray_nodes,
                                                                                          strict=True)))
    by_name = dict(zip(names, ray_nodes, strict=True))
    # the gateway in its own process, as in production: the clients' decoding here must not starve it
    port = free_port()
    log_path = Path(args.gateway_log)
    gateway_log = log_path.open("w")
    overrides = [f"engine.size={args.size}", *args.set]
    command = [sys.executable, "-m", "server.cluster", "gateway", "--address", cluster.address,
               "--host", "127.0.0.1", "--port", str(port), *(a for o in overrides for a in ("--set", o))]
    gateway = subprocess.Popen(command, cwd=ROOT, stderr=gateway_log, stdout=gateway_log)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(base + "/cluster", timeout=2) as response:
                if len(json.load(response)["nodes"]) == args.nodes:
                    break
        except OSError:
            pass
        await asyncio.sleep(0.5)
    else:
        raise SystemExit(f"the gateway did not see {args.nodes} nodes (log: {log_path})")
    with urllib.request.urlopen(base + "/cluster", timeout=5) as response:
        capacity = {n["name"]: n["capacity"] for n in json.load(response)["nodes"]}
    cluster_up_s = time.monotonic() - started
    url = f"ws://127.0.0.1:{port}/ws"
    audio = vowel_bursts(args.seconds + 30, 16000)
    clients = [Client(i, url, audio) for i in range(args.sessions)]
    tasks = []
    for client in clients:
        tasks.append(asyncio.ensure_future(client.run()))
        await asyncio.sleep(args.stagger_s)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 30 and any(c.session is None and c.refused is None for c in clients):
        await asyncio.sleep(0.1)
    placed = {c.number: placed_on(log_path, c.session) for c in clients}
    streaming_from = time.monotonic()
    await asyncio.sleep(args.kill_at)
    counts = {name: sum(1 for node in placed.values() if node == name) for name in names}
    victim = max(names, key=lambda name: (counts[name], name))
    killed_at = time.monotonic()
    await asyncio.to_thread(cluster.remove_node, by_name[victim], False)
    kill_call_s = time.monotonic() - killed_at
    await asyncio.sleep(args.seconds - args.kill_at)
    late = [Client(100 + i, url, audio) for i in range(args.extra)]
    late_tasks = []
    for client in late:
        late_tasks.append(asyncio.ensure_future(client.run()))
        await asyncio.sleep(1.0)
    t1 = time.monotonic()
    while time.monotonic() - t1 < 30 and any(c.session is None and c.refused is None for c in late):
        await asyncio.sleep(0.1)
    late_placed = [placed_on(log_path, c.session) if c.session else c.refused for c in late]
    ended_at = time.monotonic()
    for client in [*clients, *late]:
        client.stop.set()
    await asyncio.gather(*tasks, *late_tasks, return_exceptions=True)
    gateway.terminate()
    gateway.wait(timeout=30)
    gateway_log.close()
    del actors
    ray.shutdown()
    cluster.shutdown()

    per_client = []
    after = killed_at + args.seconds - args.kill_at
    for client in clients:
        node = placed[client.number]
        lost = node == victim
        error_s = round(client.errors[0][0] - killed_at, 2) if lost and client.errors else None
        per_client.append({
            "client": client.number, "node": node, "refused": client.refused, "lost": lost,
            "fresh_fps_before": client.fresh_fps(streaming_from + 2, killed_at),
            "received_fps_before": client.received_fps(streaming_from + 2, killed_at),
            "fresh_fps_after": None if lost else client.fresh_fps(killed_at, after),
            "longest_gap_after_kill_s": None if lost else client.longest_gap(killed_at, killed_at + 5),
            "longest_gap_before_kill_s": client.longest_gap(streaming_from + 2, killed_at),
            "longest_gap_after_kill_began_s": None if lost else client.gap(killed_at, killed_at + 5)[1],
            "server_fresh_fps_before": client.server_fresh_fps(streaming_from + 2, killed_at),
            "server_fresh_fps_after": None if lost else client.server_fresh_fps(killed_at, after),
            "error_after_kill_s": error_s,
            "error": client.errors[0][1] if client.errors else None,
        })
    survivors = [c for c in per_client if not c["lost"] and c["node"]]
    lost_clients = [c for c in per_client if c["lost"]]
    return {
        "machine": args.machine, "date": time.strftime("%Y-%m-%d"),
        "nodes": args.nodes, "cpus_per_node": args.cpus_per_node, "capacity": capacity,
        "sessions": args.sessions, "size": args.size, "cluster_up_s": round(cluster_up_s, 1),
        "placed": {name: counts[name] for name in names}, "killed": victim,
        "kill_call_s": round(kill_call_s, 2),
        "lost_error_s": [c["error_after_kill_s"] for c in lost_clients],
        "survivor_fresh_fps_before": [c["fresh_fps_before"] for c in survivors],
        "survivor_fresh_fps_after": [c["fresh_fps_after"] for c in survivors],
        "survivor_server_fresh_fps_before": [c["server_fresh_fps_before"] for c in survivors],
        "survivor_server_fresh_fps_after": [c["server_fresh_fps_after"] for c in survivors],
        "survivor_longest_gap_before_s": max(((c["longest_gap_before_kill_s"] or 0) for c in survivors),
                                             default=None),
        "survivor_longest_gap_after_s": max(((c["longest_gap_after_kill_s"] or 0) for c in survivors),
                                            default=None),
        "late_offers": late_placed,
        "seconds": round(ended_at - streaming_from, 1),
        "clients": per_client,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--cpus-per-node", type=int, default=2)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--extra", type=int, default=2, help="offers after the kill")
    parser.add_argument("--seconds", type=float, default=24.0)
    parser.add_argument("--kill-at", type=float, default=12.0)
    parser.add_argument("--stagger-s", type=float, default=0.5)
    parser.add_argument("--size", type=int, default=512, help="engine.size")
    parser.add_argument("--config", default=None)
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--machine", default="2-core development VM")
    parser.add_argument("--json", help="write the result here")
    parser.add_argument("--gateway-log", default="/tmp/cluster_sessions_gateway.log")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
