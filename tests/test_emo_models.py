"""EMO models: shapes through every block, save/load, audio locality, motion frames, determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatar.emo.audio_encoder import AudioProjection, MelAudioEncoder, Wav2Vec2AudioEncoder
from avatar.emo.backbone import EmoBackbone
from avatar.emo.checkpoint import build_pipeline, load_checkpoint, save_checkpoint
from avatar.emo.pipeline import EmoPipeline, ReferenceState
from avatar.emo.reference_net import ReferenceNet
from avatar.emo.speed_encoder import SpeedEncoder
from avatar.emo.testing import drawn_face, make_pipeline, micro_config, randomize_zero_layers, speech_like
from avatar.errors import ConfigError

torch.set_num_threads(1)  # tiny models: one thread is fastest on the shared 2-core box


@pytest.fixture(scope="module")
def pipe() -> EmoPipeline:
    return make_pipeline(seed=3, trained_like=True)


@pytest.fixture(scope="module")
def reference(pipe):
    img, mask = drawn_face(64)
    return pipe.encode_reference(img, mask)


def _tokens(pipe, audio, first=0, frames=6):
    return pipe.audio_tokens(audio, 0, first, frames, 25.0)


def test_shapes_through_every_block(pipe, reference):
    cfg = pipe.config
    chans = cfg.unet.block_out_channels
    lat = cfg.latent_size
    assert reference.latent.shape == (1, cfg.latent_channels, lat, lat)
    assert reference.face_features.shape == reference.latent.shape
    # bank: one entry per attention layer, (1, h·w, c) at that layer's resolution
    expected_bank = []
    for i, c in enumerate(chans):  # down path, 1 layer per block
        expected_bank.append((1, (lat // 2**i) ** 2, c))
    expected_bank.append((1, (lat // 2 ** (len(chans) - 1)) ** 2, chans[-1]))  # mid
    for i, c in enumerate(reversed(chans)):  # up path, 2 layers per block
        r = lat // 2 ** (len(chans) - 1 - i)
        expected_bank += [(1, r * r, c)] * 2
    assert [tuple(b.shape) for b in reference.bank] == expected_bank

    motion = pipe.encode_motion(torch.randn(2, cfg.latent_channels, lat, lat))
    assert len(motion) == len(expected_bank)
    for feat, (_, hw, c) in zip(motion, expected_bank, strict=True):
        side = int(hw**0.5)
        assert tuple(feat.shape) == (1, 2, c, side, side)

    audio = speech_like(1.0)
    tokens = _tokens(pipe, audio)
    m = cfg.window.audio_context
    assert tokens.shape == (6, 2 * m + 1, cfg.audio_projection.token_dim)
    trace = []
    speed = pipe.speed_tokens(torch.ones(6 + 2 * m))
    out = pipe.backbone(
        torch.randn(1, 6, 4, lat, lat),
        torch.tensor(500.0),
        tokens[None],
        reference.bank,
        motion,
        speed,
        reference.face_features,
        trace=trace,
    )
    assert out.shape == (1, 6, 4, lat, lat)
    assert torch.isfinite(out).all()
    shapes = [s for _, s in trace]
    assert shapes == [(6, c, int(hw**0.5), int(hw**0.5)) for _, hw, c in expected_bank[: len(chans) + 1]] + [
        (6, chans[-1], lat // 4, lat // 4)
    ] + [(6, c, int(hw**0.5), int(hw**0.5)) for _, hw, c in expected_bank[len(chans) + 1 :]]
    decoded = pipe.codec.decode(reference.latent)
    assert decoded.shape == (1, 3, cfg.face.crop_size, cfg.face.crop_size)


def test_component_save_load_bit_exact(tmp_path, pipe):
    for name, module in pipe.trainable_modules().items():
        module.save_pretrained(tmp_path / name)
        loaded = type(module).from_pretrained(tmp_path / name)
        a, b = module.state_dict(), loaded.state_dict()
        assert a.keys() == b.keys(), name
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name}.{key}"


def _same_window(*pipes: EmoPipeline) -> list[np.ndarray]:
    """uint8 frames of one 6-frame window (same portrait, audio, seed, motion frames) from each pipeline."""
    img, mask = drawn_face(64)
    audio = speech_like(1.0)
    outs = []
    for p in pipes:
        ref = p.encode_reference(img, mask)
        outs.append(p(ref, _tokens(p, audio), list(range(6)), ref.latent.repeat(2, 1, 1, 1), seed=1).images)
    return outs


def test_pipeline_round_trip_gives_identical_frames(tmp_path, pipe, reference):
    save_checkpoint(pipe, tmp_path / "ckpt", training_steps=5)
    loaded = load_checkpoint(tmp_path / "ckpt", pipe.config)
    assert loaded.training_steps == 5
    assert np.array_equal(*_same_window(pipe, loaded))


def test_reference_concat_feeds_the_reference_latent_to_every_frame():
    cfg = micro_config().with_overrides(unet={"reference_concat": True})
    pipe = build_pipeline(cfg, seed=0)
    randomize_zero_layers(pipe)
    assert pipe.backbone.conv_in.in_channels == 2 * cfg.latent_channels
    img, mask = drawn_face(64)
    other, _ = drawn_face(64, seed=5)
    audio = speech_like(1.0)
    ref = pipe.encode_reference(img, mask)
    moved = ReferenceState(pipe.encode_reference(other, mask).latent, ref.bank, ref.face_features)
    outs = [pipe(r, _tokens(pipe, audio), list(range(6)), None, seed=1).latents for r in (ref, moved)]
    assert not torch.equal(outs[0], outs[1])  # only the concatenated latent differs
    with pytest.raises(ValueError, match="reference_latent"):
        pipe.backbone(outs[0][None], 0.5, torch.zeros(1, 6, 5, 16), ref.bank)


def test_half_precision_checkpoint_is_smaller_and_close(tmp_path, pipe, reference):
    save_checkpoint(pipe, tmp_path / "full", training_steps=5)
    save_checkpoint(pipe, tmp_path / "half", training_steps=5, half=True)

    def size(root):
        return sum(f.stat().st_size for f in root.rglob("*.safetensors"))

    assert size(tmp_path / "half") < 0.6 * size(tmp_path / "full")
    loaded = load_checkpoint(tmp_path / "half", pipe.config)
    assert next(loaded.backbone.parameters()).dtype == torch.float32
    assert next(pipe.backbone.parameters()).dtype == torch.float32  # saving left the live model alone
    a, b = _same_window(pipe, loaded)
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.mean() < 2.0 and diff.max() < 40


def test_checkpoint_that_does_not_fit_is_a_config_error(tmp_path, pipe):
    save_checkpoint(pipe, tmp_path / "ckpt", training_steps=1)
    other = micro_config().with_overrides(unet={"block_out_channels": [16, 32, 64]})
    with pytest.raises(ConfigError, match="unet.block_out_channels"):
        load_checkpoint(tmp_path / "ckpt", other)
    # same config text but a tensor with the wrong shape
    from safetensors.torch import load_file, save_file

    path = tmp_path / "ckpt" / "speed_encoder" / "diffusion_pytorch_model.safetensors"
    state = load_file(str(path))
    state["position"] = torch.zeros(3, 3)
    save_file(state, str(path))
    with pytest.raises(ConfigError, match="does not fit"):
        load_checkpoint(tmp_path / "ckpt", pipe.config)
    with pytest.raises(ConfigError, match="not an EMO checkpoint"):
        load_checkpoint(tmp_path, pipe.config)


def test_audio_tokens_only_see_frames_within_context(pipe):
    m = pipe.config.window.audio_context
    audio = speech_like(1.0)
    base = _tokens(pipe, audio, 0, 12)
    f = 6
    changed = audio.copy()
    changed[: (f - m) * 640] = np.random.default_rng(1).standard_normal((f - m) * 640) * 0.3
    changed[(f + m + 1) * 640 :] = 0.0
    tok = _tokens(pipe, changed, 0, 12)
    assert torch.equal(tok[f], base[f])
    assert not torch.equal(tok[f - 1], base[f - 1]) and not torch.equal(tok[f + 1], base[f + 1])
    inside = audio.copy()
    inside[(f + m) * 640 + 100] += 0.5  # one sample of frame f+m
    assert not torch.equal(_tokens(pipe, inside, 0, 12)[f], base[f])


def test_frame_output_ignores_audio_outside_its_context_without_temporal_mixing():
    pipe = make_pipeline(seed=2, trained_like=False)  # fresh temporal modules are the identity
    img, mask = drawn_face(64)
    ref = pipe.encode_reference(img, mask)
    m = pipe.config.window.audio_context
    audio = speech_like(1.0)
    changed = audio.copy()
    changed[(2 + m + 1) * 640 :] *= -3.0
    outs = [
        pipe(ref, _tokens(pipe, a), list(range(6)), None, seed=0, output_type="latent").latents
        for a in (audio, changed)
    ]
    assert torch.equal(outs[0][2], outs[1][2])
    assert not torch.equal(outs[0][5], outs[1][5])


def test_motion_frames_change_the_output(pipe, reference):
    tokens = _tokens(pipe, speech_like(1.0))
    lat = reference.latent
    a = pipe(reference, tokens, list(range(6)), lat.repeat(2, 1, 1, 1), seed=0, output_type="latent").latents
    b = pipe(
        reference, tokens, list(range(6)), torch.randn(2, *lat.shape[1:]), seed=0, output_type="latent"
    ).latents
    again = pipe(
        reference, tokens, list(range(6)), lat.repeat(2, 1, 1, 1), seed=0, output_type="latent"
    ).latents
    assert torch.equal(a, again)
    assert (a - b).abs().max() > 1e-4


def test_audio_guidance_extrapolates_from_the_silent_prediction(pipe, reference):
    """One LCM step returns x̂0, linear in the Backbone output, so with guidance w the window's latents
    are silent + w·(voiced − silent): w = 3 lies twice as far beyond w = 1 as w = 1 lies beyond silence."""
    tokens = _tokens(pipe, speech_like(1.0))
    sampler = pipe.config.sampler

    def window(audio_tokens, guidance):
        pipe.configure_sampler(scheduler="lcm", audio_guidance=guidance)
        try:
            return pipe(
                reference,
                audio_tokens,
                list(range(6)),
                None,
                seed=0,
                num_inference_steps=1,
                output_type="latent",
            ).latents
        finally:
            pipe.configure_sampler(scheduler=sampler.scheduler, audio_guidance=sampler.audio_guidance)

    silent, voiced, guided = window(torch.zeros_like(tokens), 1.0), window(tokens, 1.0), window(tokens, 3.0)
    assert (voiced - silent).abs().max() > 1e-3
    torch.testing.assert_close(guided - voiced, 2 * (voiced - silent), atol=1e-4, rtol=1e-3)
    assert torch.equal(window(torch.zeros_like(tokens), 3.0), silent)


def test_seed_determinism_and_variation():
    img, mask = drawn_face(64)
    audio = speech_like(1.0)
    results = []
    for build_seed, noise_seed in ((5, 0), (5, 0), (5, 1), (6, 0)):
        pipe = make_pipeline(seed=build_seed, trained_like=True)
        ref = pipe.encode_reference(img, mask)
        results.append(pipe(ref, _tokens(pipe, audio), list(range(6)), None, seed=noise_seed).images)
    assert np.array_equal(results[0], results[1])
    assert not np.array_equal(results[0], results[2])
    assert not np.array_equal(results[0], results[3])


def test_speed_buckets_follow_the_formula():
    enc = SpeedEncoder(centers=(0.0, 2.0), radii=(1.0, 0.5), context=1, dim=4)
    w = torch.tensor([[0.5, 2.0, 3.0]])
    s = enc.buckets(w)
    expected = torch.tanh((w[..., None] - torch.tensor([0.0, 2.0])) / torch.tensor([1.0, 0.5]) * 3)
    assert torch.allclose(s, expected)
    assert enc(torch.zeros(2, 5)).shape == (2, 3, 3, 4)


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    kw = dict(
        in_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        attention_levels=(True, True),
        attention_head_dim=8,
        norm_num_groups=8,
    )
    net = EmoBackbone(out_channels=4, audio_dim=8, temporal_heads=2, max_frames=8, speed_dim=None, **kw)
    ref = ReferenceNet(**kw)
    x = torch.randn(1, 3, 4, 8, 8)
    bank = ref(torch.randn(1, 4, 8, 8)).bank
    bank = [b.detach() for b in bank]
    audio = torch.randn(1, 3, 5, 8)
    grads = []
    for flag in (False, True):
        net.zero_grad()
        if flag:
            net.enable_gradient_checkpointing()
        net.train()
        net(x, torch.tensor(10.0), audio, bank).square().mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_training_target_is_v(pipe):
    x0, noise, t = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8), torch.tensor([10, 900])
    v = pipe.training_target(x0, noise, t)
    a = pipe.scheduler.alphas_cumprod[t].sqrt().view(-1, 1, 1, 1)
    s = (1 - pipe.scheduler.alphas_cumprod[t]).sqrt().view(-1, 1, 1, 1)
    assert torch.allclose(v, a * noise - s * x0, atol=1e-5)


def test_wav2vec2_encoder_loads_from_a_tiny_local_folder(tmp_path):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    torch.manual_seed(0)
    cfg = Wav2Vec2Config(
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        conv_dim=(8, 8, 8, 8, 8, 8, 8),
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        do_stable_layer_norm=True,
        feat_extract_norm="layer",
    )
    Wav2Vec2Model(cfg).save_pretrained(tmp_path / "w2v")
    enc = Wav2Vec2AudioEncoder(tmp_path / "w2v", layers=(1, 2))
    feats = enc.encode(torch.from_numpy(speech_like(1.0)), 0, 0, 10, 25.0)
    assert feats.shape == (10, 2, 16) and torch.isfinite(feats).all()
    proj = AudioProjection(feature_layers=2, feature_dim=16, context=2, token_dim=8)
    assert proj(feats).shape == (6, 5, 8)
    conf = micro_config().with_overrides(
        audio_encoder={"kind": "wav2vec2", "path": str(tmp_path / "w2v"), "layers": [1, 2]}
    )
    pipe = build_pipeline(conf)
    assert pipe.audio_tokens(speech_like(1.0), 0, 0, 6, 25.0).shape == (6, 5, 16)
    with pytest.raises(ConfigError, match="no Wav2Vec2 model"):
        Wav2Vec2AudioEncoder(tmp_path / "missing")


def test_mel_encoder_is_finite_on_silence_and_clipping():
    enc = MelAudioEncoder(n_mels=16, hidden=8)
    for x in (np.zeros(8000, np.float32), np.ones(8000, np.float32)):
        f = enc.encode(torch.from_numpy(x), 0, 0, 5, 25.0)
        assert f.shape == (5, 3, 8) and torch.isfinite(f).all()
