"""Self-reenactment measures: a clip rendered by the parametric engine is its own ground truth (so every
measure must come out perfect), shifted or moved copies give known answers, and the ``--cases val`` /
``--engine name:motion`` plumbing works on a small manifest made here (no shared data needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from avatar.audio.io import load_audio
from avatar.engine import SAMPLE_RATE
from avatar.errors import ConfigError
from avatar.evaluation.cases import Case, split_cases
from avatar.evaluation.harness import REFERENCE, Settings, evaluate, parse_engine_specs, render_frames
from avatar.evaluation.reenactment import (
    ALIGN_POINTS,
    LIP_POINTS,
    closed_lips,
    compare_to_truth,
    lip_distance,
    mouth_width,
    similarity_fit,
    unreliable_truth,
)
from avatar.face.mesh import LIPS_INNER_LOWER, LIPS_INNER_UPPER
from tests.media import ASTRONAUT, vowel_bursts, write_wav

FPS = 25.0
SECONDS = 2.4
SOURCE = "parametric:rules"


def _write_clip(path: Path, images: list[np.ndarray], audio: np.ndarray | None) -> Path:
    """H.264 MP4 of RGB ``images`` at ``FPS`` (with ``audio``, 16 kHz, as its AAC track when given)."""
    from avatar.engine import Frame
    from avatar.render import OUTPUT_AUDIO_RATE, write_mp4

    sound = np.zeros(1, np.float32) if audio is None else audio
    audio_48k = np.interp(
        np.arange(round(len(sound) * OUTPUT_AUDIO_RATE / SAMPLE_RATE)) * SAMPLE_RATE / OUTPUT_AUDIO_RATE,
        np.arange(len(sound)),
        sound,
    ).astype(np.float32)
    frames = (Frame(index=i, image=image, speaking=True) for i, image in enumerate(images))
    write_mp4(path, frames, audio_48k, FPS, images[0].shape[0], crf=12)
    return path


def closed_mouth_astronaut(path: Path) -> Path:
    """The astronaut with her smile's teeth painted over in lip colour and a thin seam drawn: a closed
    mouth (the shipped portrait's open smile never closes, so it would show no lip closures)."""
    import cv2

    from avatar.evaluation.media import read_image
    from avatar.evaluation.mouth_track import FaceMeshTracker

    image = read_image(ASTRONAUT)
    with FaceMeshTracker(video=False) as tracker:
        points = tracker.landmarks(image)[:, :2]
    inner = points[list(LIPS_INNER_UPPER + LIPS_INNER_LOWER[-2:0:-1])]
    mask = np.zeros(image.shape[:2], np.uint8)
    cv2.fillPoly(mask, [np.round(inner).astype(np.int32)], 255)
    mask = cv2.dilate(mask, np.ones((3, 3), np.uint8)) > 0
    colour = np.mean([image[int(y), int(x)] for x, y in points[[84, 17, 314, 181, 405]]], axis=0)
    closed = image.copy()
    closed[mask] = colour
    seam = np.round(points[[78, 13, 308]]).astype(np.int32)  # corner, middle, corner
    cv2.polylines(closed, [seam], False, tuple(int(c) for c in colour * 0.45), 1, cv2.LINE_AA)
    closed[mask] = cv2.GaussianBlur(closed, (3, 3), 0)[mask]
    cv2.imwrite(str(path), cv2.cvtColor(closed, cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """A 2.4 s clip rendered by ``parametric`` (motion=rules) from a closed-mouth astronaut: its
    portrait, WAV, MP4 and frames."""
    from avatar.engines import create_engine

    folder = tmp_path_factory.mktemp("reenact")
    portrait = closed_mouth_astronaut(folder / "astronaut_closed.png")
    audio = vowel_bursts(SECONDS, SAMPLE_RATE, lead_silence_s=0.3)
    wav = write_wav(folder / "speech.wav", audio)
    engine = create_engine("parametric", motion="rules", fps=FPS, size=384, seed=0)
    sound = load_audio(wav)
    images = [f.image for f in render_frames(engine, engine.prepare(portrait), sound, seed=0)]
    clip = _write_clip(folder / "clip.mp4", images, sound)
    return {"engine": engine, "portrait": portrait, "wav": wav, "clip": clip, "images": images}


@pytest.fixture(scope="module")
def self_results(rendered):
    """``evaluate`` of the engine that made the clip, with the clip as ground truth."""
    case = Case("self@astronaut", rendered["portrait"], rendered["wav"], rendered["clip"])
    results = evaluate({SOURCE: rendered["engine"]}, [case], Settings(fps=FPS, size=384))
    assert [(r.source, r.error) for r in results] == [(REFERENCE, None), (SOURCE, None)]
    return results


def test_rendered_clip_is_its_own_perfect_ground_truth(self_results):
    metrics = self_results[1].metrics
    assert metrics["face_detection_rate"] == 1.0 and metrics["gt_frames_excluded"] == 0
    assert metrics["gt_frames"] == round(SECONDS * FPS)
    assert metrics["gt_r"] > 0.97 and abs(metrics["gt_lag_ms"]) < 10.0
    assert metrics["gt_width_r"] > 0.9 and abs(metrics["gt_width_lag_ms"]) < 10.0
    assert metrics["lmd"] < 0.008  # H.264 and MediaPipe tracking noise alone: ~0.004 (val clips: ~0.03)
    assert metrics["real_closed_frames"] > 5 and metrics["lip_closure_recall"] > 0.85
    for axis in ("yaw", "pitch", "roll"):
        assert metrics[f"head_{axis}_std_ratio"] == pytest.approx(1.0, abs=0.25), axis
    reference = self_results[0].metrics
    assert metrics["blinks_per_min"] == reference["blinks_per_min"]
    assert metrics["lip_closed_share"] == pytest.approx(reference["lip_closed_share"], abs=0.1)


def test_shifted_copy_reports_its_lag_and_excludes_the_gap(self_results):
    real = self_results[0].landmarks
    delayed = np.full_like(real, np.nan)
    delayed[2:] = real[:-2]  # the output two frames (80 ms) after the real mouth
    metrics = compare_to_truth(delayed, real, FPS)
    assert metrics["gt_frames_excluded"] == 2 and metrics["gt_frames"] == len(real) - 2
    assert metrics["gt_lag_ms"] == pytest.approx(80.0, abs=12.0) and metrics["gt_r"] > 0.95
    assert metrics["gt_width_lag_ms"] == pytest.approx(80.0, abs=20.0)
    assert metrics["lmd"] > 0.002 > compare_to_truth(real, real, FPS)["lmd"] == pytest.approx(0.0, abs=1e-9)
    early = compare_to_truth(real[3:], real[:-3], FPS)  # the output three frames (120 ms) early
    assert early["gt_lag_ms"] == pytest.approx(-120.0, abs=12.0)


def test_lmd_ignores_a_moved_face_and_sees_an_open_mouth():
    rng = np.random.default_rng(5)
    real = np.repeat(rng.normal(0, 40, size=(1, 478, 3)) + [200.0, 200.0, 0.0], 6, axis=0)
    real[:, 10, :2], real[:, 152, :2] = (200.0, 100.0), (200.0, 300.0)  # face height 200 px
    a = np.radians(12.0)
    rotation = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    moved = real.copy()
    moved[..., :2] = 1.7 * real[..., :2] @ rotation.T + [35.0, -20.0]  # zoomed, turned, shifted
    assert np.nanmax(lip_distance(moved, real)) < 1e-9
    scale, rot, shift = similarity_fit(real[:, ALIGN_POINTS, :2], moved[:, ALIGN_POINTS, :2])
    assert scale == pytest.approx(np.full(6, 1.7)) and rot[0] == pytest.approx(rotation)
    assert shift[0] == pytest.approx([35.0, -20.0])
    opened = moved.copy()
    opened[:, LIP_POINTS[:20], 1] += 1.7 * 10.0  # the outer lips 10 real pixels lower
    assert lip_distance(opened, real) == pytest.approx(np.full(6, 0.5 * 10.0 / 200.0))
    real[2] = np.nan
    assert np.isnan(lip_distance(moved, real)[2]) and np.isfinite(lip_distance(moved, real)[[0, 1, 3]]).all()


def test_profile_frames_of_the_real_face_are_not_ground_truth():
    """A real face turned 50 degrees (past prepare-motion's 35) cannot give trusted lips: those frames are
    left out of the comparison and counted; a 10 degree turn stays in."""
    from avatar.motion.canonical import canonical_face

    face = canonical_face().astype(np.float64)

    def turned(degrees: float) -> np.ndarray:
        a = np.radians(degrees)
        yaw = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
        return 200.0 * face @ yaw.T + [256.0, 256.0, 0.0]

    real = np.stack([turned(d) for d in (0, 10, -10, 50, -50, 0, 5, 0)])
    assert unreliable_truth(real).tolist() == [False, False, False, True, True, False, False, False]
    real[2] = np.nan  # no face: neither trusted nor untrusted
    assert not unreliable_truth(real)[2]
    measures = compare_to_truth(real.copy(), real, FPS)
    assert measures["gt_frames_unreliable"] == 2 and measures["gt_frames"] == 5
    assert measures["gt_frames_excluded"] == 3


def test_closed_lips_use_each_tracks_own_scale_and_width_is_corner_distance():
    track = np.array([0.001, 0.002, 0.05, 0.06, 0.004, np.nan, 0.055, 0.001])
    assert closed_lips(track).tolist() == [True, True, False, False, True, False, False, True]
    assert closed_lips(track * 3).tolist() == closed_lips(track).tolist()  # a bigger mouth, same closures
    assert not closed_lips(np.full(4, np.nan)).any()
    points = np.zeros((1, 478, 3))
    points[0, 10, :2], points[0, 152, :2] = (0.0, 0.0), (0.0, 200.0)
    points[0, 61, :2], points[0, 291, :2] = (-40.0, 150.0), (40.0, 150.0)
    assert mouth_width(points)[0] == pytest.approx(0.4)


def test_engine_specs_parse_and_bad_ones_are_one_line_errors():
    assert parse_engine_specs("parametric:rules, parametric:learned,parametric,parametric:rules") == {
        "parametric:rules": ("parametric", {"motion": "rules"}),
        "parametric:learned": ("parametric", {"motion": "learned"}),
        "parametric": ("parametric", {}),
    }
    for bad, message in (
        ("parametric:", "bad engine spec"),
        (":rules", "bad engine spec"),
        ("parametric:rules:x", "bad engine spec"),
        ("parametric:fast", "unknown motion 'fast'"),
        (" , ", "names no engine"),
    ):
        with pytest.raises(ConfigError, match=message) as info:
            parse_engine_specs(bad)
        assert "\n" not in str(info.value)


# --- --cases val on a manifest made here ------------------------------------------------------------------


def _data_dir(rendered, folder: Path) -> Path:
    """A talking-clip folder: a val clip with a separate WAV whose first two frames show no face, a val
    clip carrying its own sound, and a train clip."""
    blank = np.full_like(rendered["images"][0], 90)
    clips = folder / "clips"
    clips.mkdir(parents=True)
    _write_clip(clips / "late_face.mp4", [blank, blank] + rendered["images"][2:], None)
    (clips / "own_sound.mp4").write_bytes(rendered["clip"].read_bytes())
    (clips / "trained.mp4").write_bytes(rendered["clip"].read_bytes())
    (folder / "speech.wav").write_bytes(rendered["wav"].read_bytes())
    rows = [
        ("file", "audio_file", "split", "speaker_id"),
        ("clips/late_face.mp4", "speech.wav", "val", "a"),
        ("clips/own_sound.mp4", "", "val", "b"),
        ("clips/trained.mp4", "", "train", "c"),
    ]
    (folder / "manifest.tsv").write_text("".join("\t".join(row) + "\n" for row in rows))
    return folder


def test_split_cases_take_the_first_frame_with_a_face(rendered, tmp_path):
    from avatar.evaluation.media import read_image

    data = _data_dir(rendered, tmp_path / "talking")
    cases = split_cases(data, "val", tmp_path / "portraits")
    assert [c.name for c in cases] == ["late_face", "own_sound"]
    assert cases[0].audio == data / "speech.wav" and cases[1].audio == data / "clips/own_sound.mp4"
    assert cases[0].video == data / "clips/late_face.mp4"
    assert cases[0].portrait == tmp_path / "portraits" / "late_face.png"
    portrait = read_image(cases[0].portrait)
    assert portrait.shape == rendered["images"][0].shape and portrait.std() > 20  # a face, not the blank
    assert [c.name for c in split_cases(data, "train", tmp_path / "portraits")] == ["trained"]
    with pytest.raises(ConfigError, match="no clips of split 'eval-only'"):
        split_cases(data, "eval-only", tmp_path / "portraits")
    with pytest.raises(ConfigError, match="no manifest.tsv"):
        split_cases(tmp_path / "portraits", "val", tmp_path / "portraits")


def _run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    import avatar.__main__ as cli

    monkeypatch.setattr(cli, "COMMAND_MODULES", ["avatar.commands.eval"])
    code = cli.main(["eval", *args])
    return code, capsys.readouterr().err.strip()


def test_cli_val_without_data_folder_and_bad_engine_spec_are_one_line_errors(tmp_path, monkeypatch, capsys):
    import avatar.evaluation.cases

    out = str(tmp_path / "out")
    missing = str(tmp_path / "no")
    code, err = _run_cli(monkeypatch, capsys, "--cases", "val", "--data-dir", missing, "--out", out)
    assert code != 0 and err.startswith("error: talking-clip folder not found") and len(err.splitlines()) == 1
    monkeypatch.setattr(avatar.evaluation.cases, "find_data_dir", lambda: None)
    code, err = _run_cli(monkeypatch, capsys, "--cases", "val", "--out", out)
    assert code != 0 and "no talking-clip folder found" in err and len(err.splitlines()) == 1
    code, err = _run_cli(monkeypatch, capsys, "--engine", "parametric:fast", "--cases", "val", "--out", out)
    assert code != 0 and "unknown motion 'fast'" in err and len(err.splitlines()) == 1


def test_cli_runs_two_motion_variants_on_val_cases(rendered, tmp_path, monkeypatch, capsys):
    data = _data_dir(rendered, tmp_path / "talking")
    out = tmp_path / "out"
    code, err = _run_cli(
        monkeypatch,
        capsys,
        "--engine",
        "parametric:rules,parametric",  # rules and the default motion (learned at 25 fps)
        "--cases",
        "val",
        "--data-dir",
        str(data),
        "--out",
        str(out),
        "--size",
        "256",
        "--max-seconds",
        "1.2",
        "--identity-every",
        "100",
    )
    assert code == 0, err
    document = json.loads((out / "results.json").read_text())
    assert list(document["reenactment"]) == [REFERENCE, "parametric:rules", "parametric"]
    for source in ("parametric:rules", "parametric"):
        means = document["reenactment"][source]
        assert means["cases"] == 2 and means["face_detection_rate"] == 1.0
        assert 0.0 < means["lmd"] < 0.08
        assert set(document["sources"][source]["cases"]) == {"late_face", "own_sound"}
    # The clip was rendered with the rules: they reproduce it; the learned motion is another motion.
    assert document["reenactment"]["parametric:rules"]["gt_r"] > 0.5
    report = (out / "report.md").read_text()
    assert "## Self-reenactment against the real video" in report
    assert "| parametric | 2 |" in report and "| own_sound | parametric:rules |" in report
    rules, plain = (document["sources"][s]["cases"]["own_sound"] for s in ("parametric:rules", "parametric"))
    timing = ("ms_per_frame", "real_time_factor", "prepare_s", "render_s")
    assert {k: v for k, v in rules.items() if k not in timing} != {
        k: v for k, v in plain.items() if k not in timing
    }  # the default motion is the learned one: other frames
    assert "Pooled head σ ratios" in report and (out / "portraits" / "own_sound.png").is_file()
    from avatar.evaluation.report import render_markdown

    again = render_markdown(document, old=document)  # --compare against itself: zero change
    assert "Change of the means against" in again and "| parametric | 2 (was 2) | +0%" in again
