"""The server: HTTP routes through websockets' ``process_request`` hook, and the ``/ws`` signalling loop.

Routes: ``GET /health`` (JSON status), ``GET /avatars`` (JSON list), ``GET /metrics`` (Prometheus
text), ``GET /ice-servers`` (``server.ice_servers`` for the pages), ``/ws`` (WebSocket signalling,
docs/protocol.md), everything else from the static folder (``/`` -> index.html, ``/<page>`` ->
``<page>.html``). Nothing a client sends can crash the server or close it
with an internal error. Sockets are capped (``server.max_connections``), rate limited per socket, closed
when idle without a session, gated by the browser origin (same-origin by default) and optionally by
a token (server/auth.py). A socket without a session of its own may act as a *controller*: its
say/audio/interrupt messages carrying a ``channel`` and its ``key`` go to the speak-mode sessions whose
offer named that channel with that key (server/channels.py, server/speech_requests.py).
"""

from __future__ import annotations

import asyncio
import email.utils
import http
import json
import logging
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from avatar.engine import Engine
from avatar.errors import AvatarError
from server import signalling
from server.auth import origin_refusal, token_ok
from server.avatars import AvatarRegistry
from server.broadcast.broadcasts import Broadcasts
from server.broadcast.settings import parse_janus
from server.channels import channel_targets
from server.clock import Clock
from server.config import Config
from server.limits import ABUSIVE, REFUSED, MessageRateLimit
from server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from server.metrics import ServerMetrics
from server.session import Session, SessionRegistry
from server.signalling import DetectLanguage, Interrupt, ListAvatars, Offer, Ping, SignallingError, Upload
from server.speaker import SendText, TtsProvider
from server.speech_requests import SpeechMessage, deliver
from server.static_files import StaticFiles
from server.uploads import PortraitUploads, UploadRequest
from server.video_encoders import install as install_video_encoding

log = logging.getLogger("server.app")
WS_PATH = "/ws"
MAX_QUEUED_MESSAGES = 8
UPLOAD_PURGE_S = 30.0
"""Received messages buffered per socket before reading pauses (x max_message_bytes at worst)."""



@dataclass(eq=False)  # hashed by identity: a controller's key in the sessions' listeners
class SocketState:
    """What one signalling socket owns: at most one live session at a time."""

    peer: str
    limit: MessageRateLimit
    session: Session | None = None


class App:
    """Owns the avatar and session registries and the listening server (``start`` / ``stop``)."""

    def __init__(self, config: Config, engine: Engine, clock: Clock | None = None) -> None:
        self.config = config
        self.engine = engine
        self.clock = clock
        install_video_encoding(config.video.encoding)  # process-wide: aiortc's senders made from now on
        self.avatars = AvatarRegistry(
            engine, config.path(config.avatar.default), config.path(config.avatar.dir),
            require_consent=config.avatar.require_consent, framing=config.avatar.framing,
        )
        self.sessions = SessionRegistry(config.server.max_sessions)
        self._sockets: set[ServerConnection] = set()
        self.metrics = ServerMetrics(
            self._live_totals, lambda: len(self.sessions), lambda: len(self._sockets)
        )
        self.tts = TtsProvider(config.speech.tts, config.speech.max_text_chars)
        self.uploads = PortraitUploads(engine, config.avatar, config.server.max_message_bytes)
        self._purger: asyncio.Task | None = None
        self.static = StaticFiles(config.path(config.server.static_dir))
        self.broadcasts = Broadcasts(parse_janus(config.server.janus), config.server.ice_servers)
        """Sessions published into Janus (offer ``"broadcast": true``; server/broadcast/)."""
        self._server: Server | None = None
        self._stopping = False
        self.port = config.server.port
        self.host = config.server.host
        """The address listened on (the origin check's DNS-rebinding guard applies on loopback)."""

    async def start(self, host: str | None = None, port: int | None = None) -> None:
        """Prepare the default avatar (a bad portrait raises ``PortraitError``) then listen.
        ``port`` 0 picks a free port (see ``self.port``)."""
        await self.avatars.prepare_default()
        self.host = host or self.config.server.host
        self._server = await serve(
            self.handle_socket,
            host or self.config.server.host,
            self.config.server.port if port is None else port,
            process_request=self.process_request,
            max_size=self.config.server.max_message_bytes,
            max_queue=MAX_QUEUED_MESSAGES,
            compression=None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("serving http://%s:%d engine=%s", host or self.config.server.host, self.port,
                 getattr(self.engine, "name", "engine"))
        self._purger = asyncio.ensure_future(self._purge_uploads())

    async def stop(self) -> None:
        """Graceful shutdown within ``server.shutdown_timeout_s``: stop accepting, close sessions in
        order, then close the remaining sockets."""
        if self._stopping:
            return
        self._stopping = True
        if self._purger is not None:
            self._purger.cancel()
        await self.broadcasts.stop_all()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.server.shutdown_timeout_s
        if self._server is not None:
            self._server.close(close_connections=False)  # stop accepting connections
        for session in self.sessions:  # in the order they started
            remaining = deadline - loop.time()
            session.join_timeout_s = min(session.join_timeout_s, max(0.05, remaining - 0.2))
            try:
                await asyncio.wait_for(session.close("server shutting down"), max(0.05, remaining))
            except TimeoutError:
                session.log.warning("did not close within the shutdown timeout")
        if self._server is not None:
            closing = [asyncio.ensure_future(c.close(1001, "server shutting down"))
                       for c in self._server.connections]
            remaining = max(0.05, deadline - loop.time())
            if closing:
                await asyncio.wait(closing, timeout=remaining)
            try:
                await asyncio.wait_for(self._server.wait_closed(), max(0.05, deadline - loop.time()))
            except TimeoutError:
                log.warning("shutdown timeout: some connections were still open")
        log.info("server stopped")

    def _uploads_in_use(self) -> set[str]:
        return {session.avatar.avatar_id for session in self.sessions}

    async def _purge_uploads(self) -> None:
        """Drops idle uploaded portraits every ``UPLOAD_PURGE_S`` (server/uploads.py)."""
        while True:
            await asyncio.sleep(UPLOAD_PURGE_S)
            self.uploads.purge(self._uploads_in_use())

    def _live_totals(self) -> dict[str, float]:
        totals: dict[str, float] = {}
        for session in self.sessions:
            for key, value in session.totals().items():
                totals[key] = totals.get(key, 0.0) + value
        return totals

    def _session_closed(self, session: Session) -> None:
        self.sessions.remove(session)
        self.broadcasts.session_closed(session)
        self.uploads.touch(session.avatar.avatar_id)  # its idle time starts now
        self.metrics.session_closed(session.statistics.counters())

    # ------------------------------------------------------------------------------------- HTTP
    async def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        server = self.config.server
        if path == WS_PATH:
            refusal = None
            bad_origin = origin_refusal(server.allowed_origins, request.headers, self.host)
            if len(self._sockets) >= server.max_connections:
                refusal = text_response(503, "too many connections, try later\n")
            elif bad_origin is not None:
                # A browser hides an HTTP refusal from the page: accept, say why, close (handle_socket).
                self.metrics.connections_refused.inc()
                log.info("refused /ws from %s: %s", _peer(connection), bad_origin)
            elif not token_ok(server.auth_token, request.path, request.headers):
                refusal = text_response(401, "missing or wrong token: add ?token=... to the URL\n")
            if refusal is not None:
                self.metrics.connections_refused.inc()
                log.info("refused /ws from %s: status=%d", _peer(connection), refusal.status_code)
            return refusal  # None: continue with the handshake (plain GETs get 426 from websockets)
        if path == "/metrics":
            if not token_ok(server.auth_token, request.path, request.headers):
                return text_response(401, "missing or wrong token\n")
            return make_response(200, self.metrics.render().encode(), METRICS_CONTENT_TYPE)
        if path == "/ice-servers":  # the pages' RTCPeerConnection gets server.ice_servers (TURN too)
            if not token_ok(server.auth_token, request.path, request.headers):
                return text_response(401, "missing or wrong token\n")
            return json_response({"iceServers": server.ice_servers})
        if path == "/health":
            body = {"status": "ok", "engine": getattr(self.engine, "name", "engine"),
                    "sessions": len(self.sessions), "badge": self.config.provenance.badge,
                    "upload": self.uploads.enabled, "consent": self.config.avatar.require_consent,
                    "sizes": list(self.engine.output_sizes)}
            return json_response(body)
        if path == "/avatars":
            return json_response(self.avatars.public_list())
        found = await asyncio.to_thread(self.static.read, request.path)
        if found is None:
            return text_response(404, "not found\n")
        body, content_type = found
        return make_response(200, body, content_type)

    # -------------------------------------------------------------------------------- signalling
    async def handle_socket(self, ws: ServerConnection) -> None:
        server = self.config.server
        bad_origin = origin_refusal(server.allowed_origins, ws.request.headers, self.host)
        if bad_origin is not None:  # none of its messages is read: one error for the page, then 1008
            self._sockets.add(ws)
            try:
                await ws.send(signalling.error(bad_origin))
                await close_socket(ws, 1008, "origin not allowed", timeout=1.0)
            except ConnectionClosed:
                pass
            finally:
                self._sockets.discard(ws)
            return
        state = SocketState(peer=_peer(ws), limit=MessageRateLimit(
            server.max_messages_per_s, server.abuse_messages_per_s))
        self._sockets.add(ws)
        log.info("socket open peer=%s", state.peer)

        async def send(text: str) -> None:
            await ws.send(text)

        try:
            while True:
                try:
                    raw = await asyncio.wait_for(ws.recv(), server.idle_timeout_s)
                except TimeoutError:
                    if state.session is not None and not state.session.closed:
                        continue  # a running session keeps its socket however quiet the client is
                    log.info("socket idle peer=%s idle_s=%g: closing it", state.peer, server.idle_timeout_s)
                    self.metrics.sockets_closed.inc()
                    await close_socket(ws, 1000, "idle timeout")
                    break
                verdict = state.limit.check()
                if verdict == ABUSIVE:
                    log.warning("socket abusive peer=%s refused=%d: closing it (1008)", state.peer,
                                state.limit.refused)
                    self.metrics.sockets_closed.inc()
                    await close_socket(ws, 1008, "too many messages")
                    break
                if verdict == REFUSED:
                    self.metrics.messages_refused.inc()
                    await ws.send(signalling.error(
                        f"too many messages: at most {server.max_messages_per_s:g} per second; slow down"))
                    continue
                reply = await self.handle_message(state, raw, send)
                await ws.send(reply)
        except ConnectionClosed as exc:
            code = exc.sent.code if exc.sent is not None else exc.rcvd.code if exc.rcvd is not None else None
            if code == 1009:
                self.metrics.sockets_closed.inc()
                log.info("socket oversized peer=%s max_bytes=%d: closing it (1009)", state.peer,
                         server.max_message_bytes)
        except Exception:
            log.exception("socket error peer=%s", state.peer)
        finally:
            self._sockets.discard(ws)
            await self.socket_closed(state)
            log.info("socket closed peer=%s", state.peer)

    async def socket_closed(self, state: SocketState) -> None:
        """What a closed socket leaves: its upload, its listening to channels, its session."""
        self.uploads.forget(state)
        for session in self.sessions:  # a controller stops listening to the channels it sent to
            session.speaker.listeners.pop(state, None)
        if state.session is not None:
            await state.session.close("socket closed")

    async def handle_message(self, state: SocketState, raw: str | bytes, send) -> str:
        """The reply to one client message (an error message for anything wrong)."""
        try:
            if isinstance(raw, bytes | bytearray | memoryview) and self.uploads.receiving(state):
                kind, fields = await self.uploads.receive(state, bytes(raw))
                return signalling.event(kind, **fields)
            message = signalling.parse_message(raw)
            if isinstance(message, Upload):
                self.uploads.purge(self._uploads_in_use())
                return signalling.event("upload_ready", **self.uploads.begin(
                    state, _host(state.peer), UploadRequest(message.name, message.size, message.mime,
                                                            message.consent)))
            if isinstance(message, DetectLanguage):
                return signalling.event("language", **await self.tts.detect_language(message.text))
            if isinstance(message, Ping):
                return signalling.pong()
            if isinstance(message, ListAvatars):
                return signalling.avatars(self.avatars.public_list())
            if isinstance(message, Offer):
                return await self._offer(state, message, send)
            if isinstance(message, SpeechMessage):
                if message.channel is not None:
                    return await self._channel_speech(state, message, send)
                return await self._speech(state, message)
            raise SignallingError("unsupported message")
        except AvatarError as exc:
            log.info("refused peer=%s: %s", state.peer, exc)
            return signalling.error(str(exc))
        except Exception:
            log.exception("message failed peer=%s", state.peer)
            return signalling.error("internal error while handling the message")

    async def _speech(self, state: SocketState, message: SpeechMessage) -> str:
        session = state.session
        if session is None or session.closed or not session.running:
            raise SignallingError("start a session first: send an offer")
        accepted, _ = await deliver([session], message, self.tts)
        return _reply(message, accepted[0][1])

    async def _channel_speech(self, state: SocketState, message: SpeechMessage, send: SendText) -> str:
        """A controller's message: delivered to every speak-mode session on the channel, each with its
        own limits. One reply: the first session's fields plus ``channel`` and ``sessions`` (how many
        took it); ``errors`` lists the distinct refusals when only some did; all refused -> an error."""
        own = state.session
        if own is not None and not own.closed:
            raise SignallingError(f"this socket has its own session ({own.id}): send without a 'channel'")
        name = message.channel
        targets = channel_targets(self.sessions, name, message.key or "", self.config.server.auth_token)
        accepted, errors = await deliver(targets, message, self.tts)  # synthesized / decoded once
        for session, _ in accepted:
            session.speaker.listeners[state] = send
        fields = dict(accepted[0][1])
        if isinstance(message, Interrupt):
            fields["dropped_s"] = max(f["dropped_s"] for _, f in accepted)
        fields.update(channel=name, sessions=len(accepted))
        if errors:
            fields["errors"] = sorted(set(errors))
        return _reply(message, fields)

    async def _offer(self, state: SocketState, offer: Offer, send) -> str:
        if state.session is not None and not state.session.closed:
            raise SignallingError(f"an offer was already made on this socket (session {state.session.id})")
        if self._stopping:
            raise SignallingError("server is shutting down")
        if offer.broadcast:
            self.broadcasts.check()
        try:
            self.sessions.check_capacity()
        except SignallingError:
            self.metrics.sessions_rejected.inc()
            raise
        if self.uploads.is_upload_id(offer.avatar):
            upload = self.uploads.find(offer.avatar, _host(state.peer))
            avatar = await self.uploads.at_size(upload, offer.size)
        else:
            avatar = await self.avatars.get(offer.avatar, offer.framing, offer.size)
        session = Session(
            self.config, self.engine, avatar, send,
            on_closed=self._session_closed, number=self.sessions.next_number(), clock=self.clock,
            mode=offer.mode, tts=self.tts, metrics=self.metrics, channel=offer.channel,
            channel_key=offer.key,
        )
        try:
            self.sessions.add(session)  # may still say busy if another offer won the race
        except SignallingError:
            self.metrics.sessions_rejected.inc()
            raise
        state.session = session
        session.log.info("offer peer=%s avatar=%s mode=%s channel=%s size=%d", state.peer, avatar.avatar_id,
                         offer.mode, offer.channel or "-", avatar.image.shape[0])
        answer_sdp = await session.start(offer.sdp)
        self.metrics.sessions_started.inc()
        if offer.broadcast:
            self.broadcasts.start(session)  # in the background; reports after the client connected
        return signalling.answer(answer_sdp, session.id)


def _reply(message: SpeechMessage, fields: dict[str, Any]) -> str:
    return signalling.event("interrupted" if isinstance(message, Interrupt) else "queued", **fields)


async def close_socket(ws: ServerConnection, code: int, reason: str, timeout: float = 5.0) -> None:
    """Close with ``code`` while discarding the messages the client still has queued: with reading
    paused on a full incoming queue the client's close frame would otherwise never be read."""
    closing = asyncio.ensure_future(ws.close(code, reason))
    try:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()
    except (ConnectionClosed, TimeoutError):
        pass
    await asyncio.wait([closing], timeout=timeout)


def make_response(status: int, body: bytes, content_type: str) -> Response:
    headers = Headers(
        [
            ("Date", email.utils.formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Length", str(len(body))),
            ("Content-Type", content_type),
            ("Cache-Control", "no-store"),
            ("X-Content-Type-Options", "nosniff"),
        ]
    )
    return Response(status, http.HTTPStatus(status).phrase, headers, body)


def json_response(value: object, status: int = 200) -> Response:
    return make_response(status, json.dumps(value).encode(), "application/json")


def text_response(status: int, text: str) -> Response:
    return make_response(status, text.encode(), "text/plain; charset=utf-8")


def _host(peer: str) -> str:
    """The client address of a ``host:port`` peer string (uploads belong to it)."""
    return peer.rsplit(":", 1)[0]


def _peer(ws: ServerConnection) -> str:
    address = ws.remote_address
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)
