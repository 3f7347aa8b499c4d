"""EmoConfig: typed frozen sections, defaults, one-line errors naming section.key, JSON round trip."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from avatar.emo.config import (
    CONFIG_DIR,
    SECTIONS,
    AutoencoderKind,
    EmoConfig,
    SchedulerKind,
    UnetSection,
    load_emo_config,
)
from avatar.errors import ConfigError

MODEL_CONFIGS = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if not p.stem.startswith("train_"))


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_every_shipped_yaml_loads_typed_and_round_trips(name):
    for toy in (False, True):
        cfg = load_emo_config(name, toy=toy)
        for section, cls in SECTIONS.items():
            assert isinstance(getattr(cfg, section), cls)
        assert isinstance(cfg.unet.block_out_channels, tuple)
        assert all(isinstance(c, int) for c in cfg.unet.block_out_channels)
        assert isinstance(cfg.sampler.scheduler, SchedulerKind)
        assert EmoConfig.from_dict(cfg.to_dict(), cfg.name) == cfg


def test_base512_is_the_sd15_layout():
    cfg = load_emo_config("base512")
    assert cfg.autoencoder.kind == AutoencoderKind.SD_VAE and cfg.latent_size == 64
    assert cfg.unet.block_out_channels == (320, 640, 1280, 1280)
    assert load_emo_config("base512", toy=True).face.crop_size == 64


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("unet: {block_out_chanels: [8, 16]}", r"unknown key unet\.block_out_chanels \(section unet has:"),
        ("speeds: {mode: audio}", "unknown section 'speeds'"),
        ("sampler: {steps: two}", r"sampler\.steps must be a number, got 'two'"),
        ("sampler: {steps: 2.5}", r"sampler\.steps must be a whole number"),
        ("sampler: {scheduler: euler}", r"sampler\.scheduler must be one of lcm, tcd, ddim, got 'euler'"),
        ("unet: {reference_concat: 'yes'}", r"unet\.reference_concat must be true or false"),
        ("unet: {block_out_channels: 32}", r"unet\.block_out_channels must be a list"),
        ("unet: {block_out_channels: [32, x]}", r"unet\.block_out_channels\[1\] must be a number"),
        ("face: {composite: moving}", r"face\.composite must be one of still, parametric"),
        ("window: {frames: 30}", r"window\.frames \+ motion_frames must be ≤ unet\.max_frames"),
        ("sampler: {audio_guidance: 0.5}", r"sampler\.audio_guidance must be in \[1, 20\]"),
        ("unet: {norm_num_groups: 7}", r"block_out_channels .* divisible by unet\.norm_num_groups \(7\)"),
        ("unet: {block_out_channels: [], attention_levels: []}", r"unet\.block_out_channels must be a non-"),
        ("sampler: {steps: 51}", r"sampler\.steps must be an integer in \[1, 50\] for scheduler lcm"),
        ("sampler: {scheduler: ddim, steps: 1001}", r"sampler\.steps must be an integer in \[1, 1000\]"),
        ("face: [1, 2]", "section 'face' must be a mapping"),
        ("face: {1: 2, feathr: 0.1}", r"unknown key face\.1 \(section face has:"),
    ],
)
def test_bad_yaml_is_a_one_line_error_naming_the_key(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_emo_config(_write(tmp_path, text))
    assert "\n" not in str(info.value) and "EMO config mine" in str(info.value)


def test_a_toy_section_that_is_not_a_mapping_is_a_one_line_error(tmp_path):
    with pytest.raises(ConfigError, match="section 'toy' must be a mapping"):
        load_emo_config(_write(tmp_path, "toy: 64"), toy=True)


def test_missing_keys_and_sections_take_the_defaults(tmp_path):
    cfg = load_emo_config(_write(tmp_path, "unet: {layers_per_block: 2}\n"))
    assert cfg.unet == dataclasses.replace(UnetSection(), layers_per_block=2)
    assert cfg.face.crop_size == 256 and cfg.sampler.steps == 2
    assert load_emo_config("tiny") == dataclasses.replace(cfg, unet=UnetSection(), name="tiny")


def test_sections_are_frozen_and_overrides_make_validated_copies():
    cfg = load_emo_config("tiny")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.sampler.steps = 4  # type: ignore[misc]
    faster = cfg.with_overrides(sampler={"steps": 1, "scheduler": "tcd"})
    assert faster.sampler.steps == 1 and faster.sampler.scheduler == SchedulerKind.TCD
    assert cfg.sampler.steps == 2  # the original is untouched
    with pytest.raises(ConfigError, match=r"unknown key sampler\.step "):
        cfg.with_overrides(sampler={"step": 1})
    with pytest.raises(ConfigError, match="unknown section"):
        cfg.with_overrides(samplers={"steps": 1})


def test_json_form_is_plain():
    data = load_emo_config("demo").to_dict()
    assert data["unet"]["block_out_channels"] == [32, 64, 128]
    assert data["sampler"]["scheduler"] == "lcm" and type(data["sampler"]["scheduler"]) is str
