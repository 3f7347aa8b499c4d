"""The avatar as a LiveKit Agents ``VideoGenerator`` (extra ``[livekit]``), tested at the interface: no
LiveKit server runs here, so the generator is driven the way ``AvatarRunner`` drives it (``push_audio``
from one task, its frames forwarded in another) and what it yields goes through LiveKit's own
``rtc.AVSynchronizer`` with real ``rtc.AudioSource``/``rtc.VideoSource`` (LiveKit's native library checks
the frames and paces them), as the runner does before publishing them to a room.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

pytest.importorskip("livekit.agents", reason="livekit-agents is not installed (scripts/setup.sh --test)")

from livekit import rtc  # noqa: E402
from livekit.agents.voice.avatar import AudioSegmentEnd, VideoGenerator  # noqa: E402

from benchmarks.agent_frameworks import AUDIO_RATE, speech_pcm  # noqa: E402
from integrations.livekit import TalkingPortraitVideoGenerator  # noqa: E402
from tests.conftest import ROOT  # noqa: E402

PORTRAIT = ROOT / "avatar/assets/astronaut.png"


@pytest.fixture(scope="module")
def prepared():
    from avatar.engines import create_engine

    engine = create_engine("parametric")
    yield engine, engine.prepare(PORTRAIT)
    engine.close()


async def forward(generator, log: list, stop: asyncio.Event) -> float:
    """What ``AvatarRunner._forward_video`` does, minus the room: every item into an AVSynchronizer.
    Logs (arrival time, item); returns the synchronizer's measured video fps."""
    opts = generator.options
    audio = rtc.AudioSource(sample_rate=opts.audio_sample_rate, num_channels=opts.audio_channels,
                            queue_size_ms=100)
    video = rtc.VideoSource(width=opts.video_width, height=opts.video_height)
    sync = rtc.AVSynchronizer(audio_source=audio, video_source=video, video_fps=opts.video_fps,
                              video_queue_size_ms=100)
    try:
        async for item in generator:
            log.append((time.monotonic(), item))
            if not isinstance(item, AudioSegmentEnd):
                await sync.push(item)
            if stop.is_set():
                break
        return sync.actual_fps
    finally:
        await sync.aclose()
        await audio.aclose()
        await video.aclose()


async def push_speech(generator, speech: np.ndarray) -> None:
    step = AUDIO_RATE // 25  # 40 ms frames, as DataStreamAudioReceiver delivers them at 25 fps
    for begin in range(0, speech.size, step):
        chunk = speech[begin : begin + step]
        await generator.push_audio(rtc.AudioFrame(chunk.tobytes(), AUDIO_RATE, 1, chunk.size))
    await generator.push_audio(AudioSegmentEnd())


async def test_generator_yields_paced_frames_with_their_audio_and_segment_end(prepared):
    engine, avatar = prepared
    speech = speech_pcm(None)[: 2 * AUDIO_RATE]
    generator = await TalkingPortraitVideoGenerator.create(engine=engine, avatar=avatar)
    assert isinstance(generator, VideoGenerator)
    assert (generator.options.video_width, generator.options.video_fps) == (512, 25.0)
    log: list = []
    stop = asyncio.Event()
    forwarding = asyncio.create_task(forward(generator, log, stop))
    await asyncio.sleep(0.6)
    pushed_at = time.monotonic()
    await push_speech(generator, speech)
    for _ in range(200):
        if any(isinstance(item, AudioSegmentEnd) for _, item in log):
            break
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.4)
    stop.set()
    fps = await asyncio.wait_for(forwarding, 10)
    await generator.aclose()

    items = [item for _, item in log]
    names = {rtc.VideoFrame: "V", rtc.AudioFrame: "A", AudioSegmentEnd: "E"}
    kinds = [names[type(i)] for i in items]
    assert kinds.count("E") == 1, "one AudioSegmentEnd for the one segment"
    end = kinds.index("E")
    assert "A" not in kinds[end:], "no audio after the segment's end"
    assert "A" not in "".join(kinds[: next(i for i, (t, _) in enumerate(log) if t >= pushed_at)]), (
        "idle frames before the speech come without audio"
    )
    for i, kind in enumerate(kinds):
        if kind == "A":
            assert kinds[i - 1] == "V", "each audio frame follows its video frame"
    audio_frames = [i for i in items if isinstance(i, rtc.AudioFrame)]
    shapes = {(a.sample_rate, a.num_channels, a.samples_per_channel) for a in audio_frames}
    assert shapes == {(AUDIO_RATE, 1, 960)}
    out = np.concatenate([np.frombuffer(bytes(a.data), np.int16) for a in audio_frames])
    assert np.array_equal(out[np.abs(out) > 0], speech[np.abs(speech) > 0]), "the speech passes through whole"
    assert len(audio_frames) - speech.size / 960 <= 4, "speech frames plus at most the look-ahead lead-in"
    assert kinds[end - 2 : end] == ["V", "A"], "AudioSegmentEnd right after the last speech frame"
    video = [i for i in items if isinstance(i, rtc.VideoFrame)]
    assert {(v.width, v.height, v.type) for v in video} == {(512, 512, rtc.VideoBufferType.RGBA)}
    assert 20 <= fps <= 30, f"LiveKit's synchronizer measured {fps:.1f} fps"


async def test_clear_buffer_stops_the_speech_and_idles(prepared):
    engine, avatar = prepared
    speech = speech_pcm(None)[: 3 * AUDIO_RATE]
    generator = await TalkingPortraitVideoGenerator.create(engine=engine, avatar=avatar)
    log: list = []
    stop = asyncio.Event()
    forwarding = asyncio.create_task(forward(generator, log, stop))
    await push_speech(generator, speech)
    await asyncio.sleep(0.5)
    generator.clear_buffer()
    cleared_at = time.monotonic()
    await asyncio.sleep(0.6)
    stop.set()
    await asyncio.wait_for(forwarding, 10)
    await generator.aclose()
    after = [item for when, item in log if when > cleared_at]
    assert not any(isinstance(i, rtc.AudioFrame | AudioSegmentEnd) for i in after), "speech stops at once"
    assert sum(isinstance(i, rtc.VideoFrame) for i in after) >= 5, "the face goes on idling"
    heard = sum(isinstance(i, rtc.AudioFrame) for _, i in log)
    assert heard < speech.size / 960 - 10, "the rest of the segment was dropped"
