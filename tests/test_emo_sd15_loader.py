"""base512 initialisation from SD1.5 / AnimateDiff / SD-VAE layouts, on tiny random files of that layout."""

from __future__ import annotations

import pytest
import torch
from diffusers import MotionAdapter, UNet2DConditionModel
from safetensors.torch import save_file

from avatar.emo.checkpoint import build_pipeline
from avatar.emo.config import load_emo_config
from avatar.emo.sd15_loader import convert_animatediff_keys, init_from_sd15, read_state_dict
from avatar.errors import ConfigError

torch.set_num_threads(1)  # tiny models: one thread is fastest on the shared 2-core box


@pytest.fixture(scope="module")
def toy():
    cfg = load_emo_config("base512", toy=True)
    return cfg, build_pipeline(cfg, seed=0)


def _tiny_sd15_unet(cfg) -> UNet2DConditionModel:
    u = cfg.unet
    torch.manual_seed(1)
    return UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=tuple(u.block_out_channels),
        layers_per_block=u.layers_per_block,
        norm_num_groups=u.norm_num_groups,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
        cross_attention_dim=cfg.audio_projection.token_dim,
        attention_head_dim=u.num_attention_heads,
    )


def _to_original_animatediff(state):
    """diffusers MotionAdapter names → the original AnimateDiff names (what people have on disk)."""
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        i = parts.index("motion_modules") + 2
        k = ".".join(parts[:i] + ["temporal_transformer"] + parts[i:])
        if k.endswith("pos_embed.pe"):
            for n in (0, 1):
                out[k.replace("pos_embed.pe", f"attention_blocks.{n}.pos_encoder.pe")] = value.clone()
            continue
        for a, b in (
            ("attn1.", "attention_blocks.0."),
            ("attn2.", "attention_blocks.1."),
            ("norm1.", "norms.0."),
            ("norm2.", "norms.1."),
            ("norm3.", "ff_norm."),
        ):
            k = k.replace(f"transformer_blocks.0.{a}", f"transformer_blocks.0.{b}")
        out[k] = value
    return out


def test_sd15_unet_layout_maps_into_backbone_and_reference_net(tmp_path, toy):
    cfg, pipe = toy
    sd = _tiny_sd15_unet(cfg).state_dict()
    save_file({k: v.contiguous() for k, v in sd.items()}, str(tmp_path / "unet.safetensors"))
    reports = init_from_sd15(pipe, unet=tmp_path / "unet.safetensors")
    back, ref = reports["backbone"], reports["reference_net"]
    assert back.skipped == [] and back.mismatched == [] and len(back.loaded) == len(sd)
    assert all("motion_modules" in k or "attn_speed" in k or "norm_speed" in k for k in back.not_covered)
    assert ref.mismatched == [] and ref.not_covered == []
    assert all(".attn2." in k or ".norm2." in k or k.startswith("conv_") for k in ref.skipped)
    key = "down_blocks.0.attentions.0.proj_in.weight"
    assert sd[key].ndim == 4
    assert torch.equal(pipe.backbone.state_dict()[key], sd[key][:, :, 0, 0])
    assert torch.equal(pipe.reference_net.state_dict()[key], sd[key][:, :, 0, 0])
    k2 = "up_blocks.3.attentions.2.transformer_blocks.0.attn2.to_k.weight"
    assert torch.equal(pipe.backbone.state_dict()[k2], sd[k2])


def test_animatediff_layouts_map_into_motion_modules(tmp_path, toy):
    cfg, pipe = toy
    u = cfg.unet
    torch.manual_seed(2)
    adapter = MotionAdapter(
        block_out_channels=tuple(u.block_out_channels),
        motion_layers_per_block=u.layers_per_block,
        motion_num_attention_heads=u.temporal_heads,
        motion_norm_num_groups=u.norm_num_groups,
        motion_max_seq_length=u.max_frames,
        use_motion_mid_block=True,
    )
    state = adapter.state_dict()
    for name, layout in (("diffusers", state), ("original", _to_original_animatediff(state))):
        path = tmp_path / f"mm_{name}.safetensors"
        save_file({k: v.contiguous() for k, v in layout.items()}, str(path))
        rep = init_from_sd15(pipe, motion_module=path)["motion_modules"]
        assert rep.mismatched == [], name
        assert all(k.endswith("pos_embed.pe") for k in rep.skipped), name
        assert all("speed" in k for k in rep.not_covered), name
        assert len(rep.loaded) == len([k for k in state if not k.endswith("pe")])
    key = "mid_block.motion_modules.0.transformer_blocks.0.attn1.to_q.weight"
    assert torch.equal(pipe.backbone.state_dict()[key], state[key])
    weight = torch.ones(2)
    converted = convert_animatediff_keys({
        "a.temporal_transformer.norms.0.weight": weight,
        "a.temporal_transformer.transformer_blocks.0.ff_norm.bias": weight,
        "a.temporal_transformer.transformer_blocks.0.attention_blocks.0.pos_encoder.pe": weight,
        "a.temporal_transformer.transformer_blocks.0.attention_blocks.1.pos_encoder.pe": weight,
        "a.temporal_transformer.transformer_blocks.0.attention_blocks.1.to_q.weight": weight,
    })
    assert sorted(converted) == [
        "a.norm1.weight",
        "a.transformer_blocks.0.attn2.to_q.weight",
        "a.transformer_blocks.0.norm3.bias",
        "a.transformer_blocks.0.pos_embed.pe",  # the second attention's table is dropped (shared)
    ]
    assert all(value is weight for value in converted.values())


def test_sd_vae_layout_and_bad_files(tmp_path, toy):
    cfg, pipe = toy
    vae_state = {k: v.clone() + 0.01 for k, v in pipe.autoencoder.state_dict().items()}
    save_file(vae_state, str(tmp_path / "vae.safetensors"))
    rep = init_from_sd15(pipe, vae=tmp_path / "vae.safetensors")["autoencoder"]
    assert rep.mismatched == [] and rep.not_covered == []
    k = next(iter(vae_state))
    assert torch.equal(pipe.autoencoder.state_dict()[k], vae_state[k])
    save_file({"model.diffusion_model.x": torch.zeros(1)}, str(tmp_path / "ldm.safetensors"))
    with pytest.raises(ConfigError, match="original LDM"):
        read_state_dict(tmp_path / "ldm.safetensors")
    with pytest.raises(ConfigError, match="not found"):
        read_state_dict(tmp_path / "missing.safetensors")
