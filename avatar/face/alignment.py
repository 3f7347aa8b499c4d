"""Least-squares similarity alignment of landmark sets (Umeyama), batched over frames, any dimension."""

from __future__ import annotations

import numpy as np


def similarity_fit(source: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The similarity taking ``source`` points onto ``target`` points, per frame.

    ``source``, ``target``: (..., n, d) (d = 2 or 3). Returns ``(scale (...,), rotation (..., d, d),
    translation (..., d))`` with ``target ≈ scale * source @ rotation.T + translation``; ``rotation`` is
    proper (no reflection).
    """
    source = np.asarray(source, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    src_mean = source.mean(axis=-2, keepdims=True)
    dst_mean = target.mean(axis=-2, keepdims=True)
    a, b = source - src_mean, target - dst_mean
    u, sigma, vt = np.linalg.svd(np.swapaxes(b, -1, -2) @ a)
    sign = np.sign(np.linalg.det(u @ vt))
    sign = np.where(sign == 0, 1.0, sign)
    flip = np.ones(sigma.shape)
    flip[..., -1] = sign
    rotation = (u * flip[..., None, :]) @ vt
    variance = (a**2).sum(axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = (sigma * flip).sum(axis=-1) / variance
    translation = (
        dst_mean[..., 0, :] - scale[..., None] * (src_mean @ np.swapaxes(rotation, -1, -2))[..., 0, :]
    )
    return scale, rotation, translation
