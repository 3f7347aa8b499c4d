"""Evaluation harness (``python -m avatar eval``): lip sync, identity, stability, life and speed measures
of engines on portrait + audio cases, with the same measures on real talking clips as reference values.

Modules: ``sync`` (speech envelope, lagged correlation, per-frame VAD), ``mouth_track`` (face mesh,
mouth openness), ``identity`` (dlib embeddings), ``stability`` (background flicker, landmark jitter),
``life`` (blinks, head motion, mouth rest), ``reenactment`` (output vs the real video: mouth r, width r,
lip closures, LMD, head-motion ratios), ``analysis`` (per-clip measures), ``cases`` (inputs, including
one self-reenactment case per real clip of a manifest split),
``media`` (image/video reading), ``harness`` (running engines), ``report`` (markdown, JSON, plots).
Heavy dependencies (mediapipe, dlib, matplotlib) are imported by the modules that need them.
"""
