"""Named channels: a socket without a session (a controller) makes speak-mode sessions on a channel talk.

Integration tests run the in-process server with the box test engine and aiortc clients standing in
for /overlay pages (speak mode, ``"channel"`` in the offer); controllers are plain WebSockets.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import numpy as np
import pytest
from aiortc import RTCSessionDescription
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from server import say_to_channel
from server.signalling import Interrupt, Offer, PushAudio, Say, SignallingError, parse_message
from tests.conftest import ROOT
from tests.media import vowel_bursts
from tests.test_server_speak import SpeakClient, _start_app

CHROMIUM = Path("/usr/bin/chromium")
SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
KEY = "k3y-for-the-stage_0123"
"""A channel key as an overlay URL carries it (``secrets.token_urlsafe(18)`` makes such keys)."""


# ------------------------------------------------------------------------------------ unit tests
def test_channel_is_parsed_on_offers_and_speech_messages() -> None:
    offer = parse_message(json.dumps({"type": "offer", "sdp": SDP, "mode": "speak", "channel": "stage-1",
                                      "key": KEY}))
    assert offer == Offer(sdp=SDP, mode="speak", channel="stage-1", key=KEY)
    assert parse_message(json.dumps({"type": "offer", "sdp": SDP, "channel": ""})).channel is None
    say = parse_message('{"type":"say","text":"hola","voice":"es","channel":"a_b","key":"k"}')
    assert say == Say("hola", "es", "a_b", "k")
    assert parse_message('{"type":"say","text":"hola"}').channel is None
    assert parse_message('{"type":"interrupt","channel":"stage","key":"k"}') == Interrupt("stage", "k")
    assert parse_message('{"type":"interrupt"}') == Interrupt()
    audio = parse_message('{"type":"audio","format":"wav","data":"AAA=","channel":"x","key":"k"}')
    assert audio == PushAudio("wav", "AAA=", None, "x", "k")


@pytest.mark.parametrize("channel", ["a b", "x" * 65, "ünï", "../x", 5, ["stage"], True])
def test_bad_channel_names_are_refused_in_one_line(channel) -> None:
    for message in [{"type": "say", "text": "hi"}, {"type": "interrupt"},
                    {"type": "offer", "sdp": SDP, "mode": "speak"}]:
        with pytest.raises(SignallingError, match=r"^invalid channel name \(use 1-64 letters"):
            parse_message(json.dumps({**message, "channel": channel, "key": KEY}))


def test_a_channel_needs_a_speak_mode_offer() -> None:
    with pytest.raises(SignallingError, match="'channel' needs a speak-mode session"):
        parse_message(json.dumps({"type": "offer", "sdp": SDP, "channel": "stage"}))


def test_the_cli_builds_say_audio_and_interrupt_requests(tmp_path) -> None:
    def request(*argv: str) -> dict:
        return say_to_channel.build_request(say_to_channel.parse_args(["--channel", "stage", "--key", KEY,
                                                                       *argv]))

    assert request("--text", "Hola", "--voice", "es") == {"type": "say", "text": "Hola", "voice": "es",
                                                          "channel": "stage", "key": KEY}
    wav = tmp_path / "clip.wav"
    wav.write_bytes(b"RIFF-not-really")
    audio = request("--wav", str(wav))
    assert audio["type"] == "audio" and audio["format"] == "wav"
    assert base64.b64decode(audio["data"]) == b"RIFF-not-really"
    assert request("--interrupt") == {"type": "interrupt", "channel": "stage", "key": KEY}
    with pytest.raises(SystemExit):  # exactly one action
        say_to_channel.parse_args(["--channel", "stage", "--key", KEY, "--text", "hi", "--interrupt"])
    with pytest.raises(SystemExit):  # the key is required
        say_to_channel.parse_args(["--channel", "stage", "--text", "hi"])


# ------------------------------------------------------------------------------ integration tests
class Overlay(SpeakClient):
    """An /overlay page stand-in: a speak-mode session whose offer names a channel."""

    async def join(self, ws, channel: str, key: str = KEY) -> dict:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        await ws.send(json.dumps({"type": "offer", "sdp": self.pc.localDescription.sdp, "mode": "speak",
                                  "channel": channel, "key": key}))
        reply = await self.reply(ws, "answer")
        assert reply["type"] == "answer", reply
        await self.pc.setRemoteDescription(RTCSessionDescription(reply["sdp"], "answer"))
        return reply


class Controller:
    """A socket without a session: requests with a ``channel``; events arriving meanwhile are kept."""

    def __init__(self, ws, key: str = KEY) -> None:
        self.ws = ws
        self.key = key
        self.events: list[dict] = []

    async def ask(self, message: dict) -> dict:
        """Send ``message`` (with this controller's key when it names a channel and has none); the reply."""
        if "channel" in message and "key" not in message:
            message = {**message, "key": self.key}
        await self.ws.send(json.dumps(message))
        return await self.next("queued", "interrupted", "error")

    async def next(self, *types: str, timeout: float = 15.0) -> dict:
        async with asyncio.timeout(timeout):
            while True:
                message = json.loads(await self.ws.recv())
                if message["type"] in types:
                    return message
                self.events.append(message)


def _pcm16(seconds: float) -> str:
    clip = vowel_bursts(seconds, 16000, lead_silence_s=0.0)
    return base64.b64encode((clip * 32767).astype("<i2").tobytes()).decode()


async def test_a_controller_makes_the_overlay_on_its_channel_speak(make_config, box_engine_factory):
    app = await _start_app(make_config, box_engine_factory)
    overlay = Overlay()
    try:
        async with connect(f"ws://127.0.0.1:{app.port}/ws") as page, \
                connect(f"ws://127.0.0.1:{app.port}/ws") as remote:
            answer = await overlay.join(page, "stage")
            session = next(iter(app.sessions))
            assert session.channel == "stage" and session.id == answer["session"]
            controller = Controller(remote)

            reply = await controller.ask({"type": "say", "text": "hola", "channel": "backstage"})
            assert reply == {"type": "error", "message": "no session on channel 'backstage'"}
            reply = await controller.ask({"type": "say", "text": "   ", "channel": "stage"})
            assert reply == {"type": "error", "message": "nothing to say: the text is empty"}
            assert session.speaker.listeners == {}  # refused requests do not subscribe

            reply = await controller.ask({"type": "say", "text": "Hola, ¿qué tal?", "voice": "es",
                                          "channel": "stage"})
            assert reply == {"type": "queued", "request": "say", "voice": "es", "channel": "stage",
                             "sessions": 1}
            # the overlay's own socket gets the events as before; the controller gets them tagged
            assert (await overlay.reply(page, "speaking_started")) == {"type": "speaking_started"}
            started = await controller.next("speaking_started")
            assert started == {"type": "speaking_started", "channel": "stage", "session": session.id}
            finished = await controller.next("speaking_finished")
            assert finished["interrupted"] is False and finished["session"] == session.id
            voice = np.concatenate([samples for _, samples in overlay.audio])
            assert np.abs(voice).max() > 2000, "the overlay's voice did not come back"

            # pushed audio, then an interrupt from the controller cuts it
            reply = await controller.ask({"type": "audio", "format": "pcm16", "sample_rate": 16000,
                                          "data": _pcm16(4.0), "channel": "stage"})
            assert reply["type"] == "queued" and reply["request"] == "audio" and reply["sessions"] == 1
            assert abs(reply["seconds"] - 4.0) < 0.01
            await controller.next("speaking_started")
            reply = await controller.ask({"type": "interrupt", "channel": "stage"})
            assert reply["type"] == "interrupted" and reply["channel"] == "stage" and reply["dropped_s"] > 1.0
            finished = await controller.next("speaking_finished")
            assert finished == {"type": "speaking_finished", "interrupted": True, "reason": "interrupt",
                                "channel": "stage", "session": session.id}
            assert session.speaker.state == "idle" and session.speaker.queue.queued_samples == 0

            # the overlay's own socket cannot use a channel; its session keeps working without one
            await page.send(json.dumps({"type": "interrupt", "channel": "stage", "key": KEY}))
            reply = await overlay.reply(page, "interrupted")
            assert reply["type"] == "error" and "has its own session" in reply["message"]
            assert session.speaker.listeners  # the controller listens ...
        for _ in range(100):
            if not session.speaker.listeners:
                break
            await asyncio.sleep(0.02)
        assert session.speaker.listeners == {}  # ... until its socket closes
    finally:
        await overlay.close()
        await app.stop()


async def test_several_overlays_share_a_channel_each_with_its_own_limits(make_config, box_engine_factory):
    app = await _start_app(make_config, box_engine_factory, **{"speech.max_requests": 1,
                                                             "server.max_sessions": 4})
    overlays = [Overlay() for _ in range(4)]
    try:
        async with connect(f"ws://127.0.0.1:{app.port}/ws") as a, \
                connect(f"ws://127.0.0.1:{app.port}/ws") as b, \
                connect(f"ws://127.0.0.1:{app.port}/ws") as c, \
                connect(f"ws://127.0.0.1:{app.port}/ws") as d, \
                connect(f"ws://127.0.0.1:{app.port}/ws") as remote:
            for overlay, ws, channel in zip(overlays, [a, b, c], ["stage", "stage", "lobby"], strict=False):
                await overlay.join(ws, channel)
            by_channel = {s.id: s.channel for s in app.sessions}
            controller = Controller(remote)
            clip = _pcm16(0.6)
            reply = await controller.ask({"type": "audio", "format": "pcm16", "sample_rate": 16000,
                                          "data": clip, "channel": "stage"})
            assert reply["type"] == "queued" and reply["sessions"] == 2 and "errors" not in reply
            targets = [s for s in app.sessions if s.speaker.active]
            assert sorted(s.channel for s in targets) == ["stage", "stage"]
            lobby = next(s for s in app.sessions if s.channel == "lobby")
            assert not lobby.speaker.active and lobby.speaker.listeners == {}
            for overlay, ws in zip(overlays[:2], [a, b], strict=True):
                assert (await overlay.reply(ws, "speaking_started"))["type"] == "speaking_started"
            sessions_started = {(await controller.next("speaking_started"))["session"] for _ in range(2)}
            assert sessions_started == {s.id for s in targets}

            # the rate limit is per target session: the two stage sessions are spent, a newcomer is not
            reply = await controller.ask({"type": "audio", "format": "pcm16", "sample_rate": 16000,
                                          "data": clip, "channel": "stage"})
            assert reply["type"] == "error" and "too many say/audio messages" in reply["message"]
            await overlays[3].join(d, "stage")
            reply = await controller.ask({"type": "audio", "format": "pcm16", "sample_rate": 16000,
                                          "data": clip, "channel": "stage"})
            assert reply["type"] == "queued" and reply["sessions"] == 1
            assert len(reply["errors"]) == 1 and "too many say/audio messages" in reply["errors"][0]
            assert by_channel == {s.id: s.channel for s in app.sessions if s.id in by_channel}
    finally:
        for overlay in overlays:
            await overlay.close()
        await app.stop()


async def test_controllers_need_the_token_and_the_cli_reaches_the_channel(make_config, box_engine_factory):
    app = await _start_app(make_config, box_engine_factory, **{"server.auth_token": "s3cret"})
    overlay = Overlay()
    url = f"ws://127.0.0.1:{app.port}/ws"
    try:
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url):
                pass
        assert refused.value.response.status_code == 401
        async with connect(url + "?token=s3cret") as page:
            await overlay.join(page, "stage")
            session = next(iter(app.sessions))
            code = await asyncio.to_thread(say_to_channel.main, [
                "--url", url, "--channel", "stage", "--key", KEY, "--text", "hola", "--voice", "es"])
            assert code == 1  # no token: the socket is refused
            code = await asyncio.to_thread(say_to_channel.main, [
                "--url", url, "--channel", "stage", "--key", KEY, "--text", "hola", "--voice", "es",
                "--token", "s3cret", "--wait", "--timeout", "15"])
            assert code == 0
            assert session.speaker.state == "idle"  # --wait returned after speaking_finished
            finished = await overlay.reply(page, "speaking_finished")  # the overlay saw it too
            assert finished["interrupted"] is False
            assert "speaking_started" in [e["type"] for e in overlay.events]
            code = await asyncio.to_thread(say_to_channel.main, [
                "--url", url, "--channel", "nobody", "--key", KEY, "--interrupt", "--token", "s3cret"])
            assert code == 1
    finally:
        await overlay.close()
        await app.stop()


# ---------------------------------------------------------------------------------- browser test
@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed")
async def test_the_overlay_page_joins_the_channel_named_in_its_url(make_config, box_engine_factory):
    from playwright.async_api import async_playwright

    app = await _start_app(make_config, box_engine_factory, **{"server.static_dir": str(ROOT / "static")})
    base = f"http://127.0.0.1:{app.port}"
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=str(CHROMIUM), args=[
                "--no-sandbox", "--disable-gpu", "--autoplay-policy=no-user-gesture-required"])
            page = await browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            await page.goto(base + f"/overlay?channel=stage&key={KEY}&bg=green")
            await page.wait_for_function("document.body.dataset.state === 'live'", timeout=20_000)
            assert [s.channel for s in app.sessions] == ["stage"]
            async with connect(f"ws://127.0.0.1:{app.port}/ws") as remote:
                controller = Controller(remote)
                reply = await controller.ask({"type": "say", "text": "hola", "channel": "stage"})
                assert reply["type"] == "queued" and reply["sessions"] == 1, reply
                assert (await controller.next("speaking_started"))["channel"] == "stage"

            await page.goto(base + f"/overlay?channel=not%20valid&key={KEY}")  # ignored: joins no channel
            await page.wait_for_function("document.body.dataset.state === 'live'", timeout=20_000)
            assert await page.evaluate("document.body.dataset.channel") == ""
            for _ in range(100):  # the first page's session ends when it navigates away
                if len(app.sessions) == 1:
                    break
                await asyncio.sleep(0.05)
            assert [s.channel for s in app.sessions] == [None]
            assert errors == []
            await browser.close()
    finally:
        await app.stop()
