"""Reading evaluation inputs: portraits (RGB images) and real videos (frames with timestamps)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from avatar.errors import AvatarError, PortraitError


def read_image(path: str | Path) -> np.ndarray:
    """RGB uint8 (h, w, 3) of the image at ``path``. Raises ``PortraitError`` if it cannot be read."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise PortraitError(f"portrait file not found: {path}")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise PortraitError(f"cannot read portrait image {path.name}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def video_fps(path: str | Path) -> float:
    """Average frame rate of the first video stream of ``path`` (25.0 when the file does not say)."""
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise AvatarError(f"no video stream in {Path(path).name}")
            stream = container.streams.video[0]
            rate = stream.guessed_rate or stream.average_rate
            return float(rate) if rate else 25.0
    except (av.error.FFmpegError, OSError) as exc:
        raise AvatarError(f"cannot open video {Path(path).name}: {exc.__class__.__name__}") from None


def read_video(path: str | Path, max_seconds: float | None = None) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(time_seconds, rgb_uint8 (h, w, 3))`` for each frame of the first video stream (times on
    the container's clock, the one its audio uses), up to ``max_seconds``.

    Raises ``AvatarError`` (one line) for missing or undecodable files."""
    import av

    path = Path(path)
    if not path.is_file():
        raise AvatarError(f"video file not found: {path}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise AvatarError(f"no video stream in {path.name}")
            stream = container.streams.video[0]
            rate = float(stream.guessed_rate or stream.average_rate or 25.0)
            for index, frame in enumerate(container.decode(video=0)):
                time = float(frame.time) if frame.time is not None else index / rate
                if max_seconds is not None and time >= max_seconds:
                    break
                yield time, frame.to_ndarray(format="rgb24")
    except (av.error.FFmpegError, OSError) as exc:
        raise AvatarError(f"cannot decode video {path.name}: {exc.__class__.__name__}") from None
