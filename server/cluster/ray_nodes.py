"""Nodes as Ray actors: connect to a cluster, start a node actor on a Ray node, find the nodes.

A node actor (``NodeActor``, a ``NodeService``) is an async Ray actor named ``node:<name>`` in the
``cluster.namespace`` namespace, pinned to one Ray node (``NodeAffinitySchedulingStrategy``, not soft).
It takes no Ray resources itself: its capacity is the Ray node's resources divided by the engine's
``cluster.session_cost`` (``placement.session_capacity``), which is what the node declares. Gateways find
the actors by name (``RayDirectory``), so nodes can join while gateways run, and call them
(``RayNode``); a dead actor's calls fail and the heartbeats declare it lost.

Every Ray failure at start-up becomes a one-line ``ConfigError``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from avatar.errors import AvatarError, ConfigError
from server.cluster.gateway import NodeGone, NodeHandle, NodeUnavailable
from server.cluster.node import NodeService
from server.cluster.placement import session_capacity
from server.config import Config

log = logging.getLogger("server.cluster.ray")

NODE_PREFIX = "node:"
WORKER_NICENESS = ("RAY_worker_niceness", "0")
"""Ray starts worker processes, node actors included, at a raised niceness unless its raylet has this in its
environment: a node's sessions are real-time media and must not yield to every other process."""
LOOPBACK_ONLY = ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
"""A cluster on one machine (``local``, the tests, the benchmark) keeps every Ray process on 127.0.0.1:
with this in the environment Ray takes the loopback address as the node's (as it does on macOS and
Windows) instead of the address of the machine's network interface."""
USAGE_STATS_OFF = ("RAY_USAGE_STATS_ENABLED", "0")
"""Ray would otherwise try to report usage to its makers over the internet from every cluster it starts."""
HEARTBEAT_GROUP = "heartbeat"
"""Ray concurrency group of ``NodeActor.status``: a thread and event loop of its own."""
NODE_START_TIMEOUT_S = 120.0
"""A node actor's start: a Ray worker process, the engine, the default portrait prepared."""


def require_ray() -> Any:
    """The ``ray`` module, or a one-line ``ConfigError`` saying how to install it."""
    try:
        import ray
        import ray.exceptions
        import ray.util
    except ImportError:
        raise ConfigError("the cluster needs Ray: pip install -e '.[cluster]' (or pip install ray)") from None
    return ray


def connect(address: str, namespace: str, log_to_driver: bool = False) -> None:
    """Join the Ray cluster at ``address`` (``HOST:PORT``) as a driver; one-line errors."""
    os.environ.setdefault(*USAGE_STATS_OFF)
    ray = require_ray()
    if not address:
        raise ConfigError("cluster.address is empty: give the Ray head as HOST:PORT (--address)")
    if ":" not in address or not address.rsplit(":", 1)[1].isdigit():
        raise ConfigError(f"cluster.address must be HOST:PORT of the Ray head, got {address!r}")
    try:
        ray.init(address=address, namespace=namespace, log_to_driver=log_to_driver,
                 configure_logging=False)
    except Exception as exc:
        raise ConfigError(f"cannot join the Ray cluster at {address}: {one_line(exc)}") from None


def ray_node_resources(node_id: str) -> dict[str, float]:
    """The resources Ray node ``node_id`` declared (``CPU``, ``GPU``, custom ones)."""
    ray = require_ray()
    for node in ray.nodes():
        if node.get("NodeID") == node_id and node.get("Alive"):
            return dict(node.get("Resources", {}))
    raise ConfigError(f"Ray node {node_id} is not alive")


def node_capacity(config: Config, resources: dict[str, float], name: str) -> int:
    """Sessions of ``config.engine.name`` a node with ``resources`` holds; 0 is a one-line error."""
    engine = config.engine.name
    cost = config.cluster.session_cost.get(engine)
    if cost is None:
        raise ConfigError(f"cluster.session_cost has no entry for engine {engine!r}")
    capacity = session_capacity(resources, cost)
    if capacity < 1:
        held = ", ".join(f"{key} {resources.get(key, 0):g}" for key in cost)
        raise ConfigError(f"node {name} cannot hold one {engine} session: it has {held}, a session needs "
                          + ", ".join(f"{key} {share:g}" for key, share in cost.items())
                          + " (cluster.session_cost)")
    return capacity


class NodeActor(NodeService):
    """``NodeService`` built inside its Ray worker process (the engine is created there)."""

    def __init__(self, config: Config, name: str, capacity: int) -> None:
        import server  # noqa: F401  (one BLAS thread per call, before numpy loads: server/__init__.py)
        from server.logs import setup_logging
        from server.main import make_engine

        setup_logging("info", config.server.log_format)
        niceness = os.nice(0)
        if niceness > 0:
            log.warning("node %s runs at niceness %d: its sessions yield to every other process; start Ray "
                        "with %s=%s in the environment (docs/deploy.md)", name, niceness, *WORKER_NICENESS)
        super().__init__(config, name, capacity, make_engine(config))

    async def status(self) -> dict[str, object]:
        """The heartbeat, answered in its own thread and event loop (``HEARTBEAT_GROUP``): a node whose
        sessions keep its main loop busy is slow, not lost."""
        return await NodeService.status(self)


async def start_node(config: Config, name: str, ray_node_id: str) -> Any:
    """Start node actor ``name`` on Ray node ``ray_node_id``; returns its handle once its default avatar
    is prepared. One-line ``ConfigError`` when it cannot start."""
    ray = require_ray()
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    if not name or not all(c.isalnum() or c in "-_." for c in name):
        raise ConfigError(f"invalid node name {name!r}: use letters, digits, '-', '_' or '.'")
    resources = await asyncio.to_thread(ray_node_resources, ray_node_id)
    capacity = node_capacity(config, resources, name)
    actor_name = NODE_PREFIX + name
    try:
        await asyncio.to_thread(ray.get_actor, actor_name, config.cluster.namespace)
    except ValueError:
        pass
    else:
        raise ConfigError(f"a node named {name!r} already runs in this cluster: pick another --name")
    ray.method(concurrency_group=HEARTBEAT_GROUP)(NodeActor.status)
    actor = ray.remote(concurrency_groups={HEARTBEAT_GROUP: 1})(NodeActor).options(
        name=actor_name, namespace=config.cluster.namespace, num_cpus=0, max_concurrency=1000,
        scheduling_strategy=NodeAffinitySchedulingStrategy(ray_node_id, soft=False),
    ).remote(config, name, capacity)
    try:
        status = await asyncio.wait_for(actor.start.remote(), NODE_START_TIMEOUT_S)
    except TimeoutError:
        ray.kill(actor)
        raise ConfigError(f"node {name} did not start within {NODE_START_TIMEOUT_S:g} s") from None
    except Exception as exc:
        raise ConfigError(f"node {name} failed to start: {one_line(exc)}") from None
    log.info("node %s started: %s", name, status)
    return actor


class RayNode:
    """A ``NodeHandle`` over a node actor."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    async def call(self, method: str, *args: Any, timeout: float) -> Any:
        try:
            return await asyncio.wait_for(getattr(self.actor, method).remote(*args), timeout)
        except TimeoutError:
            raise NodeUnavailable(f"{method} timed out after {timeout:g} s") from None
        except require_ray().exceptions.ActorDiedError:
            raise NodeGone(f"{method}: the node actor died") from None
        except Exception as exc:  # ActorUnavailableError (maybe back soon), RayTaskError ...
            raise NodeUnavailable(f"{method} failed: {exc.__class__.__name__}") from None


class RayDirectory:
    """Finds node actors by name in one namespace (new ones: joined nodes)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._handles: dict[str, RayNode] = {}

    async def discover(self) -> dict[str, NodeHandle]:
        ray = require_ray()
        names = await asyncio.to_thread(ray.util.list_named_actors, False)
        found: dict[str, NodeHandle] = {}
        for actor_name in names:
            if not actor_name.startswith(NODE_PREFIX):
                continue
            name = actor_name[len(NODE_PREFIX):]
            if name not in self._handles:
                try:
                    actor = await asyncio.to_thread(ray.get_actor, actor_name, self.namespace)
                except ValueError:  # died between the two calls
                    continue
                self._handles[name] = RayNode(actor)
            found[name] = self._handles[name]
        for name in set(self._handles) - set(found):  # gone: a node restarted under it gets a new handle
            del self._handles[name]
        return found

    def forget(self, name: str) -> None:
        self._handles.pop(name, None)


def one_line(exc: BaseException) -> str:
    """An exception as one short line (Ray's messages span many)."""
    text = " ".join(str(exc).split()) if not isinstance(exc, AvatarError) else str(exc)
    text = text or exc.__class__.__name__
    return text if len(text) <= 300 else text[:297] + "..."
