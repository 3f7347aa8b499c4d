"""Speak mode: say / audio / interrupt messages, speaking events, barge-in and the avatar's voice track.

Unit tests cover decoding, limits and the queue; the integration tests run the in-process server
with the box test engine (its dark box follows each frame's audio RMS) and an aiortc client.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
import wave

import numpy as np
import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from websockets.asyncio.client import connect

from avatar.engine import SAMPLE_RATE
from server.app import App
from server.signalling import PushAudio, Say, SignallingError, parse_message
from server.speech_input import RateLimiter, SpeechQueue, decode_pushed_audio, resolve_voice
from tests.media import vowel_bursts
from tests.paced_audio import PacedAudioTrack

SIZE = 256


# ------------------------------------------------------------------------------------ unit tests
def _wav_b64(audio: np.ndarray, rate: int, channels: int = 1, width: int = 2) -> str:
    pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
    if channels > 1:
        pcm = np.repeat(pcm[:, None], channels, axis=1)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes() if width == 2 else (pcm.astype(np.int32) << 16).tobytes())
    return base64.b64encode(buffer.getvalue()).decode()


def _tone(seconds: float, rate: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_wav_is_decoded_to_16k_mono_at_the_right_pitch() -> None:
    out = decode_pushed_audio("wav", _wav_b64(_tone(1.0, 44100), 44100, channels=2), None, 30, 2_000_000)
    assert out.dtype == np.float32 and abs(out.size - SAMPLE_RATE) <= 2
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) * SAMPLE_RATE / out.size - 440) < 3
    assert 0.4 < np.abs(out).max() < 0.6


def test_pcm16_is_decoded_from_its_sample_rate() -> None:
    pcm = (_tone(0.5, 8000, 300) * 32767).astype("<i2").tobytes()
    out = decode_pushed_audio("pcm16", base64.b64encode(pcm).decode(), 8000, 30, 2_000_000)
    assert abs(out.size - 8000) <= 2
    assert abs(np.argmax(np.abs(np.fft.rfft(out))) * SAMPLE_RATE / out.size - 300) < 3


@pytest.mark.parametrize(
    ("fmt", "data", "rate", "expected"),
    [
        ("pcm16", "not base64!!", 16000, "not valid base64"),
        ("wav", base64.b64encode(b"RIFF1234WAVEjunk").decode(), None, "not a readable PCM WAV"),
        ("pcm16", base64.b64encode(b"\x00\x01\x02").decode(), 16000, "even number of bytes"),
        ("pcm16", base64.b64encode(b"\x00\x01" * 100).decode(), 4000, "sample rate must be 8000..48000"),
        ("pcm16", base64.b64encode(b"\x00\x01" * 100).decode(), 96000, "sample rate must be 8000..48000"),
        ("pcm16", base64.b64encode(b"\x00\x01" * 20000).decode(), 8000, "audio too long: 2.5 s"),
        ("pcm16", "A" * 4_000_000, 16000, "audio too large"),
    ],
)
def test_bad_pushed_audio_gets_a_one_line_reason(fmt, data, rate, expected) -> None:
    with pytest.raises(SignallingError, match=expected) as caught:
        decode_pushed_audio(fmt, data, rate, 2.0, 2_000_000)
    assert "\n" not in str(caught.value)


def test_audio_and_say_messages_are_parsed_and_checked() -> None:
    assert parse_message('{"type":"say","text":"hola","voice":"es"}') == Say("hola", "es")
    assert parse_message('{"type":"say","text":"hi"}') == Say("hi", "en")
    msg = parse_message('{"type":"audio","format":"pcm16","sample_rate":8000,"data":"AAA="}')
    assert msg == PushAudio("pcm16", "AAA=", 8000)
    for raw, expected in [
        ('{"type":"audio","format":"mp3","data":"AAA="}', "must be 'wav' or 'pcm16'"),
        ('{"type":"audio","format":"pcm16","data":"AAA="}', "needs a 'sample_rate'"),
        ('{"type":"audio","format":"pcm16","sample_rate":"8k","data":"AAA="}', "whole number"),
        ('{"type":"audio","format":"wav"}', "needs base64 'data'"),
        ('{"type":"say"}', "needs a 'text' string"),
        ('{"type":"say","text":"x","voice":5}', "language code"),
        ('{"type":"offer","sdp":"v=0\\nm=video 9","mode":"karaoke"}', "'mirror' or 'speak'"),
    ]:
        with pytest.raises(SignallingError, match=expected):
            parse_message(raw)


def test_rate_limiter_allows_a_burst_then_refuses_until_the_window_passes(fake_clock) -> None:
    limiter = RateLimiter(3, 10.0, fake_clock)
    for _ in range(3):
        limiter.check()
    with pytest.raises(SignallingError, match="at most 3 per 10 s"):
        limiter.check()
    fake_clock.advance(10.1)
    limiter.check()


def test_speech_queue_hands_out_speech_then_silence() -> None:
    queue = SpeechQueue()
    queue.add(np.full(500, 0.5, np.float32))
    queue.add(np.full(300, -0.5, np.float32))
    chunk, speech = queue.take(600)
    assert speech == 600 and chunk[499] == 0.5 and chunk[500] == -0.5
    chunk, speech = queue.take(600)
    assert speech == 200 and np.all(chunk[200:] == 0) and queue.queued_samples == 0
    queue.add(np.ones(100, np.float32))
    assert queue.clear() == 100 and queue.take(10)[1] == 0


def test_voice_codes_resolve_case_insensitively() -> None:
    assert resolve_voice("es", ["es", "en-us"]) == "es"
    assert resolve_voice("EN-US", ["es", "en-us"]) == "en-us"
    with pytest.raises(SignallingError, match="unknown voice 'klingon'"):
        resolve_voice("klingon", ["es", "en-us"])


# ------------------------------------------------------------------------------ integration tests
class SpeakClient:
    """aiortc client: optional microphone, receives video + the avatar's voice with arrival times."""

    def __init__(self, mic: np.ndarray | None = None) -> None:
        self.pc = RTCPeerConnection()
        self.video: list[tuple[float, np.ndarray]] = []
        self.audio: list[tuple[float, np.ndarray]] = []
        self.events: list[dict] = []
        self.tasks: list[asyncio.Task] = []
        if mic is not None:
            self.pc.addTrack(PacedAudioTrack(mic))
        else:
            self.pc.addTransceiver("audio", direction="recvonly")
        self.pc.addTransceiver("video", direction="recvonly")
        self.pc.on("track", lambda track: self.tasks.append(asyncio.ensure_future(self._read(track))))

    async def _read(self, track) -> None:
        try:
            while True:
                frame = await track.recv()
                now = time.monotonic()
                if track.kind == "video":
                    self.video.append((now, frame.to_ndarray(format="rgb24")))
                else:
                    self.audio.append((now, frame.to_ndarray().reshape(-1)))
        except MediaStreamError:
            pass

    async def connect(self, ws, mode: str = "speak") -> dict:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        await ws.send(json.dumps({"type": "offer", "sdp": self.pc.localDescription.sdp, "mode": mode}))
        reply = await self.reply(ws, "answer")
        await self.pc.setRemoteDescription(RTCSessionDescription(reply["sdp"], "answer"))
        return reply

    async def reply(self, ws, *types: str, timeout: float = 20.0) -> dict:
        """The next message of one of ``types`` (or an error); events on the way are recorded."""
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(await asyncio.wait_for(ws.recv(), max(0.01, deadline - time.monotonic())))
            if message["type"] in types or message["type"] == "error":
                return message
            self.events.append(message)

    async def request(self, ws, message: dict, *types: str) -> dict:
        await ws.send(json.dumps(message))
        return await self.reply(ws, *types)

    async def close(self) -> None:
        await self.pc.close()
        for task in self.tasks:
            task.cancel()


class ShownLog:
    """Records (server time, frame index, rms) of every engine frame the video track sends."""

    def __init__(self, session) -> None:
        self.items: list[tuple[float, int, float]] = []
        previous = session.video.on_shown

        def on_shown(frame, sent_at) -> None:
            self.items.append((sent_at, frame.index, float(frame.info.get("rms", 0.0))))
            if previous is not None:
                previous(frame, sent_at)

        session.video.on_shown = on_shown


def _mouth_darkness(image: np.ndarray) -> float:
    """Share of dark pixels in the box engine's mouth region (grows with audio loudness)."""
    region = image[int(SIZE * 0.5) : int(SIZE * 0.9), SIZE // 2 - SIZE // 10 : SIZE // 2 + SIZE // 10]
    return float((region.mean(axis=2) < 30).mean())


async def _start_app(make_config, box_engine_factory, **overrides) -> App:
    config = make_config(**{"engine.size": SIZE, "provenance.watermark": False, **overrides})
    app = App(config, box_engine_factory(fps=25, size=SIZE))
    await app.start(host="127.0.0.1", port=0)
    return app


async def test_speech_messages_need_a_session_and_leave_the_socket_usable(make_config, box_engine_factory):
    app = await _start_app(make_config, box_engine_factory)
    try:
        async with connect(f"ws://127.0.0.1:{app.port}/ws") as ws:
            for message in [{"type": "say", "text": "hola", "voice": "es"}, {"type": "interrupt"},
                            {"type": "audio", "format": "pcm16", "sample_rate": 16000, "data": "AAAA"}]:
                await ws.send(json.dumps(message))
                reply = json.loads(await ws.recv())
                assert reply == {"type": "error", "message": "start a session first: send an offer"}
            await ws.send('{"type":"audio","format":"ogg","data":"AAAA"}')
            assert "must be 'wav' or 'pcm16'" in json.loads(await ws.recv())["message"]
            await ws.send('{"type":"ping"}')
            assert json.loads(await ws.recv()) == {"type": "pong"}
            client = SpeakClient()
            try:  # a mirror-mode session refuses say
                await client.connect(ws, mode="mirror")
                reply = await client.request(ws, {"type": "say", "text": "hola", "voice": "es"}, "queued")
                assert reply["type"] == "error" and "speak-mode session" in reply["message"]
            finally:
                await client.close()
    finally:
        await app.stop()


async def test_say_audio_limits_and_interrupt(make_config, box_engine_factory):
    app = await _start_app(make_config, box_engine_factory, **{
        "speech.max_requests": 2, "speech.max_audio_seconds": 3.0, "speech.max_text_chars": 200,
    })
    client = SpeakClient()
    try:
        async with connect(f"ws://127.0.0.1:{app.port}/ws") as ws:
            await client.connect(ws)
            session = next(iter(app.sessions))
            shown = ShownLog(session)

            async def refused(message: dict, expected: str) -> None:
                reply = await client.request(ws, message, "queued")
                assert reply["type"] == "error" and expected in reply["message"], reply

            await refused({"type": "say", "text": "   "}, "the text is empty")
            await refused({"type": "say", "text": "x" * 201}, "text too long: 201 characters")
            await refused({"type": "say", "text": "hola", "voice": "xx-nope"}, "unknown voice")
            await refused({"type": "audio", "format": "wav", "data": "%%%"}, "not valid base64")
            await refused({"type": "audio", "format": "wav", "data": _wav_b64(_tone(4.0, 16000), 16000)},
                          "audio too long: 4.0 s")
            await refused({"type": "audio", "format": "pcm16", "sample_rate": 1000, "data": "AAAA"},
                          "8000..48000")

            # say -> speaking_started, the mouth moves, speaking_finished
            reply = await client.request(
                ws, {"type": "say", "text": "Hola, me llamo Ana y hablo español.", "voice": "es"}, "queued")
            assert reply == {"type": "queued", "request": "say", "voice": "es"}
            assert (await client.reply(ws, "speaking_started"))["type"] == "speaking_started"
            spoken_from = len(client.video)
            finished = await client.reply(ws, "speaking_finished")
            assert finished == {"type": "speaking_finished", "interrupted": False}
            darkness = [_mouth_darkness(image) for _, image in client.video[spoken_from:]]
            assert max(darkness) - min(darkness) > 0.1, "the mouth did not move while speaking"
            assert max(rms for _, _, rms in shown.items) > 0.05
            voice = np.concatenate([samples for _, samples in client.audio])
            assert np.abs(voice).max() > 2000, "the avatar's voice did not come back"

            # pushed audio, then the rate limit (2 requests per 10 s: say + audio)
            clip = vowel_bursts(3.0, 16000, lead_silence_s=0.0)
            reply = await client.request(ws, {"type": "audio", "format": "pcm16", "sample_rate": 16000,
                                              "data": base64.b64encode(
                                                  (clip * 32767).astype("<i2").tobytes()).decode()}, "queued")
            assert reply["type"] == "queued" and abs(reply["seconds"] - 3.0) < 0.01
            await refused({"type": "say", "text": "otra vez", "voice": "es"}, "too many say/audio messages")

            # interrupt mid-clip: speech dropped, the voice muted from the frame on screen, engine eased
            await client.reply(ws, "speaking_started")
            await asyncio.sleep(0.6)
            shown_before = len(shown.items)
            reply = await client.request(ws, {"type": "interrupt"}, "interrupted")
            assert reply["type"] == "interrupted" and reply["dropped_s"] > 1.0
            finished = await client.reply(ws, "speaking_finished")
            assert finished == {"type": "speaking_finished", "interrupted": True, "reason": "interrupt"}
            record = session.speaker.interrupts[-1]
            assert session.speaker.queue.queued_samples == 0 and session.speaker.state == "idle"
            assert session.worker.depth == 0
            tail = session.audio.ring.read(record["played_sample"], session.audio.ring.end)
            assert np.abs(tail).max() == 0.0, "speech still queued for the voice track after interrupt"
            await asyncio.sleep(0.5)
            assert session.worker.interrupts >= 1  # engine.interrupt() ran in the engine thread
            after = [(t, rms) for t, index, rms in shown.items[shown_before:] if t >= record["time"]]
            assert after, "no frame was rendered after the interrupt"
            first_new = after[0][0] - record["time"]
            assert all(rms < 1e-3 for _, rms in after), "speech frames were shown after the interrupt"
            assert first_new < 0.5  # server clock: the eased, silent face is on screen soon after
            assert (await client.request(ws, {"type": "ping"}, "pong"))["type"] == "pong"
    finally:
        await client.close()
        await app.stop()


async def test_talking_into_the_microphone_stops_the_avatar(make_config, box_engine_factory):
    app = await _start_app(make_config, box_engine_factory)
    talk = vowel_bursts(3.0, SAMPLE_RATE, 0.3, 0.05)
    mic = np.concatenate([np.zeros(int(2.0 * SAMPLE_RATE), np.float32), talk])
    client = SpeakClient(mic)
    try:
        async with connect(f"ws://127.0.0.1:{app.port}/ws") as ws:
            await client.connect(ws)
            clip = vowel_bursts(6.0, 16000, lead_silence_s=0.0)
            data = base64.b64encode((clip * 32767).astype("<i2").tobytes()).decode()
            reply = await client.request(
                ws, {"type": "audio", "format": "pcm16", "sample_rate": 16000, "data": data}, "queued")
            assert reply["type"] == "queued"
            assert (await client.reply(ws, "speaking_started"))["type"] == "speaking_started"
            finished = await client.reply(ws, "speaking_finished", timeout=10)
            assert finished == {"type": "speaking_finished", "interrupted": True, "reason": "barge_in"}
            session = next(iter(app.sessions))
            assert session.speaker.interrupts[-1]["dropped_samples"] > SAMPLE_RATE  # most of the 6 s clip
            assert session.audio.received_samples < 5 * SAMPLE_RATE  # the mic never drove the face
    finally:
        await client.close()
        await app.stop()


def _envelope_lag_ms(video: list[tuple[float, float]], audio: list[tuple[float, float]]) -> float:
    """Lag (ms) of the audio envelope behind the mouth signal, by cross-correlation on a 5 ms grid."""
    t0 = max(video[0][0], audio[0][0])
    t1 = min(video[-1][0], audio[-1][0])
    grid = np.arange(t0, t1, 0.005)
    v = np.interp(grid, *zip(*video, strict=True))
    a = np.interp(grid, *zip(*audio, strict=True))
    v, a = v - v.mean(), a - a.mean()
    lags = range(-60, 61)  # +-300 ms
    scores = [float(np.dot(v[max(0, -k) : len(v) - max(0, k)], a[max(0, k) : len(a) - max(0, -k)]))
              for k in lags]
    return 5.0 * lags[int(np.argmax(scores))]


async def test_voice_track_is_in_sync_with_the_lips(make_config, box_engine_factory):
    """The received voice's loudness and the mouth box, by arrival time in the client (A/V offset)."""
    app = await _start_app(make_config, box_engine_factory)
    client = SpeakClient()
    try:
        async with connect(f"ws://127.0.0.1:{app.port}/ws") as ws:
            await client.connect(ws)
            clip = vowel_bursts(5.0, 16000, burst_s=0.25, gap_s=0.35, lead_silence_s=0.0)
            data = base64.b64encode((clip * 32767).astype("<i2").tobytes()).decode()
            await client.request(ws, {"type": "audio", "format": "pcm16", "sample_rate": 16000, "data": data},
                                 "queued")
            await client.reply(ws, "speaking_finished", timeout=20)
        mouth = [(t, _mouth_darkness(image)) for t, image in client.video]
        loud = [(t - 0.01, float(np.sqrt(np.mean((s / 32768.0) ** 2)))) for t, s in client.audio]
        lag = _envelope_lag_ms(mouth, loud)
        print(f"A/V offset (audio after video, aiortc client arrival times): {lag:+.0f} ms")
        assert abs(lag) <= 80, f"voice and lips are {lag:+.0f} ms apart"
    finally:
        await client.close()
        await app.stop()
