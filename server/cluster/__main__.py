"""``python -m server.cluster``: a local cluster for development, or the node / gateway of a real one.

    python -m server.cluster local --nodes 3 [--cpus-per-node 2] [--port 8080] [--set ...]
    python -m server.cluster node --address HEAD:6379 [--name gpu-1] [--set ...]      # on each worker
    python -m server.cluster gateway --address HEAD:6379 [--port 8080] [--set ...]     # on the head
    python -m server.cluster drain NAME [--undo] --address HEAD:6379
    python -m server.cluster status --address HEAD:6379

Every start-up error (configuration, Ray, a node that cannot hold one session) is one line on stderr and
exit code 2 (docs/deploy.md, Cluster with Ray).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import sys
from collections.abc import Sequence
from typing import Any

from avatar.errors import AvatarError, ConfigError
from server.config import DEFAULT_CONFIG, Config, load_config
from server.logs import setup_logging

log = logging.getLogger("server.cluster")
MAX_LOCAL_NODES = 16


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m server.cluster",
                                     description="Sessions on Ray nodes behind one signalling gateway.")
    commands = parser.add_subparsers(dest="command", required=True)

    def common(sub: argparse.ArgumentParser, address: bool = True) -> None:
        sub.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config file")
        sub.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                         help="override any config value, e.g. --set cluster.heartbeat_s=0.5")
        sub.add_argument("--engine", help="animation engine (engine.name)")
        sub.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
        if address:
            sub.add_argument("--address", help="the Ray head as HOST:PORT (cluster.address)")

    local = commands.add_parser("local", help="a Ray cluster of N node processes on this machine + gateway")
    common(local, address=False)
    local.add_argument("--nodes", type=int, default=3, help="node processes (1-16)")
    local.add_argument("--cpus-per-node", type=int, default=2, help="Ray CPUs each node declares")
    local.add_argument("--host", help="gateway interface (server.host)")
    local.add_argument("--port", type=int, help="gateway port (server.port)")

    node = commands.add_parser("node", help="run a node on this machine's Ray node (after ray start)")
    common(node)
    node.add_argument("--name", default=socket.gethostname().split(".")[0], help="node name (default: host)")

    gateway = commands.add_parser("gateway", help="serve pages and /ws, placing sessions on the nodes")
    common(gateway)
    gateway.add_argument("--host", help="interface to listen on (server.host)")
    gateway.add_argument("--port", type=int, help="port to listen on (server.port)")

    drain = commands.add_parser("drain", help="a node takes no new sessions (--undo: takes them again)")
    common(drain)
    drain.add_argument("name")
    drain.add_argument("--undo", action="store_true")

    status = commands.add_parser("status", help="print each node's engine, capacity, sessions, state")
    common(status)
    return parser


def read_config(args: argparse.Namespace) -> Config:
    flags: dict[str, Any] = {"engine.name": args.engine, "cluster.address": getattr(args, "address", None)}
    if hasattr(args, "port"):
        flags.update({"server.host": args.host, "server.port": args.port})
    return load_config(args.config, args.set, flags)


async def serve_gateway(config: Config) -> None:
    """The gateway until SIGINT/SIGTERM (the caller has joined Ray)."""
    from server.cluster.gateway import Gateway
    from server.cluster.ray_nodes import RayDirectory
    from server.main import wait_for_signal

    gateway = Gateway(config, RayDirectory(config.cluster.namespace))
    await gateway.start()
    nodes = ", ".join(f"{n.name} ({n.capacity})" for n in gateway.placement.live()) or "none yet"
    print(f"talking-portrait gateway on http://{config.server.host}:{gateway.port}/ (engine "
          f"{config.engine.name}; nodes and capacity: {nodes}; Ctrl-C to stop)", file=sys.stderr, flush=True)
    try:
        await wait_for_signal()
    finally:
        await gateway.stop()


async def run_local(config: Config, nodes: int, cpus_per_node: int) -> None:
    """A head without CPUs (no sessions), ``nodes`` Ray nodes of ``cpus_per_node`` CPUs, a node actor on
    each, and the gateway in this process."""
    from server.cluster.ray_nodes import (
        LOOPBACK_ONLY,
        USAGE_STATS_OFF,
        WORKER_NICENESS,
        node_capacity,
        one_line,
        require_ray,
        start_node,
    )

    if not 1 <= nodes <= MAX_LOCAL_NODES:
        raise ConfigError(f"--nodes must be 1..{MAX_LOCAL_NODES}, got {nodes}")
    if cpus_per_node < 1:
        raise ConfigError(f"--cpus-per-node must be a whole number of at least 1, got {cpus_per_node}")
    node_capacity(config, {"CPU": cpus_per_node}, "node-1")  # one-line error before anything starts
    ray = require_ray()
    from ray.cluster_utils import Cluster

    os.environ.setdefault(*WORKER_NICENESS)  # the raylets started here pass it to the node actors
    os.environ.setdefault(*USAGE_STATS_OFF)
    os.environ.setdefault(*LOOPBACK_ONLY)  # one machine: every Ray process on 127.0.0.1
    try:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    except Exception as exc:
        raise ConfigError(f"cannot start a local Ray cluster: {one_line(exc)}") from None
    try:
        try:
            ray_nodes = [cluster.add_node(num_cpus=cpus_per_node) for _ in range(nodes)]
            ray.init(address=cluster.address, namespace=config.cluster.namespace, configure_logging=False)
            cluster.wait_for_nodes()
        except Exception as exc:
            raise ConfigError(f"cannot start the local Ray nodes: {one_line(exc)}") from None
        # the handles keep the actors alive: Ray ends an actor whose creator dropped every handle
        actors = await asyncio.gather(*(start_node(config, f"node-{i + 1}", n.node_id)
                                        for i, n in enumerate(ray_nodes)))
        print(f"local Ray cluster at {cluster.address} (from another machine, join a node with: ray start "
              f"--address {cluster.address}; python -m server.cluster node --address {cluster.address})",
              file=sys.stderr, flush=True)
        await serve_gateway(config)
        del actors
    finally:
        ray.shutdown()
        cluster.shutdown()


async def run_node(config: Config, name: str) -> None:
    """Node actor ``name`` on this machine's Ray node until SIGINT/SIGTERM."""
    from server.cluster.ray_nodes import connect, require_ray, start_node
    from server.main import wait_for_signal

    connect(config.cluster.address, config.cluster.namespace, log_to_driver=True)
    ray = require_ray()
    actor = await start_node(config, name, ray.get_runtime_context().get_node_id())
    print(f"node {name} ready (Ctrl-C drains nothing: its sessions end)", file=sys.stderr, flush=True)
    try:
        await wait_for_signal()
    finally:
        try:
            await asyncio.wait_for(actor.stop.remote(), config.server.shutdown_timeout_s)
        except Exception:
            pass
        ray.kill(actor)


async def node_call(config: Config, method: str, *names_and_args: Any) -> list[dict[str, Any]]:
    """``status``/``drain`` on nodes through Ray (no gateway needed)."""
    from server.cluster.gateway import NodeUnavailable
    from server.cluster.ray_nodes import RayDirectory, connect

    connect(config.cluster.address, config.cluster.namespace)
    found = await RayDirectory(config.cluster.namespace).discover()
    if method == "drain":
        name, undo = names_and_args
        if name not in found:
            raise ConfigError(f"no node named {name!r}; nodes: {', '.join(sorted(found)) or 'none'}")
        try:
            return [await found[name].call("drain", not undo, timeout=10.0)]
        except NodeUnavailable as exc:
            raise ConfigError(f"node {name} did not answer: {exc}") from None
    results = await asyncio.gather(*(h.call("status", timeout=5.0) for h in found.values()),
                                   return_exceptions=True)
    return [r if isinstance(r, dict) else {"name": n, "error": str(r)}
            for n, r in zip(found, results, strict=True)]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        config = read_config(args)
        if config.server.log_format != "text":
            setup_logging(args.log_level, config.server.log_format)
        if args.command == "local":
            asyncio.run(run_local(config, args.nodes, args.cpus_per_node))
        elif args.command == "gateway":
            from server.cluster.ray_nodes import connect

            connect(config.cluster.address, config.cluster.namespace)
            asyncio.run(serve_gateway(config))
        elif args.command == "node":
            asyncio.run(run_node(config, args.name))
        elif args.command == "drain":
            print(json.dumps(asyncio.run(node_call(config, "drain", args.name, args.undo))[0]))
        else:
            for line in asyncio.run(node_call(config, "status")):
                print(json.dumps(line))
        return 0
    except AvatarError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot start: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
