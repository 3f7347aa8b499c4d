"""Session layout (#15 item 5): mode/state enums, the two audio sources behind one interface, the
Speaker's narrow host interface, and the session statistics class."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import numpy as np
import pytest

from avatar.audio.windowing import WindowConfig
from avatar.engine import SAMPLE_RATE, Frame, PreparedAvatar
from server.audio_input import AudioInput
from server.audio_sources import BARGE_IN_WINDOW, AudioSource, MicrophoneSource, SpeechSource
from server.config import SpeechSettings
from server.degrade import LoadShedder
from server.metrics import ServerMetrics
from server.modes import SessionMode, SessionState, SpeechState
from server.session import Session, SessionRegistry
from server.session_stats import GAUGES, SessionStats
from server.signalling import Offer, SignallingError, parse_message
from server.speaker import Speaker, TtsProvider
from server.speech_input import SpeechQueue
from server.video_track import FrameBuffer
from tests.media import vowel_bursts

SDP = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"
WINDOW = WindowConfig(fps=25.0, frames_per_window=1, hop=1, left_context_ms=200.0, right_context_ms=80.0)
TICK = SAMPLE_RATE // 50  # 20 ms


# ------------------------------------------------------------------------------------------ modes
def test_offer_mode_is_a_string_enum_that_keeps_the_wire_strings() -> None:
    offer = parse_message(json.dumps({"type": "offer", "sdp": SDP, "mode": "speak"}))
    assert isinstance(offer, Offer) and offer.mode is SessionMode.SPEAK and offer.mode == "speak"
    assert parse_message(json.dumps({"type": "offer", "sdp": SDP})).mode is SessionMode.MIRROR
    assert json.dumps({"mode": SessionMode.SPEAK, "state": SpeechState.QUEUED}) == \
        '{"mode": "speak", "state": "queued"}'
    assert [str(s) for s in SessionState] == ["starting", "running", "closing", "closed"]


@pytest.mark.parametrize("mode", ["loud", "SPEAK", "", 3, None, ["speak"], {"a": 1}, True])
def test_bad_offer_modes_are_refused_with_one_line(mode) -> None:
    with pytest.raises(SignallingError) as refused:
        parse_message(json.dumps({"type": "offer", "sdp": SDP, "mode": mode}))
    assert str(refused.value) == "offer mode must be 'mirror' or 'speak'"
    assert SessionMode.parse(mode) is None


# ------------------------------------------------------------------------------------ audio sources
class Listener:
    def __init__(self) -> None:
        self.spans: list[tuple[int, int]] = []
        self.heard = 0

    def speech_entered(self, start: int, end: int) -> None:
        self.spans.append((start, end))

    def voice_heard(self) -> bool:
        self.heard += 1
        return False


def _sources(clock) -> tuple[MicrophoneSource, SpeechSource, SpeechQueue]:
    queue = SpeechQueue()
    mic = MicrophoneSource(AudioInput(WINDOW, max_gap_ms=200.0, clock=clock))
    speech = SpeechSource(AudioInput(WINDOW, max_gap_ms=200.0, clock=clock), queue, clock)
    return mic, speech, queue


def test_both_sources_offer_the_whole_interface(fake_clock) -> None:
    members = [name for name in dir(AudioSource) if not name.startswith("_")] + ["listener"]
    assert {"hear", "hear_samples", "tick", "mute", "user_speaking", "listener"} <= set(members)
    for source in _sources(fake_clock)[:2]:
        assert all(hasattr(source, name) for name in members), type(source).__name__


def test_microphone_source_feeds_the_timeline_and_pads_silence(fake_clock) -> None:
    mic, _, _ = _sources(fake_clock)
    windows = mic.hear_samples(np.full(SAMPLE_RATE, 0.1, np.float32))  # 1 s of microphone audio
    assert len(windows) >= 20 and mic.audio.received_samples == SAMPLE_RATE
    assert mic.tick() == []  # not behind: no padding
    fake_clock.advance(1.0)  # the microphone stalls for 1 s
    padded = mic.tick()
    assert padded and mic.audio.padded_samples == SAMPLE_RATE - mic.audio.max_gap_samples
    assert mic.mute(0) == 0 and mic.audio.ring.read(0, 100).any()  # the user's own voice stays
    assert mic.user_speaking is False


def test_speech_source_speaks_the_queue_in_real_time_and_reports_its_span(fake_clock) -> None:
    _, speech, queue = _sources(fake_clock)
    listener = speech.listener = Listener()
    assert speech.tick() == []  # the first tick starts the timeline
    fake_clock.advance(0.1)
    speech.tick()  # 0.1 s of silence: no speech yet
    assert listener.spans == [] and speech.audio.ring.end == SAMPLE_RATE // 10
    queue.add(np.full(TICK * 3, 0.2, np.float32))
    fake_clock.advance(0.04)
    speech.tick()
    start, first_end = SAMPLE_RATE // 10, speech.audio.ring.end
    assert abs(first_end - start - 2 * TICK) <= 1  # only what fitted into the elapsed 40 ms ...
    assert listener.spans == [(start, first_end)]  # ... all of it speech
    fake_clock.advance(0.04)
    speech.tick()
    assert listener.spans[-1] == (first_end, start + 3 * TICK) and queue.queued_samples == 0
    assert speech.audio.ring.end > start + 3 * TICK  # silence after the speech
    assert speech.audio.received_samples == 3 * TICK  # speech counts as received, the rest as padding
    assert speech.mute(start + TICK) == speech.audio.ring.end - start - TICK
    ring = speech.audio.ring.read(start, speech.audio.ring.end)
    assert ring[:TICK].min() == pytest.approx(0.2) and not ring[TICK:].any()


def test_speech_source_listens_to_the_microphone_only_for_barge_in(fake_clock) -> None:
    _, speech, _ = _sources(fake_clock)
    listener = speech.listener = Listener()
    talk = vowel_bursts(1.0, SAMPLE_RATE, burst_s=0.45, gap_s=0.02, lead_silence_s=0.0)
    assert speech.hear_samples(talk[: BARGE_IN_WINDOW - TICK]) == [] and listener.heard == 0
    assert speech.hear_samples(talk[BARGE_IN_WINDOW - TICK : BARGE_IN_WINDOW]) == []
    assert listener.heard == 1 and speech.user_speaking
    assert speech.audio.ring.end == 0  # the microphone never reaches the face's timeline
    speech.hear_samples(np.zeros(BARGE_IN_WINDOW, np.float32))
    assert not speech.user_speaking


# ------------------------------------------------------------------------------------------ speaker
class Host:
    """The four things a Speaker may ask of its session."""

    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.played = -1
        self.drops = 0

    def spawn(self, coro, name: str) -> asyncio.Task:
        return asyncio.ensure_future(coro)

    async def send_quietly(self, text: str) -> None:
        self.sent.append(json.loads(text))

    def played_sample(self) -> int:
        return self.played

    def drop_queued_output(self) -> tuple[int, int]:
        self.drops += 1
        return 2, 3


def _speaker(clock, mode=SessionMode.SPEAK, barge_in=True):
    host, queue = Host(), SpeechQueue()
    source = SpeechSource(AudioInput(WINDOW, clock=clock), queue, clock)
    settings = SpeechSettings(barge_in=barge_in)
    speaker = Speaker(host, source, queue, settings, TtsProvider("espeak", 100), clock, mode=mode,
                      tag={"channel": "stage", "session": "s1"})
    return speaker, source, host


async def test_speaker_works_through_its_host_and_source_only(fake_clock) -> None:
    speaker, source, host = _speaker(fake_clock)
    assert source.listener is speaker
    source.tick()
    job = asyncio.get_running_loop().create_future()
    job.set_result(np.full(TICK * 10, 0.3, np.float32))
    speaker.speak(job, "audio")
    await asyncio.sleep(0.01)
    assert speaker.active and speaker.queue.queued_samples == TICK * 10
    fake_clock.advance(0.1)
    source.tick()
    speaker.update()
    assert speaker.state is SpeechState.QUEUED and speaker.start_sample == 0
    host.played = 0  # the video shows the first frame of the speech
    speaker.update()
    await asyncio.sleep(0.01)
    assert speaker.state is SpeechState.SPEAKING and host.sent[-1] == {"type": "speaking_started"}
    listened: list[str] = []

    async def listen(text: str) -> None:
        listened.append(text)

    speaker.listeners["controller"] = listen
    host.played = TICK * 2
    record = speaker.interrupt()
    await asyncio.sleep(0.01)
    assert host.drops == 1 and (record["windows_dropped"], record["frames_dropped"]) == (2, 3)
    assert record["muted"] == TICK * 5 - TICK * 2  # what was on the timeline past the frame on screen
    assert speaker.state is SpeechState.IDLE and not speaker.active
    assert host.sent[-1] == {"type": "speaking_finished", "interrupted": True, "reason": "interrupt"}
    assert json.loads(listened[-1]) == {**host.sent[-1], "channel": "stage", "session": "s1"}


async def test_barge_in_needs_speech_coming_and_the_setting(fake_clock) -> None:
    talk = vowel_bursts(1.0, SAMPLE_RATE, burst_s=0.45, gap_s=0.02, lead_silence_s=0.0)
    speaker, source, host = _speaker(fake_clock)
    source.hear_samples(talk)
    assert host.drops == 0 and not speaker.interrupts  # nothing to interrupt
    speaker.queue.add(np.ones(TICK, np.float32))
    source.hear_samples(talk[:TICK])
    assert speaker.interrupts[-1]["reason"] == "barge_in" and speaker.queue.queued_samples == 0
    speaker, source, host = _speaker(fake_clock, barge_in=False)
    speaker.queue.add(np.ones(TICK, np.float32))
    source.hear_samples(talk)
    assert not speaker.interrupts and speaker.queue.queued_samples == TICK


def test_a_mirror_session_speaker_refuses_say_but_interrupts(fake_clock) -> None:
    host, queue = Host(), SpeechQueue()
    mic = MicrophoneSource(AudioInput(WINDOW, clock=fake_clock))
    speaker = Speaker(host, mic, queue, SpeechSettings(), TtsProvider("espeak", 100), fake_clock,
                      mode=SessionMode.MIRROR)
    with pytest.raises(SignallingError, match='say needs a speak-mode session: offer with "mode": "speak"'):
        speaker.check_mode("say")
    mic.hear_samples(np.full(SAMPLE_RATE, 0.1, np.float32))
    record = speaker.interrupt()
    assert record["muted"] == 0 and host.drops == 1 and not speaker.user_speaking


# ---------------------------------------------------------------------------------------- statistics
def _stats(clock, metrics=None) -> tuple[SessionStats, SimpleNamespace, FrameBuffer]:
    video = SimpleNamespace(fps=25.0, sent=0, fresh=0, repeated=0, stills=0, shown_index=-1,
                            first_sent_at=None, first_fresh_at=None)
    buffer = FrameBuffer(8, 3)
    audio = AudioInput(WINDOW, clock=clock)
    stats = SessionStats(clock, clock.now(), video, buffer, audio, LoadShedder(), metrics)
    return stats, video, buffer


def test_session_stats_counts_frames_engine_time_and_start_up(fake_clock) -> None:
    metrics = ServerMetrics(lambda: {}, lambda: 0, lambda: 0)
    stats, video, buffer = _stats(fake_clock, metrics)
    stats.engine_rendered(2, 0.04)
    stats.engine_rendered(1, 0.01)
    assert stats.take_busy_s() == pytest.approx(0.05) and stats.take_busy_s() == 0.0
    assert metrics.engine_seconds.count == 3
    fake_clock.advance(0.5)
    video.sent, video.fresh, video.repeated, video.stills = 10, 6, 3, 1
    video.first_sent_at, video.first_fresh_at = fake_clock.now() - 0.4, fake_clock.now() - 0.2
    fake_clock.advance(0.5)
    report = stats.report()
    assert report["fps"] == 10.0 and report["fresh_fps"] == 6.0
    assert report["engine_ms"] == pytest.approx(50 / 3, abs=0.01)
    assert report["repeat_share"] == 0.4
    assert report["first_frame_s"] == 0.1 and report["first_animated_s"] == 0.3
    assert metrics.first_frame_seconds.count == 1
    stats.observe_first_frame()
    assert metrics.first_frame_seconds.count == 1  # once per session
    fake_clock.advance(2.0)
    video.sent, video.fresh = 60, 46
    report = stats.report()
    assert report["fps"] == 25.0 and report["fresh_fps"] == 20.0
    assert report["engine_ms"] == pytest.approx(16.67)  # no new engine frames: the last average stays
    assert report["uptime_s"] == 3.0 and report["windows_dropped"] == 0 and report["degraded"] is False


def test_session_stats_latency_totals_and_counters(fake_clock) -> None:
    metrics = ServerMetrics(lambda: {}, lambda: 0, lambda: 0)
    stats, video, buffer = _stats(fake_clock, metrics)
    stats.audio.push_samples(np.zeros(SAMPLE_RATE // 25 * 2, np.float32))  # frames 0-1's audio arrive now
    fake_clock.advance(0.12)
    video.fresh = 1
    stats.frame_shown(Frame(index=0, image=np.zeros((2, 2, 3), np.uint8)), fake_clock.now())
    assert stats.report()["latency_ms"] == 120.0
    assert metrics.latency_seconds.count == 1 and metrics.first_animated_frame_seconds.count == 1
    for index in range(12):
        buffer.push(Frame(index=index, image=np.zeros((2, 2, 3), np.uint8)))
    stats.worker = SimpleNamespace(windows_dropped=4, depth=2)
    totals = stats.totals()
    assert totals["frames_dropped"] == 4 and totals["windows_dropped"] == 4
    assert totals["queue_depth"] == 2 and totals["frame_buffer"] == 8
    assert set(stats.counters()) == set(totals) - set(GAUGES)


# ------------------------------------------------------------------------------------ session states
AVATAR = PreparedAvatar("t", np.zeros((64, 64, 3), np.uint8))


async def test_session_state_runs_starting_running_closing_closed(make_config, box_engine_factory) -> None:
    from aiortc import RTCPeerConnection

    config = make_config(**{"engine.size": 64})
    sent: list[dict] = []

    async def send(text: str) -> None:
        sent.append(json.loads(text))

    registry = SessionRegistry(2)
    session = Session(config, box_engine_factory(size=64), AVATAR, send, on_closed=registry.remove,
                      mode="speak", channel="stage", channel_key="k" * 16)
    registry.add(session)
    assert session.state is SessionState.STARTING and not session.running and not session.closed
    assert isinstance(session.source, SpeechSource) and registry.on_channel("stage") == []
    client = RTCPeerConnection()
    client.addTransceiver("video", direction="recvonly")
    await client.setLocalDescription(await client.createOffer())
    await session.start(client.localDescription.sdp)
    assert session.state is SessionState.RUNNING and registry.on_channel("stage") == [session]
    closing = session.request_close("test")
    assert session.state is SessionState.CLOSING and session.closed and registry.on_channel("stage") == []
    await closing
    assert session.state is SessionState.CLOSED and sent[-1]["type"] == "ended"
    never_started = Session(config, box_engine_factory(size=64), AVATAR, send)
    assert isinstance(never_started.source, MicrophoneSource)
    count = len(sent)
    await never_started.close("unused")
    assert never_started.state is SessionState.CLOSED and len(sent) == count  # no "ended": never answered
    await client.close()
