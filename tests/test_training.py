"""Training, distillation and prepare-data on the micro EMO model with generated data only."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from avatar.emo.testing import micro_config
from avatar.errors import ConfigError
from avatar.training.data import prepare_videos
from avatar.training.dataset import ClipDataset
from avatar.training.settings import load_train_settings
from avatar.training.trainer import StageTrainer
from tests.emo_clips import write_drawn_clips
from tests.media import ASTRONAUT, vowel_bursts

CROP = 64


@pytest.fixture(scope="module", autouse=True)
def _threads():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def clip_data(tmp_path_factory) -> Path:
    """Two drawn 16-frame clips (``tests.emo_clips``): a moving bright square 'face' on noise, speech-like
    audio, boxes, speed."""
    return write_drawn_clips(tmp_path_factory.mktemp("clips"), crop=CROP)


@pytest.fixture(scope="module")
def settings():
    return load_train_settings(
        Path(__file__).parents[1] / "configs/emo/train_tiny.yaml", model=micro_config()
    )


def test_stage1_loss_decreases_on_fixed_batch(settings, clip_data, tmp_path):
    settings.stages[1] = {**settings.stages.get(1, {}), "lr": 2e-3, "batch": 4}
    trainer = StageTrainer(settings, 1, clip_data, tmp_path / "s1")
    batch = trainer._batch()
    losses = [trainer.train_step(batch) for _ in range(30)]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), losses


def test_stage0_autoencoder_loss_decreases(settings, clip_data, tmp_path):
    trainer = StageTrainer(settings, 0, clip_data, tmp_path / "s0")
    batch = trainer._batch()
    losses = [trainer.train_step(batch) for _ in range(30)]
    assert np.mean(losses[-5:]) < 0.92 * np.mean(losses[:5]), losses
    assert losses[-1] < losses[0]


def test_stages_only_train_their_layers(settings, clip_data, tmp_path):
    trainer = StageTrainer(settings, 3, clip_data, tmp_path / "s3")
    names = set(trainer.params)
    assert names and all(n.startswith(("backbone.", "speed_encoder.")) for n in names)
    assert all("motion_modules" in n for n in names if n.startswith("backbone."))
    before = {k: p.detach().clone() for k, p in trainer.pipe.reference_net.named_parameters()}
    trainer.train_step()
    assert all(torch.equal(before[k], p) for k, p in trainer.pipe.reference_net.named_parameters())


def test_checkpoint_loads_in_engine_and_resume_continues(settings, clip_data, tmp_path):
    from avatar.emo.engine import EmoEngine

    out = tmp_path / "s2"
    first = StageTrainer(settings, 2, clip_data, out).run(2, progress=False)
    assert first["steps"] == 2
    assert (out / "loss.png").is_file() and list(out.glob("samples_*.png"))
    engine = EmoEngine(config=micro_config(), checkpoint=first["checkpoint"], size=128)
    assert engine.pipeline.training_steps == 2
    resumed = StageTrainer(settings, 2, clip_data, out, resume=True)
    assert resumed.step == 2
    assert resumed.run(3, progress=False)["steps"] == 3
    meta = json.loads((out / "checkpoint" / "emo.json").read_text())
    assert meta["training_steps"] == 3


def test_untrained_checkpoint_is_refused(settings, clip_data, tmp_path):
    from avatar.emo.engine import EmoEngine

    trainer = StageTrainer(settings, 1, clip_data, tmp_path / "s1")
    ckpt = trainer.save()
    with pytest.raises(ConfigError, match="untrained"):
        EmoEngine(config=micro_config(), checkpoint=ckpt, size=128)


def test_distillation_step_changes_student(settings, clip_data, tmp_path):
    from avatar.training.distill import Distiller

    teacher = StageTrainer(settings, 2, clip_data, tmp_path / "t").run(1, progress=False)["checkpoint"]
    distiller = Distiller(settings, teacher, clip_data, tmp_path / "d", steps_student=2)
    before = [p.detach().clone() for p in distiller.student.parameters()]
    loss = distiller.train_step()
    assert np.isfinite(loss)
    changed = sum(not torch.equal(a, b) for a, b in zip(before, distiller.student.parameters(), strict=True))
    assert changed > 0
    ckpt = distiller.save()
    assert json.loads((tmp_path / "d" / "distill.json").read_text())["steps_student"] == 2
    assert json.loads((ckpt / "emo.json").read_text())["training_steps"] == 2

    more = Distiller(settings, teacher, clip_data, tmp_path / "d2", steps_student=2, student=tmp_path / "d")
    assert more.step == 1  # continues the earlier student and its step count
    pairs = zip(more.student.parameters(), distiller.student.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    more.train_step()
    assert json.loads((more.save() / "emo.json").read_text())["training_steps"] == 3


def test_audio_drop_hides_the_audio_from_the_video_loss(settings, clip_data, tmp_path):
    """audio_drop 1: every window trains with zeroed audio tokens (the silent branch guidance needs), so
    the loss no longer depends on the audio; with audio_drop 0 it does."""
    import dataclasses

    settings = copy.deepcopy(settings)

    from avatar.emo.testing import randomize_zero_layers

    def loss_pair(drop: float) -> tuple[float, float]:
        settings.stages[2] = {**settings.stages.get(2, {}), "audio_drop": drop}
        trainer = StageTrainer(settings, 2, clip_data, tmp_path / f"drop{drop}")
        randomize_zero_layers(trainer.pipe)  # fresh audio attention is zero: make the audio matter
        batch = trainer._batch()
        louder = [dataclasses.replace(e, audio=e.audio * 4.0 + 0.05) for e in batch]
        out = []
        for examples in (batch, louder):
            trainer.loss_fn.seed(1)
            out.append(float(trainer.loss_fn(examples)))
        return out[0], out[1]

    quiet, loud = loss_pair(1.0)
    assert quiet == loud
    quiet, loud = loss_pair(0.0)
    assert quiet != loud


def test_distillation_with_audio_guidance(settings, clip_data, tmp_path):
    """A guided teacher gives other consistency targets; the student then samples that ODE unguided."""
    from avatar.emo.testing import randomize_zero_layers
    from avatar.training.distill import Distiller
    from avatar.training.losses import fetch_batch
    from avatar.training.trainer import load_pipeline

    settings = copy.deepcopy(settings)
    ckpt = StageTrainer(settings, 2, clip_data, tmp_path / "t").run(1, progress=False)["checkpoint"]
    teacher = load_pipeline(settings, ckpt)
    randomize_zero_layers(teacher)  # fresh audio attention is zero: make the audio matter
    losses = {}
    for w in (1.0, 3.0):
        settings.distill = {**settings.distill, "audio_guidance": w}
        distiller = Distiller(settings, teacher, clip_data, tmp_path / f"d{w}", steps_student=2)
        examples = fetch_batch(distiller.data, 2, 2, np.random.default_rng(0), teacher.config.window)
        losses[w] = float(distiller.loss(examples))
    assert np.isfinite(losses[3.0]) and losses[3.0] != losses[1.0]
    assert distiller.student_pipeline().config.sampler.audio_guidance == 1.0
    assert distiller.teacher.config.sampler.audio_guidance == 3.0  # its sample-grid row is guided
    distiller.save()
    assert json.loads((tmp_path / "d3.0" / "distill.json").read_text())["teacher_audio_guidance"] == 3.0


def test_set_overrides_one_stage_or_distill_and_refuses_bad_pairs(settings, clip_data, tmp_path, capsys):
    from avatar.__main__ import main
    from avatar.training.settings import override_options

    settings = copy.deepcopy(settings)
    override_options(settings, 2, ["audio_drop=0.15", "lr = 2e-4"])
    override_options(settings, "distill", ["audio_guidance=3"])
    assert settings.stage(2)["audio_drop"] == 0.15 and settings.stage(2)["lr"] == 2e-4
    assert settings.stage(3)["audio_drop"] == 0.0
    assert settings.distill_options()["audio_guidance"] == 3
    bad_pairs = (("audio_guidance=3", "KEY one of"), ("audio_drop", "KEY=VALUE"), ("lr=fast", "number"))
    for bad, message in bad_pairs:
        with pytest.raises(ConfigError, match=message):
            override_options(settings, 2, [bad])
    override_options(settings, 2, ["audio_drop=1.5"])
    with pytest.raises(ConfigError, match=r"stages\.2\.audio_drop"):
        settings.stage(2)
    override_options(settings, "distill", ["audio_guidance=0.5"])
    with pytest.raises(ConfigError, match="distill.audio_guidance"):
        settings.distill_options()
    code = main(["train", "--stage", "2", "--data", str(clip_data), "--out", str(tmp_path / "x"),
                 "--init", str(tmp_path), "--set", "audio_drop=[1]"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "audio_drop" in err


def test_data_crop_size_mismatch_is_one_line_error(clip_data):
    with pytest.raises(ConfigError, match="64px crops"):
        ClipDataset(clip_data, crop_size=256)


def _write_talking_mp4(path: Path, seconds: float = 1.2) -> None:
    from avatar.engines import create_engine
    from avatar.render import render_audio

    engine = create_engine("parametric", fps=25, size=192, seed=0)
    audio = vowel_bursts(seconds, lead_silence_s=0.1)
    audio_48k = np.repeat(audio, 3)
    render_audio(engine, str(ASTRONAUT), audio, audio_48k, path)


def _write_faceless_mp4(path: Path) -> None:
    from avatar.engine import Frame
    from avatar.render import write_mp4

    rng = np.random.default_rng(1)
    frames = (Frame(index=i, image=(rng.random((96, 96, 3)) * 255).astype(np.uint8)) for i in range(10))
    write_mp4(path, frames, np.zeros(48000 * 10 // 25, np.float32), 25.0, 96)


def test_prepare_data_on_generated_clip(tmp_path):
    videos = tmp_path / "videos"
    videos.mkdir()
    _write_talking_mp4(videos / "astronaut.mp4")
    _write_faceless_mp4(videos / "noise.mp4")
    (videos / "broken.mp4").write_bytes(b"not a video")
    out = tmp_path / "data"
    manifest = prepare_videos(videos, out, crop_size=CROP, crop_scale=1.9, progress=False)
    assert [c["id"] for c in manifest["clips"]] == ["astronaut"]
    assert {Path(s["source"]).name for s in manifest["skipped"]} == {"noise.mp4", "broken.mp4"}
    clip = out / "astronaut"
    frames = np.load(clip / "frames.npy")
    assert frames.shape == (30, CROP, CROP, 3)
    assert np.load(clip / "audio.npy").shape == (30 * 640,)
    boxes = np.load(clip / "boxes.npy")
    assert boxes.shape == (30, 4)
    # the face box sits inside the crop and covers about 1/crop_scale of it
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    assert np.all(np.abs(side / CROP - 1 / 1.9) < 0.1)
    velocity = np.load(clip / "velocity.npy")
    assert velocity.shape == (30,) and np.all(np.isfinite(velocity)) and np.all(velocity >= 0)
    # resumable: a second run keeps the finished clip untouched
    stamp = (clip / "clip.json").stat().st_mtime_ns
    again = prepare_videos(videos, out, crop_size=CROP, crop_scale=1.9, progress=False)
    assert (clip / "clip.json").stat().st_mtime_ns == stamp
    assert len(again["clips"]) == 1
    data = ClipDataset(out, crop_size=CROP)
    assert data.total_frames == 30


def test_prepare_data_cuts_the_mouth_region_with_crop_shift(tmp_path):
    """crop_scale 0.56, crop_shift 0.28: the crop starts at the face-box centre and reaches the chin."""
    videos = tmp_path / "videos"
    videos.mkdir()
    _write_talking_mp4(videos / "astronaut.mp4")
    manifest = prepare_videos(videos, tmp_path / "data", CROP, 0.56, progress=False, crop_shift=0.28)
    assert [c["id"] for c in manifest["clips"]] == ["astronaut"]
    boxes = np.load(tmp_path / "data" / "astronaut" / "boxes.npy")  # face box in crop pixels
    centre_x, centre_y = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    assert np.all(np.abs(centre_x - CROP / 2) < 0.1 * CROP)
    assert np.all(np.abs(centre_y) < 0.1 * CROP), centre_y
    assert np.all(boxes[:, 3] > CROP * 0.75), boxes[:, 3]  # the chin: box bottom at 0.5 / 0.56 of the crop
