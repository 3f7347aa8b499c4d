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

import json
import re
from dataclasses import dataclass
from pathlib import Path

from avatar.errors import ConfigError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
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
