"""EMO checkpoints (avatar/emo/checkpoint.py): round trip, stored config, and the engine refusing weights
that do not fit its config with one line, on tiny weights made here."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from avatar.emo.checkpoint import CHECKPOINT_META, WEIGHTS, build_pipeline, load_checkpoint, save_checkpoint
from avatar.emo.engine import EmoEngine
from avatar.emo.testing import micro_config, randomize_zero_layers
from avatar.errors import ConfigError

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    pipe = build_pipeline(micro_config(), seed=3)
    randomize_zero_layers(pipe)
    return save_checkpoint(pipe, tmp_path_factory.mktemp("emo") / "ckpt", training_steps=7)


def _copy(saved: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(saved, tmp_path / "copy"))


def _refusal(checkpoint: Path, config=None) -> str:
    with pytest.raises(ConfigError) as info:
        EmoEngine(size=128, config=config or micro_config(), checkpoint=checkpoint)
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_round_trip_keeps_every_tensor_and_the_config(saved):
    pipe = build_pipeline(micro_config(), seed=3)
    randomize_zero_layers(pipe)
    loaded = load_checkpoint(saved)  # no config given: the one stored in emo.json
    assert loaded.config == micro_config().with_overrides() and loaded.training_steps == 7
    for name, module in pipe.trainable_modules().items():
        theirs = loaded.trainable_modules()[name].state_dict()
        assert all(torch.equal(t, theirs[k]) for k, t in module.state_dict().items()), name
    meta = json.loads((saved / CHECKPOINT_META).read_text())
    assert meta["config"]["unet"]["block_out_channels"] == [16, 32, 32]
    assert (saved / "backbone" / "config.json").is_file()  # register_to_config: diffusers folders
    engine = EmoEngine(size=128, config=micro_config(), checkpoint=saved)
    assert engine.pipeline.training_steps == 7


def test_engine_refuses_a_config_that_shapes_other_weights(saved):
    other = micro_config().with_overrides(speed_encoder={"dim": 16})
    message = _refusal(saved, other)
    assert message == (
        "checkpoint ckpt does not fit config tiny: speed_encoder.dim is 8 in the checkpoint but 16 in the "
        "config"
    )
    shifted = micro_config().with_overrides(face={"crop_shift": 0.28})  # trained on another part of the face
    assert "face.crop_shift" in _refusal(saved, shifted)
    # keys that do not shape the weights may differ
    assert EmoEngine(size=128, config=micro_config().with_overrides(face={"feather": 0.3}), checkpoint=saved)


def test_engine_refuses_tensors_that_do_not_fit_although_emo_json_agrees(saved, tmp_path):
    ckpt = _copy(saved, tmp_path)
    path = ckpt / "audio_projection" / WEIGHTS
    state = load_file(str(path))
    name = sorted(state)[0]
    state[name] = torch.zeros(3, 3)
    save_file(state, str(path))
    message = _refusal(ckpt)
    assert "audio_projection does not fit config tiny" in message
    assert "1 mis-shaped" in message and name in message
    del state[name]
    save_file(state, str(path))
    assert "1 missing" in _refusal(ckpt)


def test_engine_refuses_incomplete_or_damaged_checkpoints(saved, tmp_path):
    ckpt = _copy(saved, tmp_path)
    shutil.rmtree(ckpt / "face_locator")
    assert f"lacks face_locator/{WEIGHTS}" in _refusal(ckpt)
    (ckpt / CHECKPOINT_META).write_text("{not json")
    assert "emo.json is not valid JSON" in _refusal(ckpt)
    (ckpt / CHECKPOINT_META).write_text(json.dumps({"config": {"autoencoder": {"latent_chanels": 4}}}))
    assert "unknown key autoencoder.latent_chanels" in _refusal(ckpt)
    (ckpt / CHECKPOINT_META).write_text(json.dumps({"training_steps": "many", "config": {}}))
    assert "training_steps must be a whole number" in _refusal(ckpt)
    (ckpt / CHECKPOINT_META).unlink()
    assert "not an EMO checkpoint" in _refusal(ckpt)
    (ckpt / CHECKPOINT_META).write_text((saved / CHECKPOINT_META).read_text())
    (ckpt / "face_locator").mkdir()
    (ckpt / "face_locator" / WEIGHTS).write_bytes(b"not safetensors")
    assert "cannot read" in _refusal(ckpt)


def test_a_damaged_stored_config_names_the_checkpoint(saved, tmp_path):
    ckpt = _copy(saved, tmp_path)
    meta = json.loads((ckpt / CHECKPOINT_META).read_text())
    meta["config"]["sampler"]["steps"] = 99  # more than lcm's 50
    (ckpt / CHECKPOINT_META).write_text(json.dumps(meta))
    where = r"^checkpoint copy \(emo\.json\): EMO config tiny: sampler\.steps"
    with pytest.raises(ConfigError, match=where) as info:
        load_checkpoint(ckpt)  # no config given: the stored one is validated
    assert "\n" not in str(info.value)


def test_shipped_demo_checkpoint_written_before_the_typed_config_still_fits():
    """avatar/assets/emo_demo/emo.json holds only the keys its sections had then; defaults fill the rest."""
    from avatar.emo.engine import DEMO_CHECKPOINT

    meta = json.loads((DEMO_CHECKPOINT / CHECKPOINT_META).read_text())
    assert "block_out_channels" not in meta["config"]["autoencoder"]
    pipe = load_checkpoint(DEMO_CHECKPOINT)
    assert pipe.config.face.crop_size == 80 and pipe.training_steps == meta["training_steps"]
