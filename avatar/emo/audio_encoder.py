"""Audio features per video frame: a light log-mel encoder (default) or a local ``Wav2Vec2Model``,
and the projection that turns frames f−m … f+m into audio tokens for frame f.

Timeline: frame f covers samples [round(f·16000/fps), +round(16000/fps)) (``avatar.engine``).
The mel encoder looks only at each frame's own samples, so frame f's tokens depend exactly on the audio
of frames f−m … f+m. The Wav2Vec2 encoder sees the whole span it is given (transformer context).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from avatar.engine import SAMPLE_RATE
from avatar.errors import ConfigError


def frame_segments(
    samples: torch.Tensor, start_sample: int, first_frame: int, num_frames: int, fps: float
) -> torch.Tensor:
    """Cut (num_frames, round(16000/fps)) per-frame sample rows; samples outside ``samples`` read as 0."""
    spf = SAMPLE_RATE / fps
    length = round(spf)
    starts = torch.tensor(
        [round(f * spf) - start_sample for f in range(first_frame, first_frame + num_frames)]
    )
    idx = starts[:, None] + torch.arange(length)[None]
    if samples.numel() == 0:
        return torch.zeros(num_frames, length)
    valid = (idx >= 0) & (idx < samples.shape[0])
    return torch.where(valid, samples[idx.clamp(0, samples.shape[0] - 1)], 0.0)


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """HTK mel triangles, (n_mels, n_fft // 2 + 1), 0 Hz … Nyquist."""

    def hz_to_mel(hz):
        return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)

    def mel_to_hz(mel):
        return 700.0 * (10.0 ** (np.asarray(mel) / 2595.0) - 1.0)

    bins = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2), n_mels + 2))
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    up = (bins[None] - lo) / np.maximum(mid - lo, 1e-6)
    down = (hi - bins[None]) / np.maximum(hi - mid, 1e-6)
    return np.maximum(0.0, np.minimum(up, down)).astype(np.float32)


class MelAudioEncoder(ModelMixin, ConfigMixin):
    """Per-frame log-mel (``sub_frames`` STFT frames inside each video frame) → features of several layers.

    ``encode(samples (n,), start_sample, first_frame, num_frames, fps)`` → (num_frames, num_layers, hidden).
    """

    @register_to_config
    def __init__(self, n_mels: int = 40, sub_frames: int = 4, hidden: int = 128, num_layers: int = 3) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(n_mels)
        self.sub_layer = nn.Linear(n_mels, hidden)
        self.frame_layer = nn.Linear(sub_frames * hidden, hidden)
        self.layers = nn.ModuleList([nn.Linear(hidden, hidden) for _ in range(num_layers - 2)])
        self._fb_cache: dict[int, torch.Tensor] = {}

    @property
    def feature_layers(self) -> int:
        return int(self.config.num_layers)

    @property
    def feature_dim(self) -> int:
        return int(self.config.hidden)

    def log_mel(self, segments: torch.Tensor) -> torch.Tensor:
        """(frames, L) → (frames, sub_frames, n_mels). Each frame reflect-pads its own samples only."""
        s = self.config.sub_frames
        hop = segments.shape[1] // s
        win = 2 * hop
        padded = torch.nn.functional.pad(segments[:, None], (hop // 2, hop - hop // 2), mode="reflect")[:, 0]
        frames = padded.unfold(1, win, hop)[:, :s] * torch.hann_window(win, periodic=True)
        power = torch.fft.rfft(frames, dim=-1).abs().square()
        if win not in self._fb_cache:
            self._fb_cache[win] = torch.from_numpy(mel_filterbank(self.config.n_mels, win))
        return torch.log(power @ self._fb_cache[win].T + 1e-6)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """mel: (frames, sub_frames, n_mels) → (frames, num_layers, hidden)."""
        act = torch.nn.functional.silu
        h1 = act(self.sub_layer(self.norm(mel)))
        h = act(self.frame_layer(h1.flatten(1)))
        feats = [h1.mean(dim=1), h]
        for layer in self.layers:
            h = h + act(layer(h))
            feats.append(h)
        return torch.stack(feats, dim=1)

    def encode(
        self, samples: torch.Tensor, start_sample: int, first_frame: int, num_frames: int, fps: float
    ) -> torch.Tensor:
        seg = frame_segments(samples.float().cpu(), start_sample, first_frame, num_frames, fps)
        return self(self.log_mel(seg).to(self.device, self.dtype))  # the STFT runs on the CPU


class Wav2Vec2AudioEncoder(nn.Module):
    """Frozen ``transformers.Wav2Vec2Model`` from a local folder; hidden states of ``layers`` averaged over
    each video frame's span. ``encode`` has the same signature as ``MelAudioEncoder.encode``."""

    def __init__(self, path: str | Path, layers: tuple[int, ...] = (-1,)) -> None:
        super().__init__()
        from transformers import Wav2Vec2Model

        path = Path(path)
        if not (path / "config.json").is_file():
            raise ConfigError(
                f"no Wav2Vec2 model at {path} (expected config.json and weights; nothing is downloaded)"
            )
        try:
            self.model = Wav2Vec2Model.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot load the Wav2Vec2 model at {path}: {str(exc).splitlines()[0]}"
            ) from None
        self.model.eval().requires_grad_(False)
        self.layers = tuple(layers)

    @property
    def feature_layers(self) -> int:
        return len(self.layers)

    @property
    def feature_dim(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.no_grad()
    def encode(
        self, samples: torch.Tensor, start_sample: int, first_frame: int, num_frames: int, fps: float
    ) -> torch.Tensor:
        spf = SAMPLE_RATE / fps
        seg = frame_segments(samples.float(), start_sample, first_frame, num_frames, fps).reshape(-1)
        x = (seg - seg.mean()) / (seg.std() + 1e-7)
        out = self.model(x[None].to(self.model.dtype), output_hidden_states=True)
        hidden = torch.stack([out.hidden_states[i][0] for i in self.layers], dim=1)  # (T', L, D)
        # resample the encoder rate (≈50 Hz) to video frames by averaging positions inside each frame
        t = hidden.shape[0]
        pos = (torch.arange(t, dtype=torch.float32) + 0.5) * seg.shape[0] / t
        frame_of = (pos / round(spf)).long().clamp(0, num_frames - 1)
        sums = torch.zeros(num_frames, *hidden.shape[1:]).index_add_(0, frame_of, hidden.float())
        counts = torch.bincount(frame_of, minlength=num_frames).clamp(min=1).float()
        return sums / counts[:, None, None]


class AudioProjection(ModelMixin, ConfigMixin):
    """features (frames + 2·context, layers, dim) → tokens (frames, 2·context+1, token_dim): frame f gets
    one token per neighbour f−context … f+context (per-neighbour MLP + learned position)."""

    @register_to_config
    def __init__(
        self, feature_layers: int = 3, feature_dim: int = 128, context: int = 2, token_dim: int = 768
    ):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(feature_layers * feature_dim, token_dim), nn.SiLU(), nn.Linear(token_dim, token_dim)
        )
        self.position = nn.Parameter(torch.zeros(2 * context + 1, token_dim))
        self.norm = nn.LayerNorm(token_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        k = 2 * self.config.context + 1
        per_frame = self.mlp(features.flatten(1))  # (frames + 2c, token_dim)
        windows = per_frame.unfold(0, k, 1).transpose(-1, -2)  # (frames, k, token_dim)
        return self.norm(windows + self.position)
