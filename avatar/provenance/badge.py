"""A small visible "AI-generated" label drawn into frames (``python -m avatar render --badge``)."""

from __future__ import annotations

import cv2
import numpy as np

from avatar.engine import AudioWindow, EngineSession, Frame

BADGE_TEXT = "AI-generated"


def draw_badge(image: np.ndarray, text: str = BADGE_TEXT) -> np.ndarray:
    """Draw ``text`` in white on a dark box in the bottom-left corner of an RGB uint8 (h, w, 3) image.

    The text height is about 4% of the image height (at least 8 px). Returns the same array, modified.
    """
    h, w = image.shape[:2]
    scale = max(0.3, h / 700)
    thickness = max(1, round(h / 400))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    pad = max(2, h // 128)
    x0, y1 = pad, h - pad
    y0, x1 = y1 - th - base - 2 * pad, min(w - 1, x0 + tw + 2 * pad)
    box = image[y0:y1, x0:x1]
    box[:] = (box.astype(np.float32) * 0.35).astype(np.uint8)
    cv2.putText(image, text, (x0 + pad, y1 - pad - base), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (255, 255, 255), thickness, cv2.LINE_AA)
    return image


class BadgedSession(EngineSession):
    """Draws the badge on every frame ``inner`` returns."""

    def __init__(self, inner: EngineSession) -> None:
        self.inner = inner

    def process(self, window: AudioWindow) -> list[Frame]:
        frames = self.inner.process(window)
        for frame in frames:
            frame.image = draw_badge(np.ascontiguousarray(frame.image))
        return frames

    def interrupt(self) -> None:
        self.inner.interrupt()

    def close(self) -> None:
        self.inner.close()
