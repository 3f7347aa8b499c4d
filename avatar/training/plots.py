"""Loss-curve and sample-grid PNGs (matplotlib Agg / OpenCV; no display)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def read_loss_log(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``step,loss`` CSV → (steps, losses)."""
    if not path.is_file():
        return np.zeros(0), np.zeros(0)
    rows = [line.split(",") for line in path.read_text().splitlines()[1:] if line.strip()]
    data = np.array([(float(s), float(v)) for s, v in rows]) if rows else np.zeros((0, 2))
    return data[:, 0], data[:, 1]


def plot_loss(log: Path, out: Path, title: str) -> None:
    """Raw loss (faint) and a moving average over ~5 % of the points, log-scale y."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, losses = read_loss_log(log)
    if len(steps) == 0:
        return
    width = max(1, len(losses) // 20)
    smooth = np.convolve(losses, np.ones(width) / width, mode="valid")
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(steps, losses, alpha=0.3, lw=0.8, label="loss")
    ax.plot(steps[width - 1 :], smooth, lw=1.6, label=f"mean of {width}")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def save_grid(
    rows: list[list[np.ndarray]], out: Path, labels: list[str] | None = None, cell: int = 128
) -> None:
    """uint8 RGB images (any size) in rows → one PNG; each row optionally labelled at its left edge."""
    width = max(len(r) for r in rows)
    canvas = np.full((len(rows) * cell, width * cell, 3), 255, np.uint8)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            canvas[i * cell : (i + 1) * cell, j * cell : (j + 1) * cell] = cv2.resize(
                image, (cell, cell), interpolation=cv2.INTER_AREA
            )
        if labels:
            cv2.putText(
                canvas, labels[i], (3, i * cell + 12), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1
            )
    cv2.imwrite(str(out), canvas[..., ::-1])


def to_uint8(images) -> np.ndarray:
    """torch/numpy (n, 3, S, S) in [-1, 1] → uint8 (n, S, S, 3)."""
    x = np.asarray(images.detach().cpu().float() if hasattr(images, "detach") else images)
    return ((np.moveaxis(x, 1, -1) + 1.0) * 127.5).round().clip(0, 255).astype(np.uint8)
