"""Evaluation cases: a portrait, a driving audio file and optionally a real video of that speech.

A cases file (YAML or JSON) is a list of mappings, or a mapping with a ``cases`` list::

    cases:
      - name: hello@astronaut        # optional; default "<audio stem>@<portrait stem>"
        portrait: portraits/astronaut.png
        audio: speech/hello.wav
        video: talking/hello.mp4     # optional ground truth (the real speaker saying the audio)

Relative paths are resolved against the cases file's folder.
"""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

from avatar.errors import ConfigError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
SPLITS = ("val", "train", "eval-only")
"""Splits of the talking-clip manifest that ``--cases`` accepts by name."""
PORTRAIT_SCAN_SECONDS = 10.0
"""How far into a clip ``first_face_frame`` looks for a face before it gives up."""
SHARED_PORTRAITS_PER_SPEECH = 2
PORTRAITS_WITHOUT_FACE = {"no_face_dog"}


@dataclass(frozen=True)
class Case:
    """One evaluation input; ``video`` is the real speaker (ground truth) when known."""

    name: str
    portrait: Path
    audio: Path
    video: Path | None = None


def safe_name(text: str) -> str:
    """``text`` reduced to characters safe in file names."""
    return re.sub(r"[^A-Za-z0-9_.@+-]+", "_", text).strip("._") or "case"


def _resolve(value: object, base: Path, field: str, index: int) -> Path:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"case {index + 1}: '{field}' must be a file path")
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise ConfigError(f"case {index + 1}: {field} file not found: {path}")
    return path


def load_cases(path: str | Path) -> list[Case]:
    """Read a YAML/JSON cases file. Raises ``ConfigError`` (one line) for missing or malformed files."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"cases file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"cannot read cases file {path}: {exc.__class__.__name__}") from None
    except Exception as exc:  # yaml.YAMLError and friends
        raise ConfigError(f"cannot parse cases file {path}: {str(exc).splitlines()[0]}") from None
    if isinstance(data, dict):
        data = data.get("cases")
    if not isinstance(data, list) or not data:
        raise ConfigError(f"cases file {path} must hold a non-empty list of cases")
    cases: list[Case] = []
    for index, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise ConfigError(f"case {index + 1} in {path} must be a mapping with portrait and audio")
        portrait = _resolve(entry.get("portrait"), path.parent, "portrait", index)
        audio = _resolve(entry.get("audio"), path.parent, "audio", index)
        video = _resolve(entry["video"], path.parent, "video", index) if entry.get("video") else None
        name = safe_name(str(entry.get("name") or f"{audio.stem}@{portrait.stem}"))
        cases.append(Case(name=name, portrait=portrait, audio=audio, video=video))
    return _unique_names(cases)


def _unique_names(cases: list[Case]) -> list[Case]:
    """Suffix repeated names with -2, -3... so every case gets its own plot and table row."""
    seen: dict[str, int] = {}
    out = []
    for case in cases:
        count = seen.get(case.name, 0) + 1
        seen[case.name] = count
        name = case.name if count == 1 else f"{case.name}-{count}"
        out.append(Case(name=name, portrait=case.portrait, audio=case.audio, video=case.video))
    return out


def find_shared_dir() -> Path | None:
    """The shared media folder (``../shared/media`` next to the project root, or ``shared/media``
    inside it), or None when absent."""
    root = Path(__file__).resolve().parents[2]
    for candidate in (root.parent / "shared" / "media", root / "shared" / "media"):
        if (candidate / "speech").is_dir() or (candidate / "talking").is_dir():
            return candidate
    return None


def shared_cases(shared_dir: Path, portraits_per_speech: int = SHARED_PORTRAITS_PER_SPEECH) -> list[Case]:
    """Default cases from the shared media folder.

    Each ``speech/*.wav`` is paired with ``portraits_per_speech`` portraits, taken in turn from the sorted
    portraits with a face so every portrait is used; each ``talking/<name>/`` folder with
    ``portrait.jpg``, ``audio.*`` and ``video.mp4`` becomes a self-reenactment case ``real_<name>``.
    """
    shared_dir = Path(shared_dir)
    if not shared_dir.is_dir():
        raise ConfigError(f"shared media folder not found: {shared_dir}")
    portraits = sorted(
        p
        for p in (shared_dir / "portraits").glob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and p.stem not in PORTRAITS_WITHOUT_FACE
    )
    speeches = sorted((shared_dir / "speech").glob("*.wav"))
    cases: list[Case] = []
    if portraits:
        slot = 0
        for speech in speeches:
            for _ in range(portraits_per_speech):
                portrait = portraits[slot % len(portraits)]
                slot += 1
                cases.append(Case(safe_name(f"{speech.stem}@{portrait.stem}"), portrait, speech))
    for folder in sorted(p for p in (shared_dir / "talking").glob("*") if p.is_dir()):
        video = folder / "video.mp4"
        portrait = next(
            (p for p in sorted(folder.glob("portrait.*")) if p.suffix.lower() in IMAGE_SUFFIXES), None
        )
        audio = next(iter(sorted(folder.glob("audio.*"))), None)
        if video.is_file() and portrait is not None:
            cases.append(Case(safe_name(f"real_{folder.name}"), portrait, audio or video, video))
    if not cases:
        raise ConfigError(f"no cases found in shared media folder {shared_dir}")
    return _unique_names(cases)


def find_data_dir() -> Path | None:
    """The real talking-clip folder (``../shared/data/talking`` next to the project root, or
    ``shared/data/talking`` inside it) holding a ``manifest.tsv``, or None when absent."""
    root = Path(__file__).resolve().parents[2]
    for candidate in (root.parent / "shared" / "data" / "talking", root / "shared" / "data" / "talking"):
        if (candidate / "manifest.tsv").is_file():
            return candidate
    return None


def first_face_frame(video: Path, out_png: Path, scan_seconds: float = PORTRAIT_SCAN_SECONDS) -> Path:
    """Write the first frame of ``video`` where the face mesh finds a face to ``out_png`` and return it.

    Reuses ``out_png`` when it is newer than the video. When no frame of the first ``scan_seconds`` has a
    face, the first frame is written (the engine will then report the missing face for that case).
    Raises ``AvatarError`` (one line) when the video cannot be decoded or has no frames.
    """
    import cv2

    from avatar.errors import AvatarError
    from avatar.evaluation.media import read_video
    from avatar.evaluation.mouth_track import FaceMeshTracker, detected

    if out_png.is_file() and out_png.stat().st_mtime >= video.stat().st_mtime:
        return out_png
    first = chosen = None
    with FaceMeshTracker(video=False) as tracker:
        for _seconds, image in read_video(video, scan_seconds):
            first = image if first is None else first
            if detected(tracker.landmarks(image)[None])[0]:
                chosen = image
                break
    if first is None:
        raise AvatarError(f"video {video.name} has no frames")
    out_png.parent.mkdir(parents=True, exist_ok=True)
    image = chosen if chosen is not None else first
    if not cv2.imwrite(str(out_png), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
        raise ConfigError(f"cannot write portrait {out_png}")
    return out_png


def split_cases(data_dir: Path, split: str, portrait_dir: Path) -> list[Case]:
    """One self-reenactment case per clip of ``split`` in ``data_dir/manifest.tsv``.

    Columns used: ``file`` (the clip, relative to ``data_dir``), ``audio_file`` (a separate WAV of the
    same speech, where set) and ``split``. The case is named after the clip's file stem; its portrait is
    the clip's first frame with a face (``first_face_frame``, cached as ``portrait_dir/<name>.png``), its
    audio the speech (``audio_file`` or the clip itself) and its video the clip (ground truth).
    Raises ``ConfigError`` (one line) for a missing folder, manifest or clip, or an empty split.
    """
    data_dir = Path(data_dir)
    manifest = data_dir / "manifest.tsv"
    if not data_dir.is_dir():
        raise ConfigError(f"talking-clip folder not found: {data_dir}; pass --data-dir")
    if not manifest.is_file():
        raise ConfigError(f"no manifest.tsv in talking-clip folder {data_dir}; pass --data-dir")
    try:
        with manifest.open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"cannot read {manifest}: {exc.__class__.__name__}") from None
    if rows and not {"file", "split"} <= set(rows[0]):
        raise ConfigError(f"{manifest} lacks the 'file' and 'split' columns")
    picked = [row for row in rows if (row.get("split") or "").strip() == split]
    if not picked:
        raise ConfigError(f"no clips of split {split!r} in {manifest}")
    cases: list[Case] = []  # portrait = the clip until the names are unique
    for row in picked:
        video = data_dir / row["file"].strip()
        if not video.is_file():
            raise ConfigError(f"clip listed in {manifest.name} not found: {video}")
        audio_name = (row.get("audio_file") or "").strip()
        audio = data_dir / audio_name if audio_name else video
        if not audio.is_file():
            raise ConfigError(f"audio listed in {manifest.name} not found: {audio}")
        cases.append(Case(safe_name(video.stem), video, audio, video))
    out = []
    for case in _unique_names(cases):
        assert case.video is not None
        portrait = first_face_frame(case.video, portrait_dir / f"{case.name}.png")
        out.append(Case(case.name, portrait, case.audio, case.video))
    return out
