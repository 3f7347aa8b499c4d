"""The pieces of the EMO GPU path that a CPU can check: the projected reference bank changes nothing,
autocast runs, and benchmarks/emo_gpu.py runs at toy size and says it is not a GPU number."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatar.emo.attention import ReferenceKeyValues
from avatar.emo.testing import drawn_face, make_pipeline, speech_like

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def pipe():
    return make_pipeline(seed=0, trained_like=True)


def _window(pipe, reference, **kwargs):
    tokens = pipe.audio_tokens(speech_like(1.0), 0, 0, 6, 25.0)
    motion = reference.latent.repeat(2, 1, 1, 1)
    return pipe(reference, tokens, list(range(6)), motion, seed=1, **kwargs)


def test_projected_reference_bank_gives_the_same_frames(pipe):
    image, mask = drawn_face(64)
    reference = pipe.encode_reference(image, mask)
    projected = pipe.project_reference(reference)
    assert all(isinstance(entry, ReferenceKeyValues) for entry in projected.bank)
    assert pipe.project_reference(projected).bank == projected.bank  # projecting twice is a no-op
    plain, cached = _window(pipe, reference), _window(pipe, projected)
    torch.testing.assert_close(cached.latents, plain.latents, rtol=1e-5, atol=1e-6)
    assert np.abs(cached.images.astype(int) - plain.images.astype(int)).max() <= 1
    # the projection is the layer's own: another reference gives other frames
    other = pipe.project_reference(pipe.encode_reference(drawn_face(64, seed=4)[0], mask))
    assert not torch.allclose(_window(pipe, other).latents, plain.latents)


def test_bf16_autocast_window_is_close_to_float32(pipe):
    image, mask = drawn_face(64)
    reference = pipe.project_reference(pipe.encode_reference(image, mask))
    full = _window(pipe, reference, output_type="latent").latents
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = _window(pipe, reference, output_type="latent").latents
    assert half.dtype == torch.float32 and torch.isfinite(half).all()
    assert (half - full).abs().mean() < 0.05 * full.abs().mean()


def test_gpu_benchmark_runs_at_toy_size_on_the_cpu_and_says_so(capsys):
    from benchmarks import emo_gpu

    args = emo_gpu.parse_args(["--device", "cpu", "--windows", "1", "--warmup", "0", "--steps", "1",
                               "--threads", "1"])
    result = emo_gpu.run(args)
    assert result["toy"] and not result["gpu_numbers"] and result["device"] == "cpu"
    assert result["config"] == "base512-toy" and result["region"] == "64x64" and result["steps"] == 1
    assert result["fps"] > 0 and result["first_window_warm_ms"] > 0
    assert {"audio", "motion_frames", "unet", "decode"} <= set(result["stage_ms_per_window"])
    assert "NO CUDA DEVICE" in emo_gpu.report(result)
    with pytest.raises(SystemExit):
        emo_gpu.parse_args(["--steps", "8"])  # more than the few-step student's 4
    capsys.readouterr()
