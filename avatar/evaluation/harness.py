"""Run engines over evaluation cases and measure them (and the real clips) into ``CaseResult``s."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from avatar.audio.io import load_audio
from avatar.engine import SAMPLE_RATE, Engine, Frame, PreparedAvatar
from avatar.errors import AvatarError, ConfigError
from avatar.evaluation.analysis import FrameAnalyzer, measure_clip, mesh_noise_floor, portrait_identity
from avatar.evaluation.cases import Case
from avatar.evaluation.identity import FaceEmbedder
from avatar.evaluation.media import read_image, read_video, video_fps

REFERENCE = "reference"
"""Source name of the measures taken on the real videos."""


@dataclass(frozen=True)
class Settings:
    fps: float = 25.0
    size: int = 512
    seed: int = 0
    max_seconds: float | None = None
    """Audio (and real video) is cut to this length; None = whole files."""
    identity_every: int = 5


@dataclass
class CaseResult:
    """Measures of one case from one source (an engine name or ``REFERENCE``)."""

    case: str
    source: str
    metrics: dict[str, float | int | None] = field(default_factory=dict)
    error: str | None = None
    fps: float = 25.0
    mouth: np.ndarray | None = None
    """Per-frame mouth openness (plots)."""
    envelope: np.ndarray | None = None
    speech: np.ndarray | None = None
    landmarks: np.ndarray | None = None
    """Face mesh per frame, float32 (frames, 478, 3) pixels, NaN where no face (ground truth of the real
    clips; not written to the results)."""


Progress = Callable[[CaseResult], None]


def load_case_audio(case: Case, max_seconds: float | None) -> np.ndarray:
    """The case's driving audio, 16 kHz mono float32, cut to ``max_seconds``."""
    audio = load_audio(case.audio)
    if max_seconds is not None:
        audio = audio[: max(1, int(round(max_seconds * SAMPLE_RATE)))]
    return audio


def _portrait_embedding(case: Case, embedder: FaceEmbedder | None) -> np.ndarray | None:
    return portrait_identity(read_image(case.portrait), embedder) if embedder is not None else None


def resample_track(track: np.ndarray, fps_from: float, fps_to: float, frames: int) -> np.ndarray:
    """Nearest-frame resampling of a per-frame track (frames_from, ...) to ``frames`` frames at ``fps_to``
    (float64, NaN past its end); extra axes (e.g. landmarks (frames, 478, 3)) are carried along."""
    track = np.asarray(track, dtype=np.float64)
    source = np.round(np.arange(frames) * fps_from / fps_to).astype(np.int64)
    out = np.full((frames, *track.shape[1:]), np.nan)
    inside = source < len(track)
    out[inside] = track[source[inside]]
    return out


def measure_reference(case: Case, settings: Settings, embedder: FaceEmbedder | None) -> CaseResult:
    """Measures of the real video of ``case`` against its audio (raises ``AvatarError``)."""
    assert case.video is not None
    fps = video_fps(case.video)
    audio = load_case_audio(case, settings.max_seconds)
    analyzer = FrameAnalyzer(fps, embedder, _portrait_embedding(case, embedder), settings.identity_every)
    last = -1
    for seconds, image in read_video(case.video, settings.max_seconds):
        last = int(round(seconds * fps))
        analyzer.add(image, last)
    if last < 0:
        raise AvatarError(f"video {case.video.name} has no frames")
    tracks = analyzer.finish(last + 1)
    measures = measure_clip(tracks, audio)
    return CaseResult(
        case.name,
        REFERENCE,
        measures.metrics,
        None,
        fps,
        measures.mouth,
        measures.envelope,
        measures.speech,
        tracks.landmarks,
    )


def _timed(frames: Iterator[Frame]) -> tuple[Iterator[Frame], list[float]]:
    """Wrap ``frames`` so the time spent producing them (not consuming them) adds up in ``spent[0]``."""
    spent = [0.0]

    def generate() -> Iterator[Frame]:
        while True:
            started = time.perf_counter()
            try:
                frame = next(frames)
            except StopIteration:
                spent[0] += time.perf_counter() - started
                return
            spent[0] += time.perf_counter() - started
            yield frame

    return generate(), spent


def render_frames(engine: Engine, avatar: PreparedAvatar, audio: np.ndarray, seed: int) -> Iterator[Frame]:
    """Frames of ``engine`` for ``audio`` driven exactly as the offline renderer drives it, watermark
    included; its payload comes from ``seed`` (not a fresh random one), so a run is repeatable."""
    from avatar.provenance.payload import Payload
    from avatar.render import render_frames as drive

    return drive(engine, avatar, audio, seed=seed, payload=Payload(session_id=seed % (1 << 24), minutes=0))


def measure_engine_case(
    engine: Engine,
    case: Case,
    settings: Settings,
    embedder: FaceEmbedder | None,
    real: CaseResult | None = None,
    source: str | None = None,
) -> CaseResult:
    """Render ``case`` with ``engine`` and measure it; ``real`` (its reference result) adds ground truth.
    ``source`` names the engine in the results (default ``engine.name``)."""
    audio = load_case_audio(case, settings.max_seconds)
    started = time.perf_counter()
    avatar = engine.prepare(case.portrait)
    prepare_seconds = time.perf_counter() - started
    analyzer = FrameAnalyzer(
        engine.fps, embedder, _portrait_embedding(case, embedder), settings.identity_every
    )
    frames, spent = _timed(render_frames(engine, avatar, audio, settings.seed))
    count = 0
    for frame in frames:
        analyzer.add(frame.image, frame.index)
        count += 1
    expected = max(1, math.ceil(len(audio) * engine.fps / SAMPLE_RATE - 1e-9))
    real_mouth = real_landmarks = None
    if real is not None and real.landmarks is not None:
        real_landmarks = resample_track(real.landmarks, real.fps, engine.fps, expected)
    elif real is not None and real.mouth is not None:
        real_mouth = resample_track(real.mouth, real.fps, engine.fps, expected)
    measures = measure_clip(analyzer.finish(expected), audio, real_mouth, real_landmarks)
    audio_seconds = len(audio) / SAMPLE_RATE
    floor_speed, floor_jerk = mesh_noise_floor(avatar.image)
    measures.metrics.update(
        {
            "mesh_floor_speed": floor_speed,
            "mesh_floor_jerk": floor_jerk,
            "frames_rendered": count,
            "prepare_s": prepare_seconds,
            "render_s": spent[0],
            "real_time_factor": spent[0] / audio_seconds,
            "ms_per_frame": 1000.0 * spent[0] / max(count, 1),
        }
    )
    return CaseResult(
        case.name,
        source or engine.name,
        measures.metrics,
        None,
        engine.fps,
        measures.mouth,
        measures.envelope,
        measures.speech,
    )


def parse_engine_specs(text: str) -> dict[str, tuple[str, dict[str, str]]]:
    """Engine specs separated by commas: ``name`` or ``name:motion`` (``parametric:learned``).

    Returns ``{source: (engine name, extra create_engine options)}`` in order, repeats dropped; the
    source is the spec as written (``"parametric:rules"``). Raises ``ConfigError`` (one line) for an
    empty list, an empty name or motion, more than one colon or a motion ``avatar.motion`` does not know.
    """
    from avatar.motion import MotionSource

    motions = [m.value for m in MotionSource]
    specs: dict[str, tuple[str, dict[str, str]]] = {}
    for raw in text.split(","):
        spec = raw.strip()
        if not spec:
            continue
        name, colon, motion = (part.strip() for part in spec.partition(":"))
        if not name or (colon and not motion) or ":" in motion:
            raise ConfigError(
                f"bad engine spec {spec!r}: write a name or name:motion, e.g. parametric:learned"
            )
        if colon and motion not in motions:
            raise ConfigError(
                f"unknown motion {motion!r} in engine spec {spec!r}; choose one of: {', '.join(motions)}"
            )
        source = f"{name}:{motion}" if colon else name
        specs.setdefault(source, (name, {"motion": motion} if colon else {}))
    if not specs:
        raise ConfigError("--engine names no engine")
    return specs


def create_embedder() -> FaceEmbedder | None:
    """The dlib embedder, or None (identity skipped) when dlib or its models are missing."""
    try:
        return FaceEmbedder()
    except AvatarError:
        return None


def _one_line(exc: Exception) -> str:
    """User-facing errors as they are; anything else (an engine bug) with its type, on one line."""
    text = str(exc) if isinstance(exc, AvatarError) else f"{exc.__class__.__name__}: {exc}"
    return " ".join(text.split()) or exc.__class__.__name__


def evaluate(
    engines: dict[str, Engine],
    cases: list[Case],
    settings: Settings,
    reference_only: bool = False,
    embedder: FaceEmbedder | None = None,
    progress: Progress | None = None,
) -> list[CaseResult]:
    """Measure every real clip (cases with a video) and, unless ``reference_only``, every engine on every
    case. A case that fails (no face, unreadable file, engine exception) becomes a result with ``error``
    set; ``KeyboardInterrupt`` and ``MemoryError`` still stop the run."""
    results: list[CaseResult] = []

    def record(result: CaseResult) -> CaseResult:
        results.append(result)
        if progress:
            progress(result)
        return result

    references: dict[str, CaseResult] = {}
    for case in cases:
        if case.video is None:
            continue
        try:
            references[case.name] = record(measure_reference(case, settings, embedder))
        except Exception as exc:  # noqa: BLE001 - one broken case must not lose the others' work
            record(CaseResult(case.name, REFERENCE, error=_one_line(exc)))
    if reference_only:
        return results
    for name, engine in engines.items():
        for case in cases:
            try:
                record(measure_engine_case(engine, case, settings, embedder, references.get(case.name), name))
            except Exception as exc:  # noqa: BLE001 - recorded in the report, the run goes on
                record(CaseResult(case.name, name, error=_one_line(exc)))
    return results
