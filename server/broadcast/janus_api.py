"""A small client for Janus's HTTP API (https://janus.conf.meetecho.com/docs/rest.html).

One ``JanusSession`` is one Janus session: ``create``, ``attach`` plugin handles, send plugin messages
(``request`` waits for the plugin's reply: synchronous ones come back at once, asynchronous ones as an
event with the same transaction, fetched by a long poll), keepalives every ``KEEPALIVE_S`` and ``destroy``.
HTTP calls are blocking ``urllib`` calls, each in a daemon thread of its own (``in_thread``): the event
loop never waits on the network, the default executor is not tied up by 30 s long polls, and a process
that exits does not wait for them.
Failures raise ``JanusError`` with one line saying what went wrong.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from avatar.errors import AvatarError

log = logging.getLogger("server.broadcast.janus")

HTTP_TIMEOUT_S = 10.0
LONG_POLL_S = 35.0
"""Janus answers a long poll after 30 s without events (a keepalive); give it a little more."""
KEEPALIVE_S = 25.0
"""Janus drops sessions silent for ``session_timeout`` (60 s by default)."""
REPLY_TIMEOUT_S = 15.0


class JanusError(AvatarError):
    """Janus could not be reached or refused a request; the text is one line."""


EventHandler = Callable[[dict], None]


class JanusSession:
    """``await JanusSession(url).create()``, then ``attach``/``request``; ``await close()`` at the end."""

    def __init__(self, url: str, api_secret: str = "") -> None:
        self.url = url.rstrip("/")
        self.api_secret = api_secret
        self.id: int | None = None
        self._pending: dict[str, asyncio.Future] = {}
        self._handlers: dict[int, EventHandler] = {}
        self._tasks: list[asyncio.Task] = []
        self._closed = False

    # ------------------------------------------------------------------------------------- HTTP
    def _post_blocking(self, path: str, body: dict, timeout: float) -> dict:
        data = json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data,
                                         headers={"Content-Type": "application/json"})
        return self._open(request, timeout)

    def _open(self, request: urllib.request.Request, timeout: float) -> Any:
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise JanusError(f"Janus at {self.url} answered HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise JanusError(f"cannot reach Janus at {self.url}: {reason}") from None
        except ValueError:
            raise JanusError(f"Janus at {self.url} did not answer JSON (is it Janus's HTTP API URL?)") \
                from None

    async def _post(self, path: str, body: dict, timeout: float = HTTP_TIMEOUT_S) -> dict:
        transaction = body.setdefault("transaction", secrets.token_hex(6))
        if self.api_secret:
            body["apisecret"] = self.api_secret
        reply = await in_thread(self._post_blocking, path, body, timeout)
        if not isinstance(reply, dict) or reply.get("transaction") != transaction:
            raise JanusError(f"Janus at {self.url} answered something unexpected")
        if reply.get("janus") == "error":
            error = reply.get("error") or {}
            raise JanusError(f"Janus refused {body.get('janus')}: {error.get('reason', 'unknown error')} "
                             f"(code {error.get('code')})")
        return reply

    # -------------------------------------------------------------------------------- lifecycle
    async def create(self) -> JanusSession:
        reply = await self._post("", {"janus": "create"})
        self.id = int(reply["data"]["id"])
        self._tasks = [asyncio.ensure_future(self._poll()), asyncio.ensure_future(self._keepalive())]
        return self

    async def attach(self, plugin: str, on_event: EventHandler | None = None) -> int:
        """A handle on ``plugin`` (e.g. ``janus.plugin.videoroom``); ``on_event`` gets its events that
        answer no request (webrtcup, media, hangup, slowlink, plugin events of other participants)."""
        reply = await self._post(f"/{self.id}", {"janus": "attach", "plugin": plugin})
        handle = int(reply["data"]["id"])
        if on_event is not None:
            self._handlers[handle] = on_event
        return handle

    async def request(self, handle: int, body: dict, jsep: dict | None = None,
                      timeout: float = REPLY_TIMEOUT_S) -> tuple[dict, dict | None]:
        """Send a plugin message; returns (the plugin's data, its jsep or None). A plugin error
        (``error_code`` in the data) raises ``JanusError``."""
        transaction = secrets.token_hex(6)
        future = asyncio.get_running_loop().create_future()
        self._pending[transaction] = future
        message: dict[str, Any] = {"janus": "message", "transaction": transaction, "body": body}
        if jsep is not None:
            message["jsep"] = jsep
        try:
            reply = await self._post(f"/{self.id}/{handle}", message)
            if reply.get("janus") != "ack":  # a synchronous request: the answer is the reply
                event = reply
            else:
                try:
                    event = await asyncio.wait_for(future, timeout)
                except TimeoutError:
                    raise JanusError(f"Janus did not answer {body.get('request')} within {timeout:g} s") \
                        from None
        finally:
            self._pending.pop(transaction, None)
        data = (event.get("plugindata") or {}).get("data") or {}
        if "error_code" in data or "error" in data:
            raise JanusError(f"Janus {body.get('request')} failed: {data.get('error', 'unknown error')} "
                             f"(code {data.get('error_code')})")
        return data, event.get("jsep")

    async def detach(self, handle: int) -> None:
        self._handlers.pop(handle, None)
        await self._post(f"/{self.id}/{handle}", {"janus": "detach"})

    async def close(self) -> None:
        """Destroy the Janus session (its handles hang up); quiet when Janus is gone."""
        if self._closed:
            return
        self._closed = True
        for task in self._tasks:
            task.cancel()
        if self.id is not None:
            try:
                await self._post(f"/{self.id}", {"janus": "destroy"}, timeout=3.0)
            except JanusError as exc:
                log.info("janus session %s not destroyed: %s", self.id, exc)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(JanusError("the Janus session was closed"))

    # ----------------------------------------------------------------------------------- events
    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(KEEPALIVE_S)
            try:
                await self._post(f"/{self.id}", {"janus": "keepalive"})
            except JanusError as exc:
                log.warning("janus keepalive failed: %s", exc)

    def _poll_blocking(self) -> Any:
        query = f"?maxev=10&rid={secrets.token_hex(4)}"
        if self.api_secret:
            query += "&apisecret=" + urllib.request.quote(self.api_secret)
        return self._open(urllib.request.Request(f"{self.url}/{self.id}{query}"), LONG_POLL_S)

    async def _poll(self) -> None:
        failures = 0
        while True:
            try:
                events = await in_thread(self._poll_blocking)
                failures = 0
            except JanusError as exc:
                failures += 1
                for future in self._pending.values():
                    if not future.done():
                        future.set_exception(exc)
                if failures >= 3:
                    log.warning("janus long poll stopped: %s", exc)
                    for handler in list(self._handlers.values()):
                        handler({"janus": "hangup", "reason": str(exc)})
                    return
                await asyncio.sleep(1.0)
                continue
            for event in events if isinstance(events, list) else [events]:
                self._dispatch(event)

    def _dispatch(self, event: Any) -> None:
        if not isinstance(event, dict):
            return
        future = self._pending.get(str(event.get("transaction")))
        if future is not None and not future.done() and event.get("janus") in ("event", "success", "error"):
            if event.get("janus") == "error":
                reason = (event.get("error") or {}).get("reason", "unknown error")
                future.set_exception(JanusError(f"Janus refused the request: {reason}"))
            else:
                future.set_result(event)
            return
        handler = self._handlers.get(event.get("sender"))
        if handler is not None:
            try:
                handler(event)
            except Exception:
                log.exception("janus event handler failed")


async def in_thread(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` in a new daemon thread; its result or exception, awaited on the loop."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def deliver(outcome: Any, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(outcome)

    def work() -> None:
        try:
            outcome, error = function(*args), None
        except BaseException as exc:  # handed to the awaiting coroutine
            outcome, error = None, exc
        try:
            loop.call_soon_threadsafe(deliver, outcome, error)
        except RuntimeError:  # the loop closed meanwhile: nobody is waiting
            pass

    threading.Thread(target=work, name="janus-http", daemon=True).start()
    return await future
