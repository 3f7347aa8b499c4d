"""``prepare-motion``: real talking clips -> per-clip head pose, expression and speech features.

For each clip (a video, its speech from the video's sound track or a separate WAV named in the manifest):

1. **Capture** (``avatar.motion.capture``, the slow step) is cached in ``<out>/captures/<stem>.npz`` and
   reused when it is readable with the current capture version and covers the clip (or ``max_seconds``
   of it); ``force`` captures again.
2. **Tracks** (``avatar.motion.canonical.fit_tracks``): pose and face with the head motion removed.
3. **Frame filters**; every dropped frame is counted under the first reason that applies, in this order:

   * ``no_face``: MediaPipe found no face in the frame;
   * ``multiple_faces``: it found two or more (whose mouth is speaking is not known);
   * ``profile``: ``|yaw|`` of the fitted pose above ``MAX_YAW_DEG`` = 35 degrees;
   * ``unreliable_mesh``: the similarity fit leaves an RMS residual above ``MAX_FIT_RESIDUAL`` = 0.035
     face heights on the skull-fixed landmarks (frontal frames of real clips: median 0.008, 99th percentile
     0.02; turned-away meshes that under-report their yaw: 0.03-0.05);
   * ``cut``: the face jumps between consecutive frames with a face: the median landmark displacement is
     above ``CUT_JUMP`` = 0.25 face heights *and* above ``CUT_CONTRAST`` = 3 times the median jump of the
     ``CUT_CONTEXT`` = 5 frame pairs on each side (handheld shake moves the face 0.1-0.27 face heights per
     frame for many frames in a row; a cut is a jump in steady footage), or the face height changes by more
     than ``CUT_SCALE`` = 20 %. ``CUT_MARGIN`` = 3 frames on each side of the jump are dropped.

4. **Clip filters**; a clip is dropped whole when:

   * ``decode_error``: the video or its audio is missing or cannot be decoded (the run goes on);
   * ``silence``: its speech is silent: RMS below ``SILENCE_DBFS`` = -50 dBFS over the whole clip, or not
     one 20 ms frame voiced by webrtcvad (``avatar.audio.vad``, aggressiveness 2, energy floor included);
   * ``no_face``: no frame has a face;
   * ``too_short``: fewer than ``MIN_KEPT_S`` = 1 s of frames are kept.

5. **Motion** of kept clips, ``<out>/motion/<stem>.npz`` (``frames`` = the capture's video frames; per-frame
   values are NaN where no face was found; use only frames where ``keep`` is set):

   * ``fps`` float (source frame rate), ``times`` float64 (frames,) seconds on the audio clock;
   * ``pose`` float32 (frames, 6): pitch, yaw, roll (radians), tx, ty (face heights), log face height (px);
   * ``expression`` float32 (frames, 478, 3): aligned face minus ``rest``, in face heights;
   * ``rest`` float32 (478, 3): the speaker's closed-mouth face over the kept frames, in face heights;
   * ``eye_openness`` float32 (frames,) lid gap over eye width; ``gaze`` float32 (frames, 2) iris offset
     over eye width; ``mouth_opening``, ``mouth_width`` float32 (frames,) face heights;
   * ``keep`` bool (frames,): the frame passed every frame filter;
   * ``mel_power`` float32 (hops, 40): mel power of the speech on a 10 ms grid (100 Hz, hop 0 at time 0;
     ``avatar.motion.audio_features``);
   * ``speaker_id``, ``split``, ``language`` strings when a manifest lists the clip; ``source`` the video.

``<out>/report.json`` and ``<out>/report.md`` list every clip with its frame counts per reason, and the
minutes kept per split and per speaker.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

import numpy as np

from avatar.engine import SAMPLE_RATE
from avatar.errors import AvatarError, ConfigError
from avatar.motion import canonical
from avatar.motion.capture import ClipCapture, capture_clip

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".mpg")
DEFAULT_SPLITS = ("train", "val")
MOTION_VERSION = 1

MAX_YAW_DEG = 35.0
MAX_FIT_RESIDUAL = 0.035
"""RMS distance (face heights) of the fitted skull-fixed landmarks from the canonical face."""
CUT_JUMP = 0.25
"""Median landmark displacement between consecutive face frames, in face heights."""
CUT_CONTRAST = 3.0
CUT_CONTEXT = 5
CUT_SCALE = 0.20
CUT_MARGIN = 3
SILENCE_DBFS = -50.0
VAD_AGGRESSIVENESS = 2
MIN_KEPT_S = 1.0
COVER_TOLERANCE_S = 0.25
"""A cached capture shorter than the clip (or ``max_seconds``) by more than this is captured again."""


class DropReason(StrEnum):
    """Why frames (the first five) or whole clips (all) were dropped."""

    NO_FACE = "no_face"
    MULTIPLE_FACES = "multiple_faces"
    PROFILE = "profile"
    UNRELIABLE_MESH = "unreliable_mesh"
    CUT = "cut"
    SILENCE = "silence"
    TOO_SHORT = "too_short"
    DECODE_ERROR = "decode_error"


FRAME_REASONS = (DropReason.NO_FACE, DropReason.MULTIPLE_FACES, DropReason.PROFILE,
                 DropReason.UNRELIABLE_MESH, DropReason.CUT)
"""Frame reasons in the order they are attributed."""


@dataclass(frozen=True)
class ClipSource:
    """One clip to prepare: the video, its speech (None: the video's own track) and manifest labels."""

    video: Path
    audio: Path | None = None
    split: str | None = None
    speaker_id: str | None = None
    language: str | None = None

    @property
    def stem(self) -> str:
        return self.video.stem


@dataclass
class ClipResult:
    """One clip's line in the report. Seconds are frames over the source frame rate."""

    file: str
    stem: str
    split: str | None
    speaker_id: str | None
    language: str | None
    status: str = "kept"
    reason: str | None = None
    message: str = ""
    capture: str = "captured"
    fps: float = 0.0
    frames: int = 0
    kept_frames: int = 0
    seconds: float = 0.0
    kept_seconds: float = 0.0
    dropped_frames: dict[str, int] = field(default_factory=dict)
    cuts: int = 0
    rms_dbfs: float | None = None
    voiced_fraction: float | None = None

    def drop(self, reason: DropReason, message: str = "") -> ClipResult:
        self.status, self.reason, self.message = "dropped", reason.value, message
        return self


@dataclass
class FrameFilter:
    """Per-frame filter result: ``reason`` int8 (frames,) = index into ``FRAME_REASONS``, -1 where kept."""

    reason: np.ndarray
    cuts: int

    @property
    def keep(self) -> np.ndarray:
        return self.reason < 0

    def counts(self) -> dict[str, int]:
        return {r.value: int(np.sum(self.reason == i)) for i, r in enumerate(FRAME_REASONS)}


# ---------------------------------------------------------------------------------------------- inputs


def load_manifest(path: Path) -> list[ClipSource]:
    """Clips listed in a ``manifest.tsv`` (columns ``file``, ``audio_file``, ``split``, ``speaker_id``,
    ``language``; paths relative to the manifest's folder). Raises ``ConfigError`` for a bad manifest."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"cannot read manifest {path}: {exc.__class__.__name__}") from None
    if not rows or "file" not in rows[0]:
        raise ConfigError(f"manifest {path} has no 'file' column (tab-separated, one row per clip)")
    root = path.parent
    return [ClipSource(video=root / row["file"],
                       audio=root / row["audio_file"] if row.get("audio_file") else None,
                       split=row.get("split") or None, speaker_id=row.get("speaker_id") or None,
                       language=row.get("language") or None)
            for row in rows if row.get("file")]


def _videos_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)


def _under(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def _sources_for(path: Path, rows: list[ClipSource] | None, notes: list[str]) -> list[ClipSource]:
    """Clips named by one ``--videos`` input, labelled from ``rows`` (a manifest) where listed."""
    if not path.exists():
        raise AvatarError(f"not found: {path}")
    if path.is_file() and path.suffix.lower() not in VIDEO_SUFFIXES:
        raise AvatarError(f"not a video ({', '.join(VIDEO_SUFFIXES)}): {path}")
    videos = [path] if path.is_file() else _videos_in(path)
    if rows is None:
        if not videos:
            raise AvatarError(f"no videos ({', '.join(VIDEO_SUFFIXES)}) in {path}")
        return [ClipSource(video=v) for v in videos]
    chosen = [r for r in rows if _under(r.video, path)]
    if path.is_file():
        return chosen or [ClipSource(video=path)]
    listed = {r.video.resolve() for r in chosen}
    extra = sum(1 for v in videos if v.resolve() not in listed)
    if extra:
        notes.append(f"{extra} videos under {path} are not in the manifest and were ignored")
    if not chosen:
        raise AvatarError(f"no clip of the manifest is under {path}")
    return chosen


def _select_splits(sources: list[ClipSource], splits: Sequence[str], notes: list[str]) -> list[ClipSource]:
    skipped = Counter(s.split for s in sources if s.split is not None and s.split not in splits)
    for split, count in sorted(skipped.items()):
        hint = " (evaluation only)" if split == "eval-only" else ""
        notes.append(f"skipped {count} {split} clips{hint}; add {split} to --split to include them")
    chosen = [s for s in sources if s.split is None or s.split in splits]
    if not chosen:
        found = ", ".join(sorted({s.split for s in sources if s.split})) or "none"
        raise ConfigError(f"no clips in split(s) {','.join(splits)} (splits in the manifest: {found})")
    return chosen


def discover_clips(inputs: Sequence[str | Path], manifest: str | Path | None = None,
                   splits: Sequence[str] = DEFAULT_SPLITS) -> tuple[list[ClipSource], list[str]]:
    """The clips to prepare from video files and folders, and notes on what was left out.

    A folder's own ``manifest.tsv`` (or ``manifest`` for every input) labels its clips and gives their
    audio files; labelled clips are kept when their split is in ``splits``. Raises ``AvatarError`` with one
    line for a missing input, a folder without videos or two clips whose names (stems) collide."""
    notes: list[str] = []
    given = None
    if manifest is not None:
        if not Path(manifest).is_file():
            raise AvatarError(f"manifest not found: {manifest}")
        given = load_manifest(Path(manifest))
    found: dict[Path, ClipSource] = {}
    for item in inputs:
        path = Path(item)
        own = path / "manifest.tsv"
        rows = given if given is not None else (load_manifest(own) if own.is_file() else None)
        for source in _sources_for(path, rows, notes):
            found.setdefault(source.video.resolve(), source)
    sources = _select_splits(list(found.values()), splits, notes)
    stems = Counter(s.stem for s in sources)
    clashes = sorted(stem for stem, n in stems.items() if n > 1)
    if clashes:
        raise AvatarError(f"{len(clashes)} clip names occur twice (outputs are named by file stem), "
                          f"e.g. {clashes[0]}")
    return sources, notes


# --------------------------------------------------------------------------------------------- capture


def _video_seconds(path: Path) -> float | None:
    """Duration of the first video stream in seconds (None when the container does not say)."""
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if stream.duration is not None and stream.time_base is not None:
                return float(stream.duration * stream.time_base)
            return container.duration / 1e6 if container.duration else None
    except (av.error.FFmpegError, OSError, IndexError):
        return None


def _covers(capture: ClipCapture, video: Path, max_seconds: float | None) -> bool:
    """Whether a cached capture spans the whole clip (or its first ``max_seconds``)."""
    wanted = _video_seconds(video)
    if max_seconds is not None:
        wanted = max_seconds if wanted is None else min(wanted, max_seconds)
    if wanted is None or capture.num_frames == 0:
        return capture.num_frames > 0
    return float(capture.times[-1]) + 1.0 / max(capture.fps, 1.0) >= wanted - COVER_TOLERANCE_S


def _truncate(capture: ClipCapture, max_seconds: float | None) -> ClipCapture:
    if max_seconds is None:
        return capture
    n = int(np.sum(capture.times < max_seconds))
    samples = int(round(max_seconds * SAMPLE_RATE))
    return ClipCapture(capture.landmarks[:n], capture.faces[:n], capture.times[:n], capture.fps,
                       capture.width, capture.height, capture.audio[:samples])


def load_or_capture(source: ClipSource, captures: Path, max_seconds: float | None = None,
                    force: bool = False) -> tuple[ClipCapture, bool]:
    """The clip's capture and whether it came from the cache ``captures/<stem>.npz`` (written when not).

    Raises ``AvatarError`` when the clip cannot be decoded."""
    path = captures / f"{source.stem}.npz"
    if path.is_file() and not force:
        try:
            cached = ClipCapture.load(path)
        except AvatarError:
            cached = None
        if cached is not None and _covers(cached, source.video, max_seconds):
            return _truncate(cached, max_seconds), True
    capture = capture_clip(source.video, source.audio, max_seconds=max_seconds)
    captures.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.partial.npz")
    capture.save(partial)
    os.replace(partial, path)
    return capture, False


# --------------------------------------------------------------------------------------------- filters


def fit_residual(aligned: np.ndarray) -> np.ndarray:
    """RMS distance (frames,) in face heights of each frame's skull-fixed landmarks from the canonical face
    (``aligned`` (frames, 478, 3) face heights; NaN where no face)."""
    stable = list(canonical.STABLE_POINTS)
    diff = aligned[:, stable].astype(np.float64) - canonical.canonical_face()[stable]
    return np.sqrt((diff**2).sum(axis=-1).mean(axis=-1))


def face_jumps(landmarks: np.ndarray, scale: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray,
                                                                                     np.ndarray]:
    """Motion between consecutive frames with a face: (prev, cur) frame indices (pairs,), the median landmark
    displacement in face heights (pairs,) and the absolute log change of face height (pairs,)."""
    idx = np.flatnonzero(valid)
    prev, cur = idx[:-1], idx[1:]
    moved = np.linalg.norm(landmarks[cur, :, :2] - landmarks[prev, :, :2], axis=-1)
    height = (scale[cur].astype(np.float64) + scale[prev]) / 2.0
    jump = np.median(moved, axis=1) / np.maximum(height, 1e-6)
    return np.stack([prev, cur]), jump, np.abs(np.log(scale[cur] / scale[prev]))


def _context_median(values: np.ndarray, k: int) -> np.ndarray:
    """Median of the ``k`` values on each side of every value (itself excluded)."""
    out = np.zeros_like(values)
    for i in range(values.size):
        around = np.concatenate([values[max(0, i - k):i], values[i + 1:i + 1 + k]])
        out[i] = np.median(around) if around.size else 0.0
    return out


def cut_frames(landmarks: np.ndarray, scale: np.ndarray, valid: np.ndarray) -> tuple[np.ndarray, int]:
    """Frames (bool (frames,)) within ``CUT_MARGIN`` of a cut, and the number of cuts (module docstring)."""
    pairs, jump, rescale = face_jumps(landmarks, scale, valid)
    sudden = (jump > CUT_JUMP) & (jump > CUT_CONTRAST * _context_median(jump, CUT_CONTEXT))
    is_cut = sudden | (rescale > np.log1p(CUT_SCALE))
    near = np.zeros(valid.shape[0], dtype=bool)
    for prev, cur in pairs[:, is_cut].T:
        near[max(0, prev - CUT_MARGIN + 1):cur + CUT_MARGIN] = True
    return near, int(is_cut.sum())


def turned_or_unfitted(tracks: canonical.FaceTracks) -> tuple[np.ndarray, np.ndarray]:
    """Two masks (bool (frames,) each) of ``tracks.valid`` frames: the face in profile (``|yaw| >
    MAX_YAW_DEG``), and the mesh fitting the canonical face badly (residual above ``MAX_FIT_RESIDUAL``, or
    NaN): where the face mesh's lips cannot be trusted."""
    with np.errstate(invalid="ignore"):
        yaw = np.degrees(np.abs(tracks.pose[:, 1]))
        residual = fit_residual(tracks.aligned)
    return tracks.valid & (yaw > MAX_YAW_DEG), tracks.valid & ~(residual <= MAX_FIT_RESIDUAL)


def filter_frames(capture: ClipCapture, tracks: canonical.FaceTracks) -> FrameFilter:
    """Apply the frame filters of the module docstring to a capture and its ``FaceTracks``."""
    valid = tracks.valid & (capture.faces > 0)
    profile, unfitted = turned_or_unfitted(tracks)
    cut, cuts = cut_frames(capture.landmarks, tracks.scale, valid)
    tests = (~valid, capture.faces >= 2, valid & profile, valid & unfitted, cut)
    reason = np.full(capture.num_frames, -1, dtype=np.int8)
    for code, hit in enumerate(tests):
        reason[(reason < 0) & hit] = code
    return FrameFilter(reason, cuts)


def speech_level(audio: np.ndarray) -> tuple[float, float]:
    """RMS level (dBFS, -inf for digital silence) and voiced fraction of the 20 ms frames (webrtcvad)."""
    from avatar.audio.vad import VAD_FRAME, VoiceActivity

    audio = np.asarray(audio, dtype=np.float32)
    rms = float(np.sqrt(np.mean(audio.astype(np.float64) ** 2))) if audio.size else 0.0
    dbfs = 20.0 * np.log10(rms) if rms > 0 else float("-inf")
    vad = VoiceActivity(VAD_AGGRESSIVENESS, history=audio.size // VAD_FRAME + 1)
    vad.feed(audio)
    voiced = vad.speech_fraction(0, audio.size) if audio.size >= VAD_FRAME else 0.0
    return float(dbfs), float(voiced)


# ---------------------------------------------------------------------------------------------- motion


def derive_motion(capture: ClipCapture, tracks: canonical.FaceTracks, keep: np.ndarray
                  ) -> dict[str, np.ndarray]:
    """The per-clip motion arrays of the module docstring (without the manifest labels)."""
    from avatar.motion.audio_features import clip_mel_power

    aligned = tracks.aligned
    rest = canonical.closed_mouth_rest(aligned, keep)
    pose = tracks.pose.astype(np.float32).copy()
    pose[~tracks.valid] = np.nan
    with np.errstate(invalid="ignore"):
        return {
            "fps": np.float64(capture.fps), "times": capture.times.astype(np.float64), "pose": pose,
            "expression": (aligned - rest).astype(np.float32), "rest": rest.astype(np.float32),
            "eye_openness": canonical.eye_openness(aligned).astype(np.float32),
            "gaze": canonical.gaze(aligned).astype(np.float32),
            "mouth_opening": canonical.mouth_opening(aligned).astype(np.float32),
            "mouth_width": canonical.mouth_width(aligned).astype(np.float32),
            "keep": keep.astype(bool), "mel_power": clip_mel_power(capture.audio).astype(np.float32),
        }


def _labels(source: ClipSource) -> dict[str, np.ndarray]:
    labels = {"source": np.str_(str(source.video)), "version": np.int64(MOTION_VERSION)}
    for name in ("speaker_id", "split", "language"):
        value = getattr(source, name)
        if value is not None:
            labels[name] = np.str_(value)
    return labels


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    partial = path.with_name(f"{path.stem}.partial.npz")
    np.savez_compressed(partial, **arrays)
    os.replace(partial, path)


# ------------------------------------------------------------------------------------------------ clips


def _judge(result: ClipResult, capture: ClipCapture, frames: FrameFilter) -> ClipResult:
    """Fill the frame counts and apply the clip filters (silence, no face, too short)."""
    fps = capture.fps if capture.fps > 0 else 25.0
    keep = frames.keep
    result.fps, result.frames, result.kept_frames = float(fps), capture.num_frames, int(keep.sum())
    result.seconds, result.kept_seconds = capture.num_frames / fps, float(keep.sum()) / fps
    result.dropped_frames, result.cuts = frames.counts(), frames.cuts
    dbfs, voiced = speech_level(capture.audio)
    result.rms_dbfs, result.voiced_fraction = round(max(dbfs, -120.0), 1), round(voiced, 3)
    if dbfs < SILENCE_DBFS or voiced == 0.0:
        return result.drop(DropReason.SILENCE, f"speech {result.rms_dbfs:.0f} dBFS, "
                                               f"{result.voiced_fraction:.0%} voiced")
    if not np.any(capture.faces > 0):
        return result.drop(DropReason.NO_FACE, "no face in any frame")
    if result.kept_seconds < MIN_KEPT_S:
        worst = max(result.dropped_frames, key=result.dropped_frames.__getitem__)
        why = (f"most dropped: {worst}" if result.dropped_frames[worst]
               else f"the clip is {result.seconds:.2f} s")
        return result.drop(DropReason.TOO_SHORT, f"{result.kept_seconds:.2f} s kept ({why})")
    return result


def _failed(result: ClipResult, motion_path: Path, message: str) -> ClipResult:
    motion_path.unlink(missing_ok=True)
    result.capture = "failed"
    return result.drop(DropReason.DECODE_ERROR, message)


def prepare_clip(source: ClipSource, out: Path, max_seconds: float | None = None,
                 force: bool = False) -> ClipResult:
    """Capture (or reuse), filter and derive one clip; writes ``out/motion/<stem>.npz`` when it is kept
    (and removes a stale one when it is not). Never raises for a bad clip: the reason is in the result."""
    result = ClipResult(str(source.video), source.stem, source.split, source.speaker_id, source.language)
    motion_path = out / "motion" / f"{source.stem}.npz"
    try:
        capture, cached = load_or_capture(source, out / "captures", max_seconds, force)
    except AvatarError as exc:
        return _failed(result, motion_path, str(exc))
    except (OSError, ValueError, RuntimeError) as exc:  # a decoder error not wrapped by the capture
        return _failed(result, motion_path, f"cannot decode {source.video.name}: {exc.__class__.__name__}")
    result.capture = "cached" if cached else "captured"
    tracks = canonical.fit_tracks(capture.landmarks)
    frames = filter_frames(capture, tracks)
    _judge(result, capture, frames)
    if result.status != "kept":
        motion_path.unlink(missing_ok=True)
        return result
    motion_path.parent.mkdir(parents=True, exist_ok=True)
    _write_npz(motion_path, {**derive_motion(capture, tracks, frames.keep), **_labels(source)})
    return result


# ---------------------------------------------------------------------------------------------- report


def thresholds() -> dict[str, float]:
    """The filter thresholds of the module docstring, for the report."""
    return {"max_yaw_deg": MAX_YAW_DEG, "max_fit_residual_face_heights": MAX_FIT_RESIDUAL,
            "cut_jump_face_heights": CUT_JUMP, "cut_contrast": CUT_CONTRAST,
            "cut_context_frames": CUT_CONTEXT, "cut_scale_change": CUT_SCALE, "cut_margin_frames": CUT_MARGIN,
            "silence_dbfs": SILENCE_DBFS, "vad_aggressiveness": VAD_AGGRESSIVENESS, "min_kept_s": MIN_KEPT_S}


def _group(results: Iterable[ClipResult], key: str) -> dict[str, dict[str, object]]:
    """Clips, minutes and kept minutes (of kept clips) per value of ``key``, with the splits it occurs in."""
    groups: dict[str, dict[str, float]] = {}
    splits: dict[str, set[str]] = {}
    for r in results:
        name = getattr(r, key) or "unknown"
        g = groups.setdefault(name, {"clips": 0, "kept_clips": 0, "minutes": 0.0, "kept_minutes": 0.0})
        splits.setdefault(name, set()).add(r.split or "unknown")
        g["clips"] += 1
        g["minutes"] += r.seconds / 60.0
        if r.status == "kept":
            g["kept_clips"] += 1
            g["kept_minutes"] += r.kept_seconds / 60.0
    return {k: {"split": ",".join(sorted(splits[k])), "clips": g["clips"], "kept_clips": g["kept_clips"],
                "minutes": round(g["minutes"], 3), "kept_minutes": round(g["kept_minutes"], 3)}
            for k, g in sorted(groups.items())}


def summarize(results: Sequence[ClipResult]) -> dict[str, object]:
    """Totals over clips: per split and speaker (clips, minutes, minutes kept), frames dropped per reason
    (over every clip that decoded), clips dropped per reason."""
    frames: Counter[str] = Counter()
    for r in results:
        frames.update(r.dropped_frames)
    kept = [r for r in results if r.status == "kept"]
    return {
        "clips": len(results), "kept_clips": len(kept), "dropped_clips": len(results) - len(kept),
        "kept_minutes": round(sum(r.kept_seconds for r in kept) / 60.0, 3),
        "by_split": _group(results, "split"), "by_speaker": _group(results, "speaker_id"),
        "frames_dropped": {r.value: frames.get(r.value, 0) for r in FRAME_REASONS},
        "frames_in_dropped_clips": sum(r.frames for r in results if r.status != "kept"),
        "clips_dropped": dict(Counter(r.reason for r in results if r.status != "kept")),
        "captures": dict(Counter(r.capture for r in results)),
    }


def _table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def report_markdown(report: dict) -> str:
    """A readable ``report.md`` from the ``report.json`` content."""
    s = report["summary"]
    out = ["# prepare-motion report", "",
           f"{s['clips']} clips: {s['kept_clips']} kept ({s['kept_minutes']:.1f} min of kept frames), "
           f"{s['dropped_clips']} dropped. Captures: "
           + ", ".join(f"{n} {k}" for k, n in s["captures"].items()) + ".", ""]
    out += [f"- {note}" for note in report["notes"]] + ([""] if report["notes"] else [])
    for title, key in (("Per split", "by_split"), ("Per speaker", "by_speaker")):
        by_speaker = key == "by_speaker"
        header = ("name", "split") if by_speaker else ("name",)
        out += [f"## {title}", ""] + _table(
            (*header, "clips", "kept clips", "minutes", "kept minutes"),
            ((k, *([g["split"]] if by_speaker else []), g["clips"], g["kept_clips"], f"{g['minutes']:.2f}",
              f"{g['kept_minutes']:.2f}") for k, g in s[key].items())) + [""]
    out += ["## Frames dropped (first reason that applies; clips that decoded)", ""]
    out += _table(("reason", "frames"), s["frames_dropped"].items())
    out += ["", f"Frames of clips dropped whole: {s['frames_in_dropped_clips']}.", "", "## Clips dropped", ""]
    dropped = [c for c in report["clips"] if c["status"] != "kept"]
    out += _table(("clip", "split", "reason", "detail"),
                  ((c["stem"], c["split"] or "", c["reason"], c["message"]) for c in dropped)) if dropped \
        else ["none"]
    out += ["", "## Thresholds", ""] + [f"- {k}: {v}" for k, v in report["thresholds"].items()]
    return "\n".join(out) + "\n"


def write_report(out: Path, results: Sequence[ClipResult], notes: Sequence[str],
                 options: dict[str, object]) -> dict:
    """Write ``report.json`` and ``report.md`` in ``out``; returns the report."""
    report = {"version": MOTION_VERSION, "options": options, "thresholds": thresholds(), "notes": list(notes),
              "summary": summarize(results), "clips": [asdict(r) for r in results]}
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(report, indent=1, default=_json_float))
    (out / "report.md").write_text(report_markdown(report))
    return report


def _json_float(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(type(value).__name__)


def summary_line(report: dict, out: Path) -> str:
    """One line: clips kept and dropped, minutes kept per split, frames dropped per reason."""
    s = report["summary"]
    splits = ", ".join(f"{k} {g['kept_minutes']:.1f} min" for k, g in s["by_split"].items())
    frames = ", ".join(f"{k} {n}" for k, n in s["frames_dropped"].items() if n)
    return (f"prepare-motion: {s['kept_clips']}/{s['clips']} clips kept ({splits}); frames dropped: "
            f"{frames or 'none'}; {s['dropped_clips']} clips dropped; report {out / 'report.md'}")


def prepare_motion(inputs: Sequence[str | Path], out: str | Path, manifest: str | Path | None = None,
                   splits: Sequence[str] = DEFAULT_SPLITS, max_seconds: float | None = None,
                   force: bool = False, progress: bool = False) -> dict:
    """Prepare every clip named by ``inputs`` (video files or folders) into ``out``; returns the report
    (also written to ``out/report.json`` and ``out/report.md``). Raises ``AvatarError`` for bad inputs."""
    from tqdm import tqdm

    if max_seconds is not None and not max_seconds > 0:
        raise ConfigError(f"--max-seconds must be positive, got {max_seconds}")
    sources, notes = discover_clips(inputs, manifest, splits)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    bar = tqdm(sources, desc="prepare-motion", unit="clip", disable=not progress)
    for source in bar:
        bar.set_postfix_str(source.stem[:32], refresh=False)
        results.append(prepare_clip(source, out, max_seconds, force))
    options = {"inputs": [str(p) for p in inputs], "manifest": str(manifest) if manifest else None,
               "splits": list(splits), "max_seconds": max_seconds, "force": force}
    return write_report(out, results, notes, options)
