"""The gateway: the server's pages and ``/ws`` signalling, with every session placed on a node.

``Gateway`` is the server (``server.app.App``) without engine: it serves pages, avatars, metrics and the
socket limits as usual, and hands on to nodes (``server/cluster/node.py``) what needs a session:

* an ``offer`` goes to the node ``Placement`` picks (least loaded with room for the engine); a node that
  says ``server busy`` (another gateway took its last slot) or does not answer is skipped for the next;
  none left -> ``server busy``. The answer SDP is the node's own, so media flows between the browser and
  that node;
* say/audio/interrupt for the socket's own session go to its node; with a ``channel`` they go to every
  node, and the replies are merged as one server would (``sessions`` summed, refusals listed);
* events (stats, speaking_*, ended, errors) are collected from each node the socket uses (long polling)
  and sent on;
* every ``cluster.heartbeat_s`` each node reports its load; a node silent for ``cluster.node_timeout_s``
  is lost: its clients get ``error`` (then ``ended``) at once, and new sessions go elsewhere. Nodes that
  appear (join) are used from their first report.

Uploaded portraits are not supported on a gateway (``avatar.allow_upload`` is refused at start-up).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from websockets.asyncio.server import ServerConnection
from websockets.http11 import Request, Response

from avatar.errors import AvatarError, ConfigError
from server import signalling
from server.app import App, SocketState, json_response, text_response
from server.auth import token_ok
from server.avatars import AvatarRegistry
from server.cluster.placement import NodeState, Placement
from server.config import Config
from server.logs import SessionLog
from server.session import SessionRegistry
from server.session_stats import GAUGES
from server.signalling import Interrupt, Offer, PushAudio, Say, SignallingError

log = logging.getLogger("server.cluster.gateway")

SendText = Callable[[str], Awaitable[None]]
POLL_WAIT_S = 2.0
"""How long one ``events`` call may wait on the node for a first event."""
FORGET_TIMEOUT_S = 2.0
NOT_HERE = ("no session on channel", "wrong key for channel")
"""Channel refusals of a node that only mean "not this node's audience"."""
GATEWAY_SESSIONS = 1_000_000
"""The gateway does not bound sessions itself: the nodes' capacities do."""


class NodeUnavailable(Exception):
    """A call to a node failed or timed out."""


class NodeGone(NodeUnavailable):
    """The node is dead for sure (its actor died): no need to wait for ``node_timeout_s``."""


class NodeHandle(Protocol):
    """How a gateway reaches one node (a Ray actor, or a ``NodeService`` in tests)."""

    async def call(self, method: str, *args: Any, timeout: float) -> Any:
        """``NodeService.<method>(*args)`` on the node; ``NodeUnavailable`` on failure or timeout."""
        ...


class NodeDirectory(Protocol):
    async def discover(self) -> dict[str, NodeHandle]:
        """Every node that exists now, by name (joined nodes appear, dead ones may linger)."""
        ...

    def forget(self, name: str) -> None:
        """``name`` was lost: find it anew (a node restarted under that name is another actor)."""
        ...


class EngineName:
    """What the gateway knows of the engine (``/health``): its name, and the picture sizes its nodes
    render (``sizes()``: from their heartbeats; ``size``, ``engine.size``, before any reported). It
    renders nothing."""

    def __init__(self, name: str, size: int, sizes: Callable[[], tuple[int, ...]]) -> None:
        self.name, self.size, self._sizes = name, size, sizes

    @property
    def output_sizes(self) -> tuple[int, ...]:
        return self._sizes() or (self.size,)


class AvatarListing(AvatarRegistry):
    """The avatar list only (ids, names): portraits are prepared on the nodes."""

    async def prepare_default(self) -> None:  # type: ignore[override]
        entry = self.find(None)
        if not entry.path.is_file():
            raise ConfigError(f"avatar portrait not found: {entry.path}")


@dataclass(frozen=True)
class RemoteAvatar:
    avatar_id: str


@dataclass(eq=False)
class RemoteSession:
    """A session running on a node, as the gateway's ``SocketState.session`` and ``self.sessions`` see it."""

    id: str
    node: str
    client: str
    avatar: RemoteAvatar
    gateway: Gateway
    log: SessionLog
    closed: bool = False
    running: bool = True
    join_timeout_s: float = 5.0
    counters: dict[str, float] = field(default_factory=dict)
    """The latest totals from its stats events (for /metrics)."""

    async def close(self, reason: str = "closed") -> None:
        await self.gateway.close_remote(self, reason)

    def totals(self) -> dict[str, float]:
        return dict(self.counters)


TOTALS = ("frames_sent", "frames_fresh", "frames_repeated", "frames_still", "frames_dropped",
          "windows_dropped", "windows_skipped", "queue_depth", "frame_buffer")


@dataclass(eq=False)
class ClientLink:
    """One socket of this gateway as nodes know it: its id there, the nodes it talks to, their pollers."""

    client: str
    state: SocketState
    send: SendText
    pollers: dict[str, asyncio.Task] = field(default_factory=dict)


class Gateway(App):
    """Signalling for a cluster; ``directory`` finds the nodes (``server/cluster/ray_nodes.py``)."""

    def __init__(self, config: Config, directory: NodeDirectory) -> None:
        if config.avatar.allow_upload:
            raise ConfigError("avatar.allow_upload is not supported on a cluster gateway: set it to false")
        if config.engine.name not in config.cluster.session_cost:
            raise ConfigError(f"cluster.session_cost has no entry for engine {config.engine.name!r}")
        self.placement = Placement(config.cluster.node_timeout_s)
        engine = EngineName(config.engine.name, config.engine.size, lambda: self.placement.sizes(engine.name))
        super().__init__(config, engine)  # type: ignore[arg-type]
        self.avatars = AvatarListing(
            self.engine, config.path(config.avatar.default), config.path(config.avatar.dir),  # type: ignore[arg-type]
            require_consent=config.avatar.require_consent, framing=config.avatar.framing,
        )
        self.sessions = SessionRegistry(GATEWAY_SESSIONS)
        self.directory = directory
        self.id = secrets.token_hex(3)
        self._handles: dict[str, NodeHandle] = {}
        self._watchers: dict[str, asyncio.Task] = {}
        self._links: dict[SocketState, ClientLink] = {}
        self._count = 0
        self._discovery: asyncio.Task | None = None
        self._cleanups: set[asyncio.Task] = set()  # kept until done: the loop holds only weak references

    # ---------------------------------------------------------------------------- lifecycle
    async def start(self, host: str | None = None, port: int | None = None) -> None:
        await self.discover()
        await super().start(host, port)
        self._discovery = asyncio.ensure_future(self._discover_forever())

    async def stop(self) -> None:
        for task in [self._discovery, *self._watchers.values(), *self._cleanups]:
            if task is not None:
                task.cancel()
        await super().stop()
        for link in list(self._links.values()):
            for poller in link.pollers.values():
                poller.cancel()

    async def discover(self) -> list[str]:
        """Look for nodes; each new one gets a watcher (heartbeats). Returns the names that joined."""
        try:
            found = await self.directory.discover()
        except Exception as exc:  # the directory is Ray's GCS: keep the known nodes and retry later
            log.warning("node discovery failed: %s: %s", exc.__class__.__name__, exc)
            return []
        joined = []
        for name, handle in found.items():
            if name in self._watchers and not self._watchers[name].done():
                continue
            self._handles[name] = handle  # a dead actor still listed fails its first heartbeat
            if await self._heartbeat(name):
                joined.append(name)
                self._watchers[name] = asyncio.ensure_future(self._watch(name))
            else:
                self._handles.pop(name, None)
        return joined

    async def _discover_forever(self) -> None:
        while True:
            await asyncio.sleep(self.config.cluster.heartbeat_s)
            await self.discover()

    async def _heartbeat(self, name: str) -> bool:
        """Ask ``name`` for its status; True when it answered. A late answer still counts (a busy node is
        alive); a dead node's call fails or times out within ``node_timeout_s``."""
        handle = self._handles.get(name)
        if handle is None:
            return False
        try:
            status = await handle.call("status", timeout=self.config.cluster.node_timeout_s)
        except NodeGone:
            known = self.placement.nodes.get(name)
            if known is not None and known.state != NodeState.LOST:
                await self.node_lost(name, "its actor died")
            return False
        except NodeUnavailable:
            return False
        if self.placement.report(name, str(status["engine"]),
                                 int(status["capacity"]), int(status["running"]), bool(status["draining"]),
                                 time.monotonic(), status.get("sizes", ())):
            log.info("node %s joined: engine=%s capacity=%d", name, status["engine"], status["capacity"])
        return True

    async def _watch(self, name: str) -> None:
        """Heartbeats of one node until it is lost."""
        settings = self.config.cluster
        while True:
            started = time.monotonic()
            await self._heartbeat(name)
            if self.placement.nodes[name].state == NodeState.LOST:
                return
            lost = self.placement.expired(time.monotonic())
            for node in lost:
                await self.node_lost(node, f"silent for over {settings.node_timeout_s:g} s")
            if name in lost:
                return
            await asyncio.sleep(max(0.0, settings.heartbeat_s - (time.monotonic() - started)))

    async def node_lost(self, name: str, why: str = "") -> None:
        """``name`` stopped answering: tell its clients (``error`` then ``ended``), forget its sessions."""
        self.placement.lose(name)
        handle = self._handles.pop(name, None)
        self.directory.forget(name)
        watcher = self._watchers.pop(name, None)
        if watcher is not None and watcher is not asyncio.current_task():
            watcher.cancel()
        log.warning("node %s lost (%s): its sessions end", name, why or "gone")
        notices = []
        for link in list(self._links.values()):
            poller = link.pollers.pop(name, None)
            if poller is not None:
                poller.cancel()
            session = link.state.session
            if isinstance(session, RemoteSession) and session.node == name and not session.closed:
                self._forget_session(session)
                notices.append(self._notify_lost(link, session, name))
                if handle is not None:  # a node only slow to answer must not stream on: it closes it
                    notices.append(_quietly(handle.call("forget", link.client, "node lost",
                                                        timeout=FORGET_TIMEOUT_S)))
        await asyncio.gather(*notices)

    async def _notify_lost(self, link: ClientLink, session: RemoteSession, node: str) -> None:
        reason = f"node {node} stopped answering"
        session.log.warning("ended: %s", reason)
        for text in (signalling.error(f"the session ended: {reason}; start a new one"),
                     signalling.ended(session.id, reason)):
            try:
                await asyncio.wait_for(link.send(text), 2.0)
            except Exception:
                return

    # ------------------------------------------------------------------------------ HTTP
    async def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if request.path.split("?", 1)[0] == "/cluster":
            if not token_ok(self.config.server.auth_token, request.path, request.headers):
                return text_response(401, "missing or wrong token\n")
            return json_response({"gateway": self.id, "nodes": [n.public() for n in self.placement.live()]})
        return await super().process_request(connection, request)

    # ------------------------------------------------------------------------- signalling
    async def handle_message(self, state: SocketState, raw: str | bytes, send) -> str:
        try:
            message = signalling.parse_message(raw) if isinstance(raw, str) else None
        except AvatarError:
            message = None  # the server's own handling gives the error
        try:
            if isinstance(message, Offer):
                return await self._offer_to_node(state, message, raw, send)
            if isinstance(message, Say | PushAudio | Interrupt):
                if message.channel is not None:
                    return await self._to_channel(state, raw, send)
                return await self._to_own_node(state, raw)
        except AvatarError as exc:
            log.info("refused peer=%s: %s", state.peer, exc)
            return signalling.error(str(exc))
        except Exception:
            log.exception("message failed peer=%s", state.peer)
            return signalling.error("internal error while handling the message")
        return await super().handle_message(state, raw, send)

    def _link(self, state: SocketState, send: SendText) -> ClientLink:
        link = self._links.get(state)
        if link is None:
            self._count += 1
            link = self._links[state] = ClientLink(f"{self.id}-{self._count}", state, send)
        return link

    async def _offer_to_node(self, state: SocketState, offer: Offer, raw: str, send: SendText) -> str:
        if state.session is not None and not state.session.closed:
            raise SignallingError(f"an offer was already made on this socket (session {state.session.id})")
        if self._stopping:
            raise SignallingError("server is shutting down")
        avatar = self.avatars.find(offer.avatar)  # unknown ids are refused here, before any node
        link = self._link(state, send)
        tried: set[str] = set()
        while True:
            try:
                node = self.placement.place(self.config.engine.name, exclude=tried)
            except SignallingError:
                self.metrics.sessions_rejected.inc()
                raise
            tried.add(node.name)
            try:
                reply = await self._call(node.name, "handle", link.client, raw,
                                         timeout=self.config.cluster.start_timeout_s)
            except NodeUnavailable as exc:
                log.warning("node %s did not take the offer: %s", node.name, exc)
                self.placement.failed(node.name)
                cleanup = asyncio.ensure_future(self._forget_on(node.name, link.client))
                self._cleanups.add(cleanup)
                cleanup.add_done_callback(self._cleanups.discard)
                continue
            except BaseException:  # cancelled (shutdown) or a bug: the pending slot must not stay taken
                self.placement.failed(node.name)
                raise
            answer = json.loads(reply)
            if answer.get("type") != "answer":
                message = str(answer.get("message", ""))
                busy = message.startswith("server busy")
                self.placement.failed(node.name, full=busy)
                if busy:
                    continue
                return reply
            session = RemoteSession(answer["session"], node.name, link.client, RemoteAvatar(avatar.id), self,
                                    SessionLog(log, answer["session"]))
            self.placement.placed(node.name, session.id)
            if self.placement.nodes[node.name].state == NodeState.LOST:  # lost while it answered
                raise SignallingError(f"node {node.name} stopped answering; try again")
            self.sessions.add(session)  # type: ignore[arg-type]
            state.session = session  # type: ignore[assignment]
            self._ensure_poller(link, node.name)
            self.metrics.sessions_started.inc()
            session.log.info("placed on node %s peer=%s avatar=%s mode=%s", node.name, state.peer, avatar.id,
                             offer.mode)
            return reply

    async def _to_own_node(self, state: SocketState, raw: str) -> str:
        session = state.session
        if not isinstance(session, RemoteSession) or session.closed:
            raise SignallingError("start a session first: send an offer")
        try:
            return await self._call(session.node, "handle", session.client, raw,
                                    timeout=self.config.cluster.start_timeout_s)
        except NodeUnavailable:
            raise SignallingError(f"node {session.node} did not answer; try again") from None

    async def _to_channel(self, state: SocketState, raw: str, send: SendText) -> str:
        """A controller's channel message, to every live node; one merged reply (see below)."""
        own = state.session
        if own is not None and not own.closed:
            raise SignallingError(f"this socket has its own session ({own.id}): send without a 'channel'")
        link = self._link(state, send)
        nodes = [n.name for n in self.placement.live()]
        if not nodes:
            raise SignallingError("no session on channel: no node is available")
        replies = await asyncio.gather(*(self._call(name, "handle", link.client, raw,
                                                    timeout=self.config.cluster.start_timeout_s)
                                         for name in nodes), return_exceptions=True)
        parsed: list[dict[str, Any]] = []
        for name, reply in zip(nodes, replies, strict=True):
            if isinstance(reply, BaseException):
                parsed.append({"type": "error", "message": f"node {name} did not answer"})
                continue
            parsed.append(json.loads(reply))
            if parsed[-1].get("type") != "error":
                self._ensure_poller(link, name)  # the controller hears the sessions' events from now on
        return merge_channel_replies(parsed)

    # ------------------------------------------------------------------------- events
    def _ensure_poller(self, link: ClientLink, node: str) -> None:
        poller = link.pollers.get(node)
        if poller is None or poller.done():
            link.pollers[node] = asyncio.ensure_future(self._poll(link, node))

    async def _poll(self, link: ClientLink, node: str) -> None:
        """Events the node's sessions send ``link``'s client, sent on to its socket, until either ends."""
        while node in self._handles:
            try:
                texts = await self._call(node, "events", link.client, POLL_WAIT_S,
                                         timeout=POLL_WAIT_S + self.config.cluster.node_timeout_s)
            except NodeUnavailable:
                await asyncio.sleep(0.2)  # the heartbeats decide whether the node is lost
                continue
            if texts is None:
                return  # the node does not know this client (any more)
            for text in texts:
                self._observe(link, node, text)
                try:
                    await link.send(text)
                except Exception:
                    return  # the socket closed: socket_closed() cleans up

    def _observe(self, link: ClientLink, node: str, text: str) -> None:
        """Bookkeeping from a session's events: ``ended`` frees the socket and the slot, ``stats`` counts."""
        session = link.state.session
        if not isinstance(session, RemoteSession) or session.node != node:
            return
        try:
            event = json.loads(text)
        except ValueError:
            return
        kind = event.get("type")
        if kind == "stats" and event.get("session") == session.id:
            session.counters = {key: float(event[key]) for key in TOTALS if key in event}
        elif kind == "ended" and event.get("session") == session.id:
            self._forget_session(session)

    def _forget_session(self, session: RemoteSession) -> None:
        """``session`` is over: its slot is free, its counters join the ended sessions' (once)."""
        if session.closed:
            return
        session.closed = True
        session.running = False
        self.placement.ended(session.id)
        self.sessions.remove(session)  # type: ignore[arg-type]
        # as App does for its own sessions: /metrics totals never go down when a session ends
        self.metrics.session_closed({k: v for k, v in session.counters.items() if k not in GAUGES})

    async def close_remote(self, session: RemoteSession, reason: str) -> None:
        """Close ``session`` on its node (shutdown); the socket stays."""
        if session.closed:
            return
        self._forget_session(session)
        await self._forget_on(session.node, session.client, reason)

    async def socket_closed(self, state: SocketState) -> None:
        link = self._links.pop(state, None)
        session = state.session
        if isinstance(session, RemoteSession) and not session.closed:
            self._forget_session(session)
        if link is None:
            return
        for poller in link.pollers.values():
            poller.cancel()
        nodes = set(link.pollers) | ({session.node} if isinstance(session, RemoteSession) else set())
        await asyncio.gather(*(self._forget_on(node, link.client) for node in nodes))

    async def _forget_on(self, node: str, client: str, reason: str = "socket closed") -> None:
        try:
            await self._call(node, "forget", client, reason, timeout=FORGET_TIMEOUT_S)
        except NodeUnavailable:
            pass  # the node forgets unpolled clients by itself

    async def _call(self, node: str, method: str, *args: Any, timeout: float) -> Any:
        handle = self._handles.get(node)
        if handle is None:
            raise NodeUnavailable(f"node {node} is gone")
        return await handle.call(method, *args, timeout=timeout)

    # ----------------------------------------------------------------------- operations
    async def drain(self, name: str, draining: bool = True) -> dict[str, Any]:
        """Ask node ``name`` to take no new sessions (or take them again); every gateway sees it at the
        next heartbeat, this one at once."""
        status = await self._call(name, "drain", draining, timeout=self.config.cluster.heartbeat_s * 2)
        if draining:
            self.placement.drain(name)
        else:
            await self._heartbeat(name)
        return status


def merge_channel_replies(replies: list[dict[str, Any]]) -> str:
    """One reply for a channel message from the replies of every node, as one server would give it:
    ``sessions`` summed over the nodes that took it, ``dropped_s`` the largest, ``errors`` the distinct
    refusals of sessions that had the key; none took it -> the most telling error (a refusal of the
    sessions themselves, else ``wrong key``, else ``no session on channel``)."""
    taken = [r for r in replies if r.get("type") != "error"]
    refusals = [str(r.get("message", "")) for r in replies if r.get("type") == "error"]
    real = [m for m in refusals if not m.startswith(NOT_HERE)]
    if not taken:
        wrong_key = [m for m in refusals if m.startswith(NOT_HERE[1])]
        chosen = real or wrong_key or refusals or ["no session on channel"]
        return signalling.error(chosen[0])
    merged = dict(taken[0])
    kind = merged.pop("type")
    merged["sessions"] = sum(int(r.get("sessions", 0)) for r in taken)
    if "dropped_s" in merged:
        merged["dropped_s"] = max(float(r.get("dropped_s", 0.0)) for r in taken)
    errors = sorted({*real, *(e for r in taken for e in r.get("errors", []))})
    merged.pop("errors", None)
    if errors:
        merged["errors"] = errors
    return signalling.event(kind, **merged)


async def _quietly(call: Awaitable[Any]) -> None:
    try:
        await call
    except Exception:
        pass
