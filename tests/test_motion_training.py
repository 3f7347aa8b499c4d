"""train-motion / distill-motion on a few synthetic prepared clips: runs, resumes, exports, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from avatar.__main__ import main  # noqa: E402
from avatar.motion.learned import MotionModel  # noqa: E402


def _write_clip(folder, name: str, split: str, speaker: str, seed: int, frames: int = 60) -> None:
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / 25.0
    expression = rng.normal(0, 0.004, size=(frames, 478, 3)).astype(np.float32)
    expression[:, 14, 1] += 0.03 * (1 + np.sin(2 * np.pi * 3 * t))  # the lower lip opens and closes
    pose = np.zeros((frames, 6), np.float32)
    pose[:, 1] = 0.05 * np.sin(2 * np.pi * 0.5 * t)
    pose[:, 5] = np.log(200.0)
    hops = frames * 4
    level = 1.0 + np.sin(2 * np.pi * 3 * np.arange(hops) / 100.0)
    mel = (level[:, None] * rng.exponential(0.01, size=(hops, 40))).astype(np.float32)
    np.savez(
        folder / f"{name}.npz",
        fps=25.0,
        times=t,
        pose=pose,
        expression=expression,
        rest=np.zeros((478, 3), np.float32),
        eye_openness=np.full(frames, 0.3) - 0.2 * (t % 2 < 0.1),
        gaze=rng.normal(0, 0.01, (frames, 2)),
        mouth_opening=np.zeros(frames),
        mouth_width=np.zeros(frames),
        keep=np.ones(frames, bool),
        mel_power=mel,
        speaker_id=speaker,
        split=split,
        language="en",
    )


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("prepared")
    (root / "motion").mkdir()
    _write_clip(root / "motion", "a", "train", "s1", 0)
    _write_clip(root / "motion", "b", "train", "s2", 1)
    _write_clip(root / "motion", "c", "val", "s3", 2)
    return root


def _log(run) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def _common_args(prepared, eval_every: int) -> list[str]:
    """A tiny, quick run: batch 16, validation of 1 s every ``eval_every`` steps."""
    sets = ["batch=16", f"eval_every={eval_every}", "eval_seconds=1"]
    return ["--data", str(prepared), *[arg for value in sets for arg in ("--set", value)]]


def test_train_resume_distill_and_load(prepared, tmp_path, capsys):
    teacher = tmp_path / "teacher"
    common = _common_args(prepared, eval_every=4)
    assert main(["train-motion", *common, "--out", str(teacher), "--steps", "4"]) == 0
    assert [r["step"] for r in _log(teacher)] == [4]
    assert main(["train-motion", *common, "--out", str(teacher), "--steps", "8"]) == 0  # continues
    assert [r["step"] for r in _log(teacher)] == [4, 8]
    assert {"val_mouth_r", "val_head_ratio"} <= set(_log(teacher)[-1])
    MotionModel(teacher / "model")  # the exported teacher loads without torch's help
    student = tmp_path / "student"
    assert (
        main(["distill-motion", *common, "--teacher", str(teacher), "--out", str(student), "--steps", "4"])
        == 0
    )
    model = MotionModel(student / "model")
    config = json.loads((student / "model" / "config.json").read_text())
    assert config["training"]["distilled_parts"] == ["head"] and model.settings.steps == 2
    # The mouth part ships the teacher's weights; the head part was distilled.
    teacher_model = MotionModel(teacher / "model")
    mouth = [n for n in model.net.nets if n.config.part == "mouth"][0]
    mouth_teacher = [n for n in teacher_model.net.nets if n.config.part == "mouth"][0]
    assert all(np.array_equal(mouth.p[k], mouth_teacher.p[k]) for k in mouth.p)
    capsys.readouterr()


def test_training_errors_are_one_line(prepared, tmp_path, capsys):
    assert main(["train-motion", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "r")]) == 2
    assert (
        main(["train-motion", "--data", str(prepared), "--out", str(tmp_path / "r"), "--set", "wobble=1"])
        == 2
    )
    assert (
        main(
            [
                "distill-motion",
                "--data",
                str(prepared),
                "--teacher",
                str(tmp_path / "r"),
                "--out",
                str(tmp_path / "s"),
            ]
        )
        == 2
    )
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 3
    assert "prepare-motion" in lines[0] and "wobble" in lines[1] and "no teacher checkpoint" in lines[2]


def test_voice_normalised_training_exports_and_distills_with_its_prior(prepared, tmp_path, capsys):
    common = _common_args(prepared, eval_every=3)
    teacher, student = tmp_path / "teacher", tmp_path / "student"
    voice = ["--set", "voice_normalise=1", "--set", "voice_prior_hops=50"]
    assert main(["train-motion", *common, *voice, "--out", str(teacher), "--steps", "3"]) == 0
    taught = MotionModel(teacher / "model")
    assert taught.net.voice is not None and taught.net.voice.prior_hops == 50.0
    # The student keeps the teacher's normalisation (its prior came from the teacher's training split).
    assert (
        main(["distill-motion", *common, "--teacher", str(teacher), "--out", str(student), "--steps", "3"])
        == 0
    )
    distilled = MotionModel(student / "model")
    assert np.array_equal(distilled.net.voice.prior, taught.net.voice.prior)
    capsys.readouterr()


def test_tempo_augmentation_reads_the_window_and_motion_frames_faster_or_slower(prepared):
    """Speed perturbation: at tempo 1 the window is the clip's own (``frame_context``); at tempo 2 hop k of
    the window is the clip's hop at twice the distance from the frame, and the motion frames are every
    second frame; the target frame itself does not move."""
    from avatar.motion.audio_features import PAST_HOPS, frame_context, frame_hops
    from avatar.training.motion_data import Augment, MotionSamples, build_clips, fit_basis, read_prepared

    items = read_prepared(prepared, ("train",))
    basis = fit_basis(items)
    samples = MotionSamples(build_clips(items, basis), basis, context_frames=4)
    clip, frame = 0, 40
    power = samples.clips[clip].mel_power
    assert np.array_equal(samples._mel_window(clip, frame, 1.0), frame_context(power, frame))
    fast = samples._mel_window(clip, frame, 2.0)
    centre = frame_hops(frame)
    assert np.allclose(fast[PAST_HOPS], power[centre])
    assert np.allclose(fast[PAST_HOPS - 3], power[centre - 6])
    assert np.allclose(fast[PAST_HOPS + 2], power[centre + 4])
    assert np.allclose(samples._motion_frames(clip, frame, 2.0), samples.normed[clip][[32, 34, 36, 38]])
    half = samples._motion_frames(clip, frame, 0.5)
    assert np.allclose(half[-1], 0.5 * (samples.normed[clip][39] + samples.normed[clip][40]))
    rng = np.random.default_rng(0)
    quiet = Augment(tempo_prob=1.0, gain_db=0.0, noise_prob=0.0, shift_prob=0.0, audio_drop=0.0,
                    silence_prob=0.0)
    batch = samples.gather(np.array([[clip, frame]] * 8), rng, quiet)
    assert np.array_equal(batch["target"], np.repeat(samples.normed[clip][frame][None], 8, axis=0))
    assert len({batch["mel"][i].tobytes() for i in range(8)}) == 8  # each example its own tempo


def test_spec_augment_masks_bands_and_hops_with_the_window_mean():
    """SpecAugment: masked cells hold the window's own mean, whole bands (all hops) and whole hops (all
    bands) at most ``spec_bands`` / ``spec_hops`` wide per mask; everything else is untouched."""
    from avatar.training.motion_data import Augment, spec_augment

    rng = np.random.default_rng(0)
    log = rng.normal(size=(64, 48, 40)).astype(np.float32)
    aug = Augment(spec_masks=1, spec_bands=6, spec_hops=4)
    out = spec_augment(log.copy(), rng, aug)
    assert out.shape == log.shape and out.dtype == np.float32
    changed = out != log
    assert changed.any()
    for i in range(len(log)):
        fill = log[i].mean()
        assert np.allclose(out[i][changed[i]], fill)
        full_bands = changed[i].all(axis=0)
        full_hops = changed[i].all(axis=1)
        assert full_bands.sum() <= 6 and full_hops.sum() <= 4
        # every changed cell lies in a masked band or a masked hop
        assert np.array_equal(changed[i], full_bands[None, :] | full_hops[:, None])
    assert np.array_equal(spec_augment(log, rng, Augment(spec_masks=0)), log)
