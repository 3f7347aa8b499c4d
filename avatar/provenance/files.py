"""Look for the mark in files: still images (anything OpenCV reads) and videos (anything PyAV decodes).

A video's frames are soft-voted: their channel statistics are averaged and decoded once. Because a
file may join several renders (each with its own payload), runs of ``SEGMENT_FRAMES`` frames are
also judged on their own; the strongest result wins and its false-alarm bound is multiplied by the
number of judgements made (Bonferroni), so the bound stays honest.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from avatar.errors import AvatarError
from avatar.provenance.detect import Detection, channel_statistics, decide, detect, with_tests
from avatar.provenance.layout import DEFAULT_KEY

SEGMENT_FRAMES = 50
"""Frames per separately judged run of a video (2 s at 25 fps)."""
MIN_SIDE = 16
TEXT_CODECS = frozenset({"ansi", "bintext", "xbin", "idf"})
"""FFmpeg 'video' codecs that render text files as pictures: a text file is not a video to check."""


class MediaError(AvatarError):
    """The file to check cannot be used: missing, not an image or a video, or too small."""


def load_image(path: Path) -> np.ndarray | None:
    """uint8 RGB (h, w, 3) of a still image, or None when OpenCV cannot read ``path`` as one."""
    data = np.fromfile(str(path), dtype=np.uint8)
    if data.size == 0:
        return None
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        return None
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def video_statistics(path: Path, key: int = DEFAULT_KEY, max_frames: int = 300) -> np.ndarray:
    """float64 (frames, CHANNELS) channel statistics of up to ``max_frames`` evenly spread video frames.

    Raises ``MediaError`` when ``path`` is not a decodable video.
    """
    import av

    rows: list[np.ndarray] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path.name} is neither an image nor a video")
            stream = container.streams.video[0]
            if stream.codec_context.name in TEXT_CODECS:
                raise MediaError(f"{path.name} is neither an image nor a video")
            total = int(stream.frames or 0)
            stride = max(1, math.ceil(total / max_frames)) if total > max_frames else 1
            for index, frame in enumerate(container.decode(stream)):
                if index % stride:
                    continue
                if min(frame.width, frame.height) < MIN_SIDE:
                    size = f"{frame.width}x{frame.height}"
                    raise MediaError(f"{path.name} is too small ({size}) to carry a mark")
                rows.append(channel_statistics(frame.to_ndarray(format="rgb24"), key))
                if len(rows) >= max_frames:
                    break
    except MediaError:
        raise
    except (av.error.FFmpegError, ValueError, OSError, IndexError, UnicodeDecodeError):
        raise MediaError(f"{path.name} is neither an image nor a video that can be decoded") from None
    if not rows:
        raise MediaError(f"{path.name} contains no video frames")
    return np.stack(rows)


def judge_video(statistics: np.ndarray, key: int = DEFAULT_KEY) -> Detection:
    """Soft-vote (frames, CHANNELS) statistics over the whole video and over each segment."""
    frames = statistics.shape[0]
    candidates = [decide(statistics.mean(axis=0), key, frames=frames)]
    if frames > SEGMENT_FRAMES:
        for start in range(0, frames, SEGMENT_FRAMES):
            part = statistics[start : start + SEGMENT_FRAMES]
            candidates.append(decide(part.mean(axis=0), key, frames=part.shape[0]))
    best = min(candidates, key=lambda d: d.log10_p_false)
    if len(candidates) > 1:
        runs = f"whole video and {SEGMENT_FRAMES}-frame runs"
        best.notes.append(f"best of {len(candidates)} judgements ({runs})")
    return with_tests(best, len(candidates))


def detect_video(path: str | Path, key: int = DEFAULT_KEY, max_frames: int = 300) -> Detection:
    """Look for the mark in a video file, soft-voting over up to ``max_frames`` frames."""
    path = _existing(path)
    return judge_video(video_statistics(path, key, max_frames), key)


def detect_file(path: str | Path, key: int = DEFAULT_KEY, max_frames: int = 300) -> Detection:
    """Look for the mark in an image or video file. Raises ``MediaError`` with a one-line reason."""
    path = _existing(path)
    image = load_image(path)
    if image is None:
        return judge_video(video_statistics(path, key, max_frames), key)
    if min(image.shape[:2]) < MIN_SIDE:
        raise MediaError(f"{path.name} is too small ({image.shape[1]}x{image.shape[0]}) to carry a mark")
    return detect(image, key)


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise MediaError(f"file not found: {path}")
    if not path.is_file():
        raise MediaError(f"not a file: {path}")
    return path
