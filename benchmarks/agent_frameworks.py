"""The avatar inside voice-agent frameworks: a real pipecat pipeline and LiveKit's VideoGenerator interface.

    python benchmarks/agent_frameworks.py [--portrait face.png] [--audio speech.wav] [--json out.json]

pipecat: ``Pipeline([TalkingPortraitVideo, recorder])`` run by pipecat's own ``PipelineWorker`` and
``WorkerRunner``. After ``--idle`` seconds of idle it receives TTS-like audio (``TTSAudioRawFrame``, 24 kHz,
20 ms chunks, as fast as a TTS service delivers them), then ``TTSStoppedFrame``; a second run sends an
``InterruptionFrame`` half-way. The recorder (the pipeline's last processor) logs every frame with its
arrival time. Reported:

* ``video_fps_per_audio_s``: images pushed per second of speech audio pushed with them (the engine's fps
  when every image comes with 1/fps s of audio); ``idle_fps``: images per wall second before the speech
  (its first half second left out).
* ``first_frame_ms``: first TTS audio frame in -> first image out; ``first_speech_frame_ms``: -> first image
  whose audio holds speech.
* ``mouth_r`` / ``mouth_lag_ms``: best lagged Pearson r of the mouth opening in the pushed images
  (MediaPipe inner-lip gap over face height, ``avatar.evaluation.mouth_track``) with the envelope of the
  audio pushed with them (``avatar.evaluation.sync``, 100 ms RMS), both on the output's frame clock:
  lag > 0 means the mouth follows the sound in the output.
* ``interrupt_stop_ms``: InterruptionFrame in (0.2 s after the 5th speech image came out) -> last speech
  frame out (0 when none came after it); ``speech_frames_after_interrupt``.

LiveKit: ``TalkingPortraitVideoGenerator`` driven directly with ``rtc.AudioFrame``s the way
``AvatarRunner`` does; the same measures on the ``rtc.VideoFrame``/``rtc.AudioFrame`` it yields.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from avatar.audio.io import float_to_pcm16, load_audio
from avatar.evaluation.sync import best_lag_correlation, frame_times, speech_envelope

ROOT = Path(__file__).resolve().parents[1]
AUDIO_RATE = 24000


@dataclass
class OutputLog:
    """What came out of an integration: images (RGB uint8) and their audio, with arrival times."""

    fps: float
    audio_rate: int
    images: list[np.ndarray] = field(default_factory=list)
    image_times: list[float] = field(default_factory=list)
    speaking: list[bool] = field(default_factory=list)
    audio: list[np.ndarray] = field(default_factory=list)
    """int16 mono per image (silence for images without audio)."""
    markers: list[tuple[float, str]] = field(default_factory=list)


@dataclass
class Measures:
    frames: int
    speech_frames: int
    video_fps_per_audio_s: float
    idle_fps: float
    first_frame_ms: float
    first_speech_frame_ms: float
    mouth_r: float
    mouth_lag_ms: float
    interrupt_stop_ms: float | None = None
    speech_frames_after_interrupt: int | None = None
    engine_ms_per_frame: float | None = None


def speech_pcm(path: Path | None) -> np.ndarray:
    """int16 mono speech at 24 kHz: ``path``, or espeak-ng's (tests/fixtures_media.py) when None."""
    if path is None:
        import tempfile

        from tests.fixtures_media import speech_wav_48k

        path = speech_wav_48k(Path(tempfile.mkdtemp()) / "speech.wav", lead_silence_s=0.0)
    return float_to_pcm16(load_audio(path, sample_rate=AUDIO_RATE))


def mouth_sync(log: OutputLog, first: int = 0) -> tuple[float, float]:
    """Best lagged r (and lag in ms) of the mouth opening in images ``first:`` with their audio's envelope."""
    from avatar.evaluation.mouth_track import FaceMeshTracker, mouth_openness

    images = log.images[first:]
    with FaceMeshTracker(video=True) as tracker:
        opening = mouth_openness(tracker.track(images))
    audio = np.concatenate(log.audio[first:]).astype(np.float32) / 32768.0
    envelope = speech_envelope(audio, frame_times(len(images), log.fps) + 0.5 / log.fps,
                               sample_rate=log.audio_rate)
    result = best_lag_correlation(opening, envelope, log.fps, max_lag_ms=200.0)
    return result.r, result.lag_ms


def measure(log: OutputLog, audio_in_at: float, idle_until: float, interrupt_at: float | None = None,
            sync_first: int | None = None) -> Measures:
    times = np.array(log.image_times)
    speaking = np.array(log.speaking)
    idle = (times < idle_until) & (times > times[0] + 0.5)  # after the first half second (start-up)
    idle_fps = (idle.sum() - 1) / (times[idle][-1] - times[idle][0]) if idle.sum() > 2 else 0.0
    after = times >= audio_in_at
    first_frame = times[after][0] if after.any() else np.nan
    first_speech = times[speaking][0] if speaking.any() else np.nan
    audio_s = sum(len(a) for a, s in zip(log.audio, log.speaking, strict=True) if s) / log.audio_rate
    start = sync_first if sync_first is not None else int(np.argmax(after))
    r, lag = mouth_sync(log, start)
    stop_ms = late = None
    if interrupt_at is not None:
        late_speech = speaking & (times > interrupt_at)
        late = int(late_speech.sum())
        stop_ms = 1000 * (times[late_speech][-1] - interrupt_at) if late else 0.0
    return Measures(
        frames=len(times), speech_frames=int(speaking.sum()),
        video_fps_per_audio_s=float(speaking.sum() / audio_s) if audio_s else 0.0,
        idle_fps=float(idle_fps),
        first_frame_ms=float(1000 * (first_frame - audio_in_at)),
        first_speech_frame_ms=float(1000 * (first_speech - audio_in_at)),
        mouth_r=r, mouth_lag_ms=lag, interrupt_stop_ms=stop_ms, speech_frames_after_interrupt=late,
    )


# -- pipecat --


async def speak(worker, speech: np.ndarray) -> None:
    """Queue one TTS turn into a pipecat pipeline worker: started, 20 ms audio frames, stopped."""
    from pipecat.frames.frames import TTSAudioRawFrame, TTSStartedFrame, TTSStoppedFrame

    await worker.queue_frame(TTSStartedFrame())
    step = AUDIO_RATE // 50
    for begin in range(0, len(speech), step):
        await worker.queue_frame(TTSAudioRawFrame(speech[begin : begin + step].tobytes(), AUDIO_RATE, 1))
    await worker.queue_frame(TTSStoppedFrame())


async def run_pipecat(portrait: Path, speech: np.ndarray, idle_s: float = 1.0,
                      interrupt_after_s: float | None = None, tail_s: float = 0.5,
                      prepared: tuple | None = None) -> tuple[OutputLog, Measures]:
    """One pipecat pipeline run; see the module docstring. ``prepared``: (engine, avatar) to reuse."""
    from pipecat.frames.frames import (
        EndFrame,
        InterruptionFrame,
        OutputAudioRawFrame,
        OutputImageRawFrame,
        TTSAudioRawFrame,
        TTSStoppedFrame,
    )
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker
    from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
    from pipecat.workers.runner import WorkerRunner

    from integrations.pipecat import METADATA_KEY, TalkingPortraitVideo

    class Recorder(FrameProcessor):
        """The pipeline's sink: logs every frame arriving downstream."""

        def __init__(self) -> None:
            super().__init__()
            self.log: list[tuple[float, object]] = []
            self.tts_stopped = asyncio.Event()
            self.speaking_images = 0
            self.speech_seen = asyncio.Event()

        async def process_frame(self, frame, direction):
            await super().process_frame(frame, direction)
            if direction == FrameDirection.DOWNSTREAM:
                self.log.append((time.monotonic(), frame))
                if isinstance(frame, TTSStoppedFrame):
                    self.tts_stopped.set()
                if isinstance(frame, OutputImageRawFrame) and frame.metadata[METADATA_KEY]["speaking"]:
                    self.speaking_images += 1
                    if self.speaking_images >= 5:
                        self.speech_seen.set()
            await self.push_frame(frame, direction)

    from loguru import logger

    logger.remove()  # pipecat logs every frame at DEBUG
    logger.add(lambda message: print(message, end=""), level="WARNING")
    if prepared is not None:
        avatar = TalkingPortraitVideo(engine=prepared[0], avatar=prepared[1])
    else:
        avatar = TalkingPortraitVideo(portrait)
    recorder = Recorder()
    params = PipelineParams(audio_out_sample_rate=AUDIO_RATE)
    worker = PipelineWorker(Pipeline([avatar, recorder]), params=params, cancel_on_idle_timeout=False)
    started = asyncio.Event()
    marks: dict[str, float] = {}

    @worker.event_handler("on_pipeline_started")
    async def _started(_worker, _frame):
        started.set()

    async def drive() -> None:
        await asyncio.wait_for(started.wait(), 60)
        await asyncio.sleep(idle_s)
        marks["audio_in"] = time.monotonic()
        await speak(worker, speech)
        if interrupt_after_s is not None:  # that long after the 5th speaking image came out
            await asyncio.wait_for(recorder.speech_seen.wait(), 30)
            await asyncio.sleep(interrupt_after_s)
            marks["interrupt"] = time.monotonic()
            await worker.queue_frame(InterruptionFrame())
            await asyncio.sleep(tail_s)
        else:  # the recorder has all the speech's frames once the TTSStoppedFrame reached it
            await asyncio.wait_for(recorder.tts_stopped.wait(), len(speech) / AUDIO_RATE + 30)
            await asyncio.sleep(tail_s)
        await worker.queue_frame(EndFrame())

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await asyncio.gather(runner.run(), drive())

    stats = avatar.stats
    log = OutputLog(fps=25.0, audio_rate=AUDIO_RATE)
    pending_image = None
    for when, frame in recorder.log:
        if isinstance(frame, OutputImageRawFrame):
            pending_image = (when, frame)
        elif isinstance(frame, OutputAudioRawFrame) and pending_image is not None:
            image_when, image = pending_image
            pending_image = None
            width, height = image.size
            log.images.append(np.frombuffer(image.image, np.uint8).reshape(height, width, 3))
            log.image_times.append(image_when)
            log.speaking.append(bool(image.metadata[METADATA_KEY]["speaking"]))
            log.audio.append(np.frombuffer(frame.audio, np.int16))
            assert isinstance(frame, TTSAudioRawFrame) == log.speaking[-1], "speech audio keeps its type"
        elif isinstance(frame, TTSStoppedFrame):
            log.markers.append((when, "TTSStoppedFrame"))
    measures = measure(log, marks["audio_in"], marks["audio_in"], marks.get("interrupt"))
    if stats is not None and stats.windows_rendered:
        measures.engine_ms_per_frame = 1000 * stats.engine_seconds / stats.windows_rendered
    return log, measures


async def run_pipecat_webrtc(speech: np.ndarray, prepared: tuple, idle_s: float = 2.0,
                             tail_s: float = 1.0) -> dict[str, float]:
    """pipecat's own WebRTC transport (SmallWebRTC, aiortc) in this process, an aiortc client receiving:
    the audio-to-video offset as a receiver sees it. Both tracks are put on a 25 Hz grid by arrival time
    (mouth opening of each received picture; 100 ms RMS of the received audio) and the best lag between
    them is taken (> 0: the mouth comes after the sound)."""
    from aiortc import RTCPeerConnection
    from aiortc.mediastreams import MediaStreamError
    from loguru import logger
    from pipecat.frames.frames import EndFrame
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.pipeline.worker import PipelineParams, PipelineWorker
    from pipecat.transports.base_transport import TransportParams
    from pipecat.transports.smallwebrtc.connection import SmallWebRTCConnection
    from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport
    from pipecat.workers.runner import WorkerRunner

    from avatar.evaluation.mouth_track import FaceMeshTracker, mouth_openness
    from integrations.pipecat import TalkingPortraitVideo

    logger.remove()
    logger.add(lambda message: print(message, end=""), level="WARNING")
    client = RTCPeerConnection()
    client.addTransceiver("audio", direction="recvonly")
    client.addTransceiver("video", direction="recvonly")
    client.createDataChannel("messages")
    pictures: list[tuple[float, np.ndarray]] = []
    sounds: list[tuple[float, np.ndarray, int]] = []

    async def receive(track) -> None:
        try:
            while True:
                frame = await track.recv()
                now = time.monotonic()
                if track.kind == "video":
                    pictures.append((now, frame.to_ndarray(format="rgb24")))
                else:
                    pcm = frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0]
                    sounds.append((now, pcm.astype(np.float32) / 32768.0, frame.sample_rate))
        except MediaStreamError:
            return

    receivers: list[asyncio.Task] = []
    client.on("track", lambda track: receivers.append(asyncio.create_task(receive(track))))
    await client.setLocalDescription(await client.createOffer())
    connection = SmallWebRTCConnection()
    await connection.initialize(sdp=client.localDescription.sdp, type=client.localDescription.type)
    answer = connection.get_answer()
    from aiortc import RTCSessionDescription

    await client.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
    size = prepared[0].size
    transport = SmallWebRTCTransport(webrtc_connection=connection, params=TransportParams(
        audio_out_enabled=True, video_out_enabled=True, video_out_is_live=False,
        video_out_width=size, video_out_height=size, video_out_framerate=round(prepared[0].fps)))
    avatar = TalkingPortraitVideo(engine=prepared[0], avatar=prepared[1])
    params = PipelineParams(audio_out_sample_rate=AUDIO_RATE)
    pipeline = Pipeline([avatar, transport.output()])
    worker = PipelineWorker(pipeline, params=params, cancel_on_idle_timeout=False)
    marks: dict[str, float] = {}

    async def drive() -> None:
        await asyncio.sleep(idle_s)
        marks["audio_in"] = time.monotonic()
        await speak(worker, speech)
        await asyncio.sleep(len(speech) / AUDIO_RATE + tail_s)
        marks["end"] = time.monotonic()
        await worker.queue_frame(EndFrame())

    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await asyncio.gather(runner.run(), drive())
    await client.close()
    for task in receivers:
        task.cancel()

    start, stop = marks["audio_in"] - 0.5, marks["end"]
    grid = np.arange(start, stop, 0.04)
    shown = [(t, image) for t, image in pictures if start - 1 <= t <= stop + 1]
    with FaceMeshTracker(video=True) as tracker:
        opening = mouth_openness(tracker.track([image for _, image in shown]))
    mouth = np.interp(grid, [t for t, _ in shown], np.nan_to_num(opening, nan=float(np.nanmean(opening))))
    audio_times = np.concatenate([t - (np.arange(len(pcm))[::-1] + 1) / rate for t, pcm, rate in sounds])
    audio = np.concatenate([pcm for _, pcm, _ in sounds])
    power = np.array([np.mean(audio[(audio_times >= t - 0.05) & (audio_times < t + 0.05)] ** 2)
                      if np.any((audio_times >= t - 0.05) & (audio_times < t + 0.05)) else 0.0 for t in grid])
    result = best_lag_correlation(mouth, np.sqrt(power), 25.0, max_lag_ms=400.0)
    steady = [t for t, _ in pictures if marks["audio_in"] <= t <= marks["end"]]
    fps = (len(steady) - 1) / (steady[-1] - steady[0]) if len(steady) > 2 else 0.0
    seconds = float(audio.size / sounds[0][2]) if sounds else 0.0
    return {"received_video_fps": fps, "received_mouth_r": result.r, "received_av_offset_ms": result.lag_ms,
            "video_frames": len(pictures), "audio_seconds": seconds}


# -- LiveKit --


async def run_livekit(portrait: Path, speech: np.ndarray, idle_s: float = 1.0,
                      clear_after_s: float | None = None, tail_s: float = 0.5,
                      prepared: tuple | None = None) -> tuple[OutputLog, Measures]:
    """Drive ``TalkingPortraitVideoGenerator`` the way ``AvatarRunner`` does: push_audio from one task,
    and in another every yielded item into LiveKit's ``rtc.AVSynchronizer`` (real ``AudioSource`` and
    ``VideoSource``, no room), which paces them as it would for a room."""
    from livekit import rtc
    from livekit.agents.voice.avatar import AudioSegmentEnd

    from integrations.livekit import TalkingPortraitVideoGenerator

    if prepared is not None:
        generator = await TalkingPortraitVideoGenerator.create(engine=prepared[0], avatar=prepared[1],
                                                               audio_sample_rate=AUDIO_RATE)
    else:
        generator = await TalkingPortraitVideoGenerator.create(portrait, audio_sample_rate=AUDIO_RATE)
    log = OutputLog(fps=generator.fps, audio_rate=AUDIO_RATE)
    marks: dict[str, float] = {}
    pending: list[tuple[float, np.ndarray]] = []

    opts = generator.options
    audio_source = rtc.AudioSource(opts.audio_sample_rate, opts.audio_channels, queue_size_ms=100)
    video_source = rtc.VideoSource(opts.video_width, opts.video_height)
    sync = rtc.AVSynchronizer(audio_source=audio_source, video_source=video_source,
                              video_fps=opts.video_fps, video_queue_size_ms=100)

    async def consume() -> None:
        async for item in generator:
            if not isinstance(item, AudioSegmentEnd):
                await sync.push(item)
            now = time.monotonic()
            if isinstance(item, rtc.VideoFrame):
                if pending:  # the previous image came without audio
                    log.audio.append(np.zeros(round(AUDIO_RATE / generator.fps), np.int16))
                    log.speaking.append(False)
                    pending.clear()
                rgba = np.frombuffer(bytes(item.data), np.uint8).reshape(item.height, item.width, 4)
                image = rgba[..., :3]
                log.images.append(image)
                log.image_times.append(now)
                pending.append((now, image))
            elif isinstance(item, rtc.AudioFrame):
                assert pending, "audio comes right after its image"
                pending.clear()
                log.audio.append(np.frombuffer(bytes(item.data), np.int16).copy())
                log.speaking.append(True)  # the generator sends audio with the frames of a speech segment
            elif isinstance(item, AudioSegmentEnd):
                log.markers.append((now, "AudioSegmentEnd"))

    task = asyncio.create_task(consume())
    await asyncio.sleep(idle_s)
    marks["audio_in"] = time.monotonic()
    step = AUDIO_RATE // 25
    for begin in range(0, len(speech), step):
        chunk = speech[begin : begin + step]
        await generator.push_audio(rtc.AudioFrame(chunk.tobytes(), AUDIO_RATE, 1, len(chunk)))
    await generator.push_audio(AudioSegmentEnd())
    if clear_after_s is not None:
        await asyncio.sleep(clear_after_s)
        marks["interrupt"] = time.monotonic()
        generator.clear_buffer()
        await asyncio.sleep(tail_s)
    else:  # until the segment's end came out (paced in real time by the synchronizer)
        deadline = time.monotonic() + len(speech) / AUDIO_RATE + 30
        while not log.markers and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await asyncio.sleep(tail_s)
    stats = generator.stream.stats
    await generator.aclose()
    await task
    for closable in (sync, audio_source, video_source):
        await closable.aclose()
    if pending:
        log.audio.append(np.zeros(round(AUDIO_RATE / generator.fps), np.int16))
        log.speaking.append(False)
    measures = measure(log, marks["audio_in"], marks["audio_in"], marks.get("interrupt"))
    if stats.windows_rendered:
        measures.engine_ms_per_frame = 1000 * stats.engine_seconds / stats.windows_rendered
    return log, measures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--portrait", type=Path, default=ROOT / "avatar/assets/astronaut.png")
    parser.add_argument("--audio", type=Path, default=None, help="speech file (default: espeak-ng)")
    parser.add_argument("--idle", type=float, default=2.0, help="seconds of idle before the speech")
    parser.add_argument("--motion", choices=["learned", "rules"], default=None,
                        help="the parametric engine's motion (default: its default, learned)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--webrtc", action="store_true",
                        help="only pipecat through its own WebRTC transport to an aiortc client")
    args = parser.parse_args()
    from avatar.engines import create_engine

    sys.path.insert(0, str(ROOT))  # tests.fixtures_media (espeak-ng speech), integrations
    speech = speech_pcm(args.audio)
    seconds = len(speech) / AUDIO_RATE
    engine = create_engine("parametric", **({"motion": args.motion} if args.motion else {}))
    prepared = (engine, engine.prepare(args.portrait))
    if args.webrtc:
        received = asyncio.run(run_pipecat_webrtc(speech, prepared, idle_s=args.idle))
        print(json.dumps(received, indent=2))
        return
    results = {}
    for name, run, kwargs in [
        ("pipecat", run_pipecat, {}),
        ("pipecat interrupted", run_pipecat, {"interrupt_after_s": 0.2}),
        ("livekit", run_livekit, {}),
        ("livekit clear_buffer", run_livekit, {"clear_after_s": seconds / 2}),
    ]:
        run_once = run(args.portrait, speech, idle_s=args.idle, prepared=prepared, **kwargs)
        _log, measures = asyncio.run(run_once)
        results[name] = asdict(measures)
    keys = list(next(iter(results.values())))
    print("| run | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for name, row in results.items():
        cells = [f"{v:.3g}" if isinstance(v, float) else str(v) for v in row.values()]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"speech: {seconds:.1f} s at {AUDIO_RATE} Hz; engine: parametric, motion {engine.motion}; "
          f"portrait: {args.portrait.name}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
