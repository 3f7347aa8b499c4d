"""Provenance: an invisible mark in every generated frame, and the detector that reads it back.

Marking (live or offline)::

    from avatar.provenance import Payload, Watermarker

    marker = Watermarker()                      # one per process is enough; thread-safe once prepared
    payload = Payload.create()                  # random 24-bit session id, start minute = now
    marker.prepare(payload, height, width)      # optional: pays the ~5 ms set-up outside the hot path
    marked = marker.embed(frame_rgb, payload)   # uint8 (h, w, 3) -> same; ~0.1 ms at 512x512

Checking::

    from avatar.provenance import detect, detect_file
    detection = detect(image_rgb)               # .found .confidence .payload .bit_accuracy
    detection = detect_file("clip.mp4")         # images or videos; MediaError on bad input
"""

from avatar.provenance.detect import Detection, detect, detect_frames
from avatar.provenance.files import MediaError, detect_file, detect_video
from avatar.provenance.layout import DEFAULT_KEY
from avatar.provenance.payload import Payload
from avatar.provenance.watermark import DEFAULT_STRENGTH, Watermarker

__all__ = [
    "DEFAULT_KEY",
    "DEFAULT_STRENGTH",
    "Detection",
    "MediaError",
    "Payload",
    "Watermarker",
    "detect",
    "detect_file",
    "detect_frames",
    "detect_video",
]
