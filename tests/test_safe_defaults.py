"""Safe by default (issue 16): browser origins, channel keys, pushed audio checked and rate-limited before
it is decoded (once per channel message), and ``/avatars`` served without rescanning the folder.

Every hostile case gets a clear one-line refusal and the server stays healthy (a real session still
streams afterwards)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed

import server.speech_requests as speech_requests
from server.app import App
from server.auth import origin_refusal
from server.avatars import AvatarRegistry
from server.signalling import SignallingError
from server.speech_input import RateLimiter
from tests.conftest import ROOT
from tests.media import ASTRONAUT, vowel_bursts
from tests.test_hostile_input import ask, assert_one_line_error, assert_serves_a_real_session
from tests.test_server_channels import KEY, Controller, Overlay
from tests.test_server_operations import parse_metrics
from tests.test_server_speak import SpeakClient

CHROMIUM = Path("/usr/bin/chromium")
OTHER_KEY = "another-overlays-key_987"


def _headers(origin: str | None, host: str | None) -> Headers:
    headers = Headers()
    if origin is not None:
        headers["Origin"] = origin
    if host is not None:
        headers["Host"] = host
    return headers


def _pcm16(seconds: float) -> str:
    clip = vowel_bursts(seconds, 16000, lead_silence_s=0.0)
    return base64.b64encode((clip * 32767).astype("<i2").tobytes()).decode()


@pytest.fixture
def decodes(monkeypatch) -> list[int]:
    """Counts calls of the pushed-audio decoder (one entry per decoded clip, its base64 length)."""
    calls: list[int] = []
    real = speech_requests.decode_pushed_audio

    def counting(fmt, data, *args):
        calls.append(len(data))
        return real(fmt, data, *args)

    monkeypatch.setattr(speech_requests, "decode_pushed_audio", counting)
    return calls


async def _app(make_config, box_engine_factory, **overrides) -> App:
    config = make_config(**{"engine.size": 128, "provenance.watermark": False, "server.max_sessions": 3,
                            **overrides})
    app = App(config, box_engine_factory(size=128))
    await app.start(host="127.0.0.1", port=0)
    return app


# ------------------------------------------------------------------------------------------ origins
@pytest.mark.parametrize(("origin", "host", "bound", "allowed"), [
    (None, "127.0.0.1:8080", "127.0.0.1", True),  # python clients, curl: no Origin
    ("http://127.0.0.1:8080", "127.0.0.1:8080", "127.0.0.1", True),
    ("https://127.0.0.1:8080", "127.0.0.1:8080", "127.0.0.1", True),  # scheme-agnostic
    ("http://localhost:8080", "localhost:8080", "127.0.0.1", True),
    ("http://[::1]:8080", "[::1]:8080", "::1", True),
    ("http://LOCALHOST:8080/", "localhost:8080", "127.0.0.1", True),
    ("http://avatar.lan", "avatar.lan:80", "0.0.0.0", True),  # default ports on either side
    ("https://avatar.lan:443", "avatar.lan", "0.0.0.0", True),
    ("http://evil.example", "127.0.0.1:8080", "127.0.0.1", False),  # cross-site hijacking
    ("http://localhost:8080", "127.0.0.1:8080", "127.0.0.1", False),  # exact host, no aliasing
    ("http://127.0.0.1:9999", "127.0.0.1:8080", "127.0.0.1", False),  # another port is another origin
    ("null", "127.0.0.1:8080", "127.0.0.1", False),  # sandboxed frames, file:// pages
    ("http://127.0.0.1:8080", None, "127.0.0.1", False),
    ("http://evil.example:8080", "evil.example:8080", "127.0.0.1", False),  # DNS rebinding to loopback
    ("http://avatar.lan:8080", "avatar.lan:8080", "0.0.0.0", True),  # a LAN server under its name
])
def test_default_is_same_origin(origin, host, bound, allowed) -> None:
    refusal = origin_refusal([], _headers(origin, host), bound)
    assert (refusal is None) == allowed, refusal
    if refusal is not None:
        assert "\n" not in refusal and len(refusal) < 300 and "server.allowed_origins" in refusal


def test_a_listed_origin_or_star_replaces_same_origin() -> None:
    listed = ["https://Avatar.Example.org/"]
    assert origin_refusal(listed, _headers("https://avatar.example.org", "127.0.0.1:8080")) is None
    refusal = origin_refusal(listed, _headers("http://127.0.0.1:8080", "127.0.0.1:8080"))
    assert refusal is not None and "not in server.allowed_origins" in refusal  # the list rules
    assert origin_refusal(listed, _headers(None, "127.0.0.1:8080")) is None
    assert origin_refusal(["*"], _headers("http://evil.example", "127.0.0.1:8080"), "127.0.0.1") is None


async def _refused_socket(url: str, origin: str) -> tuple[dict, int | None]:
    async with connect(url, origin=origin) as ws:
        reply = json.loads(await ws.recv())
        with pytest.raises(ConnectionClosed):
            await ws.recv()
        return reply, ws.close_code


async def test_foreign_origins_are_refused_same_origin_and_no_origin_served(
        make_config, box_engine_factory, http_get):
    app = await _app(make_config, box_engine_factory)
    url = f"ws://127.0.0.1:{app.port}/ws"
    try:
        for origin in ["http://evil.example", f"http://localhost:{app.port}", "null"]:
            reply, code = await _refused_socket(url, origin)
            assert_one_line_error(reply, "may not open this socket", origin)
            assert code == 1008
        async with connect(url, origin=f"http://127.0.0.1:{app.port}") as ws:  # the server's own pages
            assert await ask(ws, {"type": "ping"}) == {"type": "pong"}
        async with connect(url) as ws:  # non-browser clients send no Origin
            assert await ask(ws, {"type": "ping"}) == {"type": "pong"}
        status, _, body = await http_get(app.port, "/metrics")
        assert status == 200 and parse_metrics(body.decode())["avatar_connections_refused_total"] == 3
        assert not app.sessions  # nothing started by the refused sockets
        await assert_serves_a_real_session(app, http_get)
    finally:
        await app.stop()


async def test_listed_origins_rule_when_configured(make_config, box_engine_factory, http_get):
    app = await _app(make_config, box_engine_factory,
                     **{"server.allowed_origins": ["https://studio.example"]})
    url = f"ws://127.0.0.1:{app.port}/ws"
    try:
        async with connect(url, origin="https://studio.example") as ws:
            assert await ask(ws, {"type": "ping"}) == {"type": "pong"}
        reply, code = await _refused_socket(url, "https://evil.example")
        assert_one_line_error(reply, "not in server.allowed_origins", "evil")
        assert code == 1008
    finally:
        await app.stop()
    app = await _app(make_config, box_engine_factory, **{"server.allowed_origins": ["*"]})
    try:
        async with connect(f"ws://127.0.0.1:{app.port}/ws", origin="https://anyone.example") as ws:
            assert await ask(ws, {"type": "ping"}) == {"type": "pong"}
    finally:
        await app.stop()


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed")
async def test_chromium_pages_see_why_the_socket_was_refused(make_config, box_engine_factory):
    """A page of another local web app (another port: another origin) trying to hijack the socket gets the
    refusal and 1008, not an answer; our own overlay, opened from an origin the config does not list,
    shows the reason in one line. (A public page, e.g. http://evil.example, is already stopped by
    Chromium's Local Network Access check before the handshake,
    net::ERR_BLOCKED_BY_LOCAL_NETWORK_ACCESS_CHECKS, unless the user allows it; not every browser has it.)"""
    from playwright.async_api import async_playwright

    static = {"server.static_dir": str(ROOT / "static")}
    app = await _app(make_config, box_engine_factory, **static)
    other = await _app(make_config, box_engine_factory, **static,
                       **{"server.allowed_origins": ["https://obs.example"]})
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                       args=["--no-sandbox", "--disable-gpu"])
            page = await browser.new_page()
            await page.goto(f"http://127.0.0.1:{other.port}/")
            seen = await page.evaluate("""(url) => new Promise((resolve) => {
                const ws = new WebSocket(url);
                const got = {opened: false, messages: []};
                ws.onopen = () => { got.opened = true; ws.send('{"type":"list_avatars"}'); };
                ws.onmessage = (event) => got.messages.push(JSON.parse(event.data));
                ws.onclose = (event) => resolve({...got, code: event.code, reason: event.reason});
            })""", f"ws://127.0.0.1:{app.port}/ws")
            assert seen["code"] == 1008 and seen["reason"] == "origin not allowed", seen
            assert [m["type"] for m in seen["messages"]] == ["error"], seen  # list_avatars not answered
            expected = f"origin http://127.0.0.1:{other.port} may not open this socket"
            assert seen["messages"][0]["message"].startswith(expected), seen

            # our overlay, served by a server whose list does not include its own origin, says why
            await page.goto(f"http://127.0.0.1:{other.port}/overlay?bg=green")
            await page.wait_for_selector("#notice:not([hidden])", timeout=15_000)
            notice = await page.inner_text("#notice")
            assert notice == (f"avatar server: origin http://127.0.0.1:{other.port} may not open this "
                              "socket: it is not in server.allowed_origins"), notice
            assert not other.sessions

            # an overlay URL with a channel but no key says so and joins no channel
            await page.goto(f"http://127.0.0.1:{app.port}/overlay?channel=stage&bg=green")
            await page.wait_for_function("document.body.dataset.state === 'live'", timeout=20_000)
            assert await page.inner_text("#notice") == (
                "overlay: channel stage needs key=SECRET in the URL (16-128 letters, digits, '_' or '-'); "
                "joined no channel")
            assert await page.evaluate("document.body.dataset.channel") == ""
            assert [s.channel for s in app.sessions] == [None]
            await browser.close()
    finally:
        await other.stop()
        await app.stop()


# ------------------------------------------------------------------------------------- channel keys
async def test_channels_need_their_key(make_config, box_engine_factory, http_get):
    app = await _app(make_config, box_engine_factory, **{"server.auth_token": "t0ken"})
    url = f"ws://127.0.0.1:{app.port}/ws?token=t0ken"
    mine, theirs = Overlay(), Overlay()
    try:
        async with connect(url) as page, connect(url) as page2, connect(url) as remote:
            for key, expected in [(None, "a 'channel' needs a secret 'key'"),
                                  ("short", "invalid channel key: use 16-128 letters"),
                                  ("x" * 20 + "!", "invalid channel key")]:
                await page.send(json.dumps({"type": "offer", "sdp": "v=0\r\nm=video 9 x\r\n", "mode": "speak",
                                            "channel": "stage", **({"key": key} if key else {})}))
                assert_one_line_error(json.loads(await page.recv()), expected, key)
            await mine.join(page, "stage", KEY)
            await theirs.join(page2, "stage", OTHER_KEY)  # same name, another key: a separate audience
            controller = Controller(remote)
            for message, expected in [
                ({"type": "say", "text": "hola", "channel": "stage", "key": ""}, "needs its 'key'"),
                ({"type": "interrupt", "channel": "stage", "key": "guess-guess"}, "wrong key for channel"),
                ({"type": "say", "text": "hola", "channel": "stage", "key": 5}, "must be a string"),
                ({"type": "say", "text": "hola", "channel": "stage", "key": "k" * 600}, "at most 512"),
                ({"type": "say", "text": "hola", "channel": "lobby", "key": KEY}, "no session on channel"),
            ]:
                assert_one_line_error(await controller.ask(message), expected, message)
            await remote.send(json.dumps({"type": "say", "text": "hola", "channel": "stage"}))  # no key
            assert_one_line_error(json.loads(await remote.recv()), "needs its 'key'", "no key")
            assert all(not s.speaker.active and not s.speaker.listeners for s in app.sessions)

            reply = await controller.ask({"type": "say", "text": "hola", "channel": "stage", "key": KEY})
            assert reply["type"] == "queued" and reply["sessions"] == 1, reply
            spoke = [s.channel_key for s in app.sessions if s.speaker.active]
            assert spoke == [KEY]  # the other overlay's key was not used
            reply = await controller.ask({"type": "interrupt", "channel": "stage", "key": "t0ken"})
            assert reply["type"] == "interrupted" and reply["sessions"] == 2  # the server token opens all
        await assert_serves_a_real_session_with_token(app, http_get)
    finally:
        await mine.close()
        await theirs.close()
        await app.stop()


async def assert_serves_a_real_session_with_token(app, http_get) -> None:
    status, _, body = await http_get(app.port, "/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
    client = SpeakClient()
    try:
        async with connect(f"ws://127.0.0.1:{app.port}/ws?token=t0ken") as ws:
            assert (await client.connect(ws))["type"] == "answer"
            for _ in range(200):
                if len(client.video) >= 5:
                    break
                await asyncio.sleep(0.05)
            assert len(client.video) >= 5, "the new session sent no video"
    finally:
        await client.close()


# ------------------------------------------------------------------------------------- pushed audio
async def test_oversized_and_flooded_audio_is_refused_before_decoding(
        make_config, box_engine_factory, http_get, decodes):
    app = await _app(make_config, box_engine_factory, **{
        "speech.max_audio_bytes": 100_000, "speech.max_audio_seconds": 2.0, "speech.max_requests": 3})
    client = SpeakClient()
    try:
        async with connect(f"ws://127.0.0.1:{app.port}/ws") as ws:
            await client.connect(ws)

            async def push(data: str, fmt: str = "pcm16") -> dict:
                message = {"type": "audio", "format": fmt, "data": data, "sample_rate": 16000}
                return await client.request(ws, message, "queued")

            too_large = "audio too large: 0.15 MB decoded (at most 0.1 MB)"
            assert_one_line_error(await push("A" * 200_000), too_large, "big")
            assert_one_line_error(await push("A" * 200_000, "wav"), "audio too large", "big wav")
            assert_one_line_error(await push(_pcm16(2.5)), "audio too long: 2.5 s", "long pcm16")
            assert decodes == [], "refused clips were decoded"

            bad = await push(base64.b64encode(b"RIFF-no-wave-here" * 10).decode(), "wav")
            assert_one_line_error(bad, "not a readable PCM WAV", "bad wav")
            assert len(decodes) == 1  # decoded (it passed the cheap checks), refused, not counted

            clip = _pcm16(0.3)
            replies = [await push(clip) for _ in range(8)]  # a flood: 3 per 10 s are taken
            assert [r["type"] for r in replies] == ["queued"] * 3 + ["error"] * 5, replies
            for reply in replies[3:]:
                assert_one_line_error(reply, "too many say/audio messages: at most 3 per 10 s", "flood")
            assert len(decodes) == 1 + 3, "refused clips were decoded"
            assert (await client.request(ws, {"type": "ping"}, "pong"))["type"] == "pong"
        await assert_serves_a_real_session(app, http_get)
    finally:
        await client.close()
        await app.stop()


def test_a_refunded_request_does_not_count(fake_clock) -> None:
    limiter = RateLimiter(2, 10.0, fake_clock)
    stamp = limiter.check()
    limiter.refund(stamp)  # e.g. the clip did not decode
    fake_clock.advance(1.0)
    limiter.check()
    limiter.check()
    with pytest.raises(SignallingError, match="at most 2 per 10 s"):
        limiter.check()
    limiter.refund(12345.0)  # unknown stamps are ignored


async def test_a_channel_message_is_decoded_once_for_all_its_overlays(make_config, box_engine_factory,
                                                                      decodes):
    app = await _app(make_config, box_engine_factory)
    overlays = [Overlay(), Overlay(), Overlay()]
    url = f"ws://127.0.0.1:{app.port}/ws"
    try:
        async with connect(url) as a, connect(url) as b, connect(url) as c, connect(url) as remote:
            for overlay, ws in zip(overlays, [a, b, c], strict=True):
                await overlay.join(ws, "stage")
            controller = Controller(remote)
            reply = await controller.ask({"type": "audio", "format": "pcm16", "sample_rate": 16000,
                                          "data": _pcm16(0.5), "channel": "stage"})
            assert reply["type"] == "queued" and reply["sessions"] == 3, reply
            assert len(decodes) == 1
            queued = [s.speaker.queue.queued_samples + s.speaker.pending for s in app.sessions]
            assert all(q > 0 for q in queued), queued
    finally:
        for overlay in overlays:
            await overlay.close()
        await app.stop()


# ---------------------------------------------------------------------------------------- /avatars
def test_avatars_are_listed_without_rescanning_the_folder(tmp_path, box_engine_factory) -> None:
    folder = tmp_path / "avatars"
    folder.mkdir()
    shutil.copy(ASTRONAUT, folder / "alice.png")
    past = time.time() - 60
    os.utime(folder, (past, past))  # settled: not modified within the last RACY_S seconds
    registry = AvatarRegistry(box_engine_factory(), ASTRONAUT, folder)
    for _ in range(50):
        assert [e["id"] for e in registry.public_list()] == ["astronaut", "alice"]
    assert registry.scans == 1
    shutil.copy(ASTRONAUT, folder / "bob.png")  # the folder's mtime moves: listed again
    os.utime(folder, (past + 1, past + 1))
    assert [e["id"] for e in registry.public_list()] == ["astronaut", "alice", "bob"]
    assert registry.find("bob").id == "bob" and registry.scans == 2
    (folder / "bob.png").unlink()
    os.utime(folder, (past + 2, past + 2))
    assert [e["id"] for e in registry.public_list()] == ["astronaut", "alice"] and registry.scans == 3


def test_a_folder_changed_just_now_is_not_trusted_to_stay_listed(tmp_path, box_engine_factory) -> None:
    folder = tmp_path / "avatars"
    folder.mkdir()
    registry = AvatarRegistry(box_engine_factory(), ASTRONAUT, folder)
    assert [e["id"] for e in registry.public_list()] == ["astronaut"]
    shutil.copy(ASTRONAUT, folder / "carol.png")  # may land within the same mtime tick as the scan
    assert [e["id"] for e in registry.public_list()] == ["astronaut", "carol"]
    assert registry.scans == 2
