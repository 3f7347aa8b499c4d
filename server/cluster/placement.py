"""Where a new session goes: the gateway's view of the nodes and its placement decisions (no Ray here).

Each node reports, once per ``cluster.heartbeat_s``, its engine, how many sessions it holds
(``capacity``: its Ray resources divided by the engine's ``cluster.session_cost``), how many run now and
whether it is draining. ``Placement`` keeps the latest report per node plus the offers this gateway has
in flight, and decides:

* ``place(engine)``: the nodes that run ``engine``, are active and have a free slot, least loaded first
  (load = share of its slots taken, ties by fewer sessions, then by name); none -> ``ClusterFull``
  (the usual one-line ``server busy`` error);
* ``expired(now)``: nodes silent for ``node_timeout_s`` are lost; their sessions are returned so the
  gateway can tell their clients;
* ``report`` of an unknown name is a join (nodes may join at any time), of a lost name a rejoin.

Times are seconds on the caller's monotonic clock.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from avatar.errors import ConfigError
from server.signalling import SignallingError


class NodeState(StrEnum):
    ACTIVE = "active"
    """Takes new sessions while it has room."""
    DRAINING = "draining"
    """Keeps its sessions, takes no new ones."""
    LOST = "lost"
    """Stopped answering: its sessions are over."""


class ClusterFull(SignallingError):
    """No node can take another session of this engine (sent to the client as it is)."""


def session_capacity(resources: Mapping[str, float], cost: Mapping[str, float]) -> int:
    """Sessions a node with Ray ``resources`` (``{"CPU": 8, "GPU": 1}``) holds when one session takes
    ``cost`` (``{"CPU": 0.5}``): the smallest ``floor(resources[r] / cost[r])`` over the cost's keys,
    0 when the node lacks one of them."""
    if not cost:
        raise ConfigError("a session cost needs at least one resource, e.g. {CPU: 0.5}")
    # a small epsilon: 2 / 0.4 is 4.999... in floating point
    return min(math.floor(float(resources.get(name, 0.0)) / share + 1e-9) for name, share in cost.items())


@dataclass
class NodeView:
    """The gateway's knowledge of one node."""

    name: str
    engine: str
    capacity: int
    running: int = 0
    """Sessions the node reported (from every gateway)."""
    state: NodeState = NodeState.ACTIVE
    seen_at: float = 0.0
    pending: int = 0
    """Offers this gateway sent to it that have not been answered yet."""
    sessions: set[str] = field(default_factory=set)
    """This gateway's sessions on it."""
    sizes: tuple[int, ...] = ()
    """Picture sides its engine renders (an offer's ``size``), as the node reported."""

    @property
    def load(self) -> int:
        """Slots taken: the node's own count, or this gateway's sessions plus its offers in flight if
        more (the report is older). Not their sum: a session still starting is in both."""
        return max(self.running, len(self.sessions) + self.pending)

    @property
    def free(self) -> int:
        return max(0, self.capacity - self.load)

    def public(self) -> dict[str, object]:
        return {"name": self.name, "engine": self.engine, "state": str(self.state),
                "capacity": self.capacity, "running": self.running, "pending": self.pending}


class Placement:
    """Nodes by name and the session -> node map of one gateway."""

    def __init__(self, node_timeout_s: float = 3.0) -> None:
        self.node_timeout_s = node_timeout_s
        self.nodes: dict[str, NodeView] = {}
        self._where: dict[str, str] = {}

    # ------------------------------------------------------------------------- membership
    def report(self, name: str, engine: str, capacity: int, running: int, draining: bool, now: float,
               sizes: Collection[int] = ()) -> bool:
        """A node's heartbeat; returns True when it (re)joined: unknown before, or lost."""
        node = self.nodes.get(name)
        joined = node is None or node.state == NodeState.LOST
        if node is None or joined:
            node = self.nodes[name] = NodeView(name, engine, capacity)
        node.engine, node.capacity, node.running, node.seen_at = engine, capacity, running, now
        node.sizes = tuple(sorted(int(s) for s in sizes))
        node.state = NodeState.DRAINING if draining else NodeState.ACTIVE
        return joined

    def drain(self, name: str) -> None:
        """Take no new sessions on ``name`` (its own report confirms it at the next heartbeat)."""
        self._node(name).state = NodeState.DRAINING

    def expired(self, now: float) -> dict[str, set[str]]:
        """Nodes silent for ``node_timeout_s``: marked lost; {node name: its sessions here}."""
        silent = [node.name for node in self.nodes.values()
                  if node.state != NodeState.LOST and now - node.seen_at > self.node_timeout_s]
        return {name: self.lose(name) for name in silent}

    def lose(self, name: str) -> set[str]:
        """``name`` is gone (it died or stopped answering): its sessions, which are now over."""
        node = self._node(name)
        node.state = NodeState.LOST
        gone, node.sessions, node.pending, node.running = node.sessions, set(), 0, 0
        for session in gone:
            self._where.pop(session, None)
        return gone

    def sizes(self, engine: str) -> tuple[int, ...]:
        """Picture sides every live ``engine`` node renders, ascending (an offer may ask for any of them);
        empty when no such node reported any."""
        common: set[int] | None = None
        for node in self.live():
            if node.engine == engine and node.sizes:
                common = set(node.sizes) if common is None else common & set(node.sizes)
        return tuple(sorted(common or ()))

    def live(self) -> list[NodeView]:
        """Nodes not lost, by name."""
        return sorted((n for n in self.nodes.values() if n.state != NodeState.LOST), key=lambda n: n.name)

    # -------------------------------------------------------------------------- placement
    def candidates(self, engine: str, exclude: Collection[str] = ()) -> list[NodeView]:
        """Active nodes of ``engine`` with a free slot, least loaded first (``exclude``: names to skip)."""
        usable = [n for n in self.nodes.values() if n.state == NodeState.ACTIVE and n.engine == engine
                  and n.free > 0 and n.name not in exclude]
        return sorted(usable, key=lambda n: (n.load / max(1, n.capacity), n.load, n.name))

    def place(self, engine: str, exclude: Collection[str] = ()) -> NodeView:
        """The node for a new ``engine`` session, counted as pending there until ``placed``/``failed``.
        ``exclude``: nodes that already failed this offer. Raises ``ClusterFull`` when none has room."""
        found = self.candidates(engine, exclude)
        if not found:
            raise ClusterFull(self._busy_message(engine))
        node = found[0]
        node.pending += 1
        return node

    def placed(self, name: str, session: str) -> None:
        """The offer sent to ``name`` started ``session``."""
        node = self._node(name)
        node.pending = max(0, node.pending - 1)
        if node.state == NodeState.LOST:
            return
        node.sessions.add(session)
        self._where[session] = name

    def failed(self, name: str, full: bool = False) -> None:
        """The offer sent to ``name`` did not start a session; ``full``: because the node said it was full
        (another gateway took its last slot): counted as full until its next report."""
        node = self._node(name)
        node.pending = max(0, node.pending - 1)
        if full:
            node.running = max(node.running, node.capacity)

    def ended(self, session: str) -> None:
        """``session`` is over (closed by its client, the node, or an error)."""
        name = self._where.pop(session, None)
        if name is not None and name in self.nodes:
            node = self.nodes[name]
            node.sessions.discard(session)
            node.running = max(len(node.sessions), node.running - 1)

    def node_of(self, session: str) -> str | None:
        return self._where.get(session)

    def running(self) -> int:
        return sum(n.load for n in self.live())

    # ----------------------------------------------------------------------------- helpers
    def _node(self, name: str) -> NodeView:
        node = self.nodes.get(name)
        if node is None:
            raise KeyError(f"unknown node {name!r}")
        return node

    def _busy_message(self, engine: str) -> str:
        nodes = [n for n in self.live() if n.engine == engine]
        active = [n for n in nodes if n.state == NodeState.ACTIVE]
        running = sum(n.load for n in nodes)
        if not nodes:
            return f"server busy: no {engine} node is available, try later"
        if not active:
            return f"server busy: all {len(nodes)} {engine} nodes are draining, try later"
        return f"server busy: {running} sessions running on {len(nodes)} nodes, try later"
