"""Offline rendering: drive an engine session with the same windows the live server uses, write an MP4.

The MP4 holds H.264 video (yuv420p) and AAC audio of the driving file; its video lasts
``ceil(audio_seconds * fps) / fps`` seconds, i.e. within one frame (40 ms at 25 fps) of the audio.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from avatar.audio.io import float_to_pcm16, load_audio
from avatar.audio.vad import VoiceActivity
from avatar.audio.windowing import AudioRing, WindowConfig, Windower
from avatar.engine import SAMPLE_RATE, Engine, Frame, PreparedAvatar
from avatar.errors import AvatarError
from avatar.provenance.badge import BadgedSession
from avatar.provenance.marked_session import WatermarkedSession
from avatar.provenance.payload import Payload

OUTPUT_AUDIO_RATE = 48000


def frame_count(num_samples: int, fps: float) -> int:
    """Video frames needed to cover ``num_samples`` of 16 kHz audio."""
    return max(1, math.ceil(num_samples * fps / SAMPLE_RATE - 1e-9))


def render_frames(
    engine: Engine,
    avatar: PreparedAvatar,
    audio: np.ndarray,
    seed: int = 0,
    window: WindowConfig | None = None,
    watermark: bool = True,
    payload: Payload | None = None,
    badge: bool = False,
) -> Iterator[Frame]:
    """Yield one ``Frame`` per video frame for 16 kHz mono ``audio``, in order.

    Windows are cut exactly as in the live server: the server's defaults, or the engine's
    ``preferred_window`` when it has one, with the engine's ``lookahead_ms`` of right context.
    With ``watermark`` every frame carries the invisible provenance mark (``avatar.provenance``) with
    ``payload`` (default: a fresh random one); with ``badge`` a visible "AI-generated" label.
    """
    geometry = {"right_context_ms": 0.0, **(engine.preferred_window or {})}  # the server's default
    config = window or WindowConfig(fps=engine.fps, **geometry).at_least(engine.lookahead_ms)
    ring = AudioRing(capacity_seconds=len(audio) / SAMPLE_RATE + 2.0)
    vad = VoiceActivity()
    ring.write(audio)
    vad.feed(audio)
    total = frame_count(len(audio), config.fps)
    windower = Windower(config)
    session = engine.new_session(avatar, seed=seed)
    if badge:
        session = BadgedSession(session)
    if watermark:
        session = WatermarkedSession(session, size=engine.size, payload=payload)
    try:
        emitted = 0
        windows = itertools.chain(
            windower.ready(ring, vad.speech_fraction), windower.flush(ring, total, vad.speech_fraction)
        )
        for win in windows:
            for frame in session.process(win):
                if frame.index >= total:
                    return
                if frame.index != emitted:
                    raise AvatarError(f"engine returned frame {frame.index}, expected {emitted}")
                emitted += 1
                yield frame
    finally:
        session.close()


@dataclass
class RenderStats:
    frames: int
    audio_seconds: float
    video_seconds: float
    render_seconds: float
    session_id: int | None = None
    """The watermark payload's session id (``None`` without watermark)."""

    @property
    def real_time_factor(self) -> float:
        """Render time divided by audio duration (below 1 is faster than real time)."""
        return self.render_seconds / max(self.audio_seconds, 1e-9)


def write_mp4(
    out_path: str | Path,
    frames: Iterator[Frame],
    audio_48k: np.ndarray,
    fps: float,
    size: int,
    on_frame: Callable[[Frame], None] | None = None,
    crf: int = 23,
) -> int:
    """Encode RGB frames as H.264 + mono AAC into ``out_path``. Returns the number of frames written."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(fps).limit_denominator(1001)
    written = 0
    try:
        with av.open(str(out_path), mode="w", format="mp4") as container:
            vstream = container.add_stream("libx264", rate=rate)
            vstream.width = vstream.height = size
            vstream.pix_fmt = "yuv420p"
            vstream.options = {"crf": str(crf), "preset": "veryfast"}
            astream = container.add_stream("aac", rate=OUTPUT_AUDIO_RATE)
            astream.layout = "mono"
            for frame in frames:
                vf = av.VideoFrame.from_ndarray(frame.image, format="rgb24")
                vf.pts = frame.index
                vf.time_base = 1 / rate
                container.mux(vstream.encode(vf))
                written += 1
                if on_frame:
                    on_frame(frame)
            container.mux(vstream.encode(None))
            pcm = float_to_pcm16(audio_48k).reshape(1, -1)
            chunk = 1024
            for start in range(0, pcm.shape[1], chunk):
                af = av.AudioFrame.from_ndarray(pcm[:, start : start + chunk], format="s16", layout="mono")
                af.sample_rate = OUTPUT_AUDIO_RATE
                af.pts = start
                container.mux(astream.encode(af))
            container.mux(astream.encode(None))
    except (av.error.FFmpegError, OSError) as exc:
        raise AvatarError(f"cannot write {out_path}: {exc}") from None
    return written


def render_file(
    engine: Engine,
    portrait: str | Path,
    audio_path: str | Path,
    out_path: str | Path,
    seed: int = 0,
    progress: bool = False,
    badge: bool = False,
) -> RenderStats:
    """Render ``portrait`` speaking the audio file ``audio_path`` into the MP4 ``out_path``."""
    audio = load_audio(audio_path)
    audio_48k = load_audio(audio_path, sample_rate=OUTPUT_AUDIO_RATE)
    return render_audio(engine, portrait, audio, audio_48k, out_path, seed=seed, progress=progress,
                        badge=badge)


def render_audio(
    engine: Engine,
    portrait: str | Path,
    audio: np.ndarray,
    audio_48k: np.ndarray,
    out_path: str | Path,
    seed: int = 0,
    progress: bool = False,
    badge: bool = False,
) -> RenderStats:
    """Render ``portrait`` speaking ``audio`` (16 kHz float32; ``audio_48k`` is what the MP4 carries).

    Frames carry the invisible watermark (a fresh payload; its id is ``RenderStats.session_id``) and,
    with ``badge``, a visible "AI-generated" label. Signing the file is a separate step
    (``avatar.provenance.manifest.sign_file``, done by the render/say commands).
    """
    avatar = engine.prepare(portrait)
    total = frame_count(len(audio), engine.fps)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="frame", desc="render", leave=False)
    payload = Payload.create()
    started = time.perf_counter()
    try:
        frames = render_frames(engine, avatar, audio, seed=seed, payload=payload, badge=badge)
        tick = (lambda _frame: bar.update(1)) if bar else None
        written = write_mp4(out_path, frames, audio_48k, engine.fps, engine.size, on_frame=tick)
    finally:
        if bar:
            bar.close()
    elapsed = time.perf_counter() - started
    return RenderStats(
        frames=written,
        audio_seconds=len(audio) / SAMPLE_RATE,
        video_seconds=written / engine.fps,
        render_seconds=elapsed,
        session_id=payload.session_id,
    )
