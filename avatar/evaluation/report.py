"""Write evaluation results: ``results.json`` (for comparisons), ``report.md`` and ``plots/<case>.png``."""

from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from avatar.errors import ConfigError
from avatar.evaluation.harness import REFERENCE, CaseResult, Settings

FORMAT = "avatar-eval/1"

# (metric key, column header, format) of the per-case tables, in order.
COLUMNS: list[tuple[str, str, str]] = [
    ("face_detection_rate", "face found", "{:.0%}"),
    ("sync_r", "sync r", "{:.2f}"),
    ("sync_lag_ms", "lag ms", "{:+.0f}"),
    ("gt_r", "GT r", "{:.2f}"),
    ("gt_lag_ms", "GT lag ms", "{:+.0f}"),
    ("mouth_range", "mouth range", "{:.3f}"),
    ("mouth_silence_ratio", "mouth silence/speech", "{:.2f}"),
    ("identity_distance", "identity dist", "{:.3f}"),
    ("background_flicker", "bg flicker", "{:.2f}"),
    ("silent_landmark_speed", "silent motion", "{:.4f}"),
    ("silent_landmark_jerk", "silent jerk", "{:.4f}"),
    ("mesh_floor_jerk", "jerk floor", "{:.4f}"),
    ("blinks_per_min", "blinks/min", "{:.1f}"),
    ("blink_depth", "blink depth", "{:.2f}"),
    ("head_yaw_range_deg", "yaw °", "{:.1f}"),
    ("head_pitch_range_deg", "pitch °", "{:.1f}"),
    ("head_roll_range_deg", "roll °", "{:.1f}"),
    ("real_time_factor", "RTF", "{:.2f}"),
    ("ms_per_frame", "ms/frame", "{:.1f}"),
]

EXPLANATION = """\
## What the measures mean (and what they cannot tell)

* **face found**: share of frames where MediaPipe's face mesh found a face. Every other measure uses the
  mesh, so a low rate means the rest is unreliable (and, for a generated clip, that the face broke).
* **sync r / lag ms**: Pearson r between the mouth track (inner-lip gap 13-14 over face height 10-152)
  and the speech envelope (linear RMS, 100 ms box), at the best lag within ±200 ms; positive lag = mouth
  after sound. Real speakers reach only a moderate r (see the reference table): the mouth also moves for
  articulation that loudness does not show, and closes on loud bilabials. Higher than the reference
  means the mouth follows loudness too literally rather than better speech. A lag far from 0 (beyond one
  or two frames) is a timeline bug. It is no lip-reading score: wrong visemes with the right rhythm score
  well (no SyncNet weights are available here). A lag at ±200 ms means no peak inside the window: r is
  weak and the lag meaningless.
* **GT r / GT lag ms**: the same correlation between the generated mouth track and the real speaker's
  (self-reenactment on the real clips): how much the mouth opens when the real one does. Shape, teeth,
  lip rounding are not compared.
* **mouth range**: 5-95 % spread of the mouth track (face heights); compare with the reference: too small
  looks mumbled, too large looks puppet-like.
* **mouth silence/speech**: mean mouth opening in silent frames (no speech within 120 ms, webrtcvad)
  divided by the mean in speech frames: a live mouth rests (well below 1) when there is nothing to say.
  Needs silent stretches in the audio; empty when there are none.
* **identity dist**: distance between the dlib 128-d face embedding of the portrait and of every 5th
  frame (same person ≈0.3-0.4, different people ≈0.8; 0.6 is dlib's threshold). dlib was trained on
  photographs: on paintings and cartoons it is a rough geometry check; it does not see blur, texture
  smearing or seams that keep the face shape.
* **bg flicker**: mean absolute frame-to-frame difference (0-255) of pixels outside the face hull dilated
  by a quarter face height. Ideally ~0 for a still portrait background, but hair, neck and shoulders that
  move with the head count too, and video compression noise puts real clips above 0.
* **silent motion / silent jerk**: mean per-frame landmark displacement (and second difference, which
  ignores slow smooth motion) in face heights, over silent frames. Motion includes intended idle sway;
  jerk isolates shaking. The tracking mesh itself jitters on a still image: **jerk floor** is the jerk
  it reports for the prepared portrait repeated 25 times, so only silent jerk above it is real shaking.
* **blinks/min**: dips of the eye aspect ratio below 70 % of its 3 s running median (people: ~10-20 at
  rest, fewer while talking). Short clips give coarse rates (one blink in 4 s = 15/min). **blink depth**:
  the lowest eye aspect ratio in a blink over its baseline (real full blinks ≈0.1-0.2; near 0.7 the
  eyes barely close). A blink of one or two frames may fall between samples at 25 fps.
* **yaw/pitch/roll °**: 5-95 % range of head rotation from a rigid fit of stable mesh points to the
  clip's median face (MediaPipe depth is approximate, so yaw and pitch are rougher than roll).
* **RTF / ms/frame**: engine time only (prepare excluded, measurement excluded) divided by the audio
  duration / by the frames; RTF below 1 is faster than real time, on this machine's CPU.
"""


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def summarize(results: list[CaseResult]) -> dict[str, dict[str, Any]]:
    """``{source: {"cases": {case: metrics | {"error": msg}}, "summary": {metric: mean}}}``.

    Summary values are means over the cases where the metric exists; ``cases_ok``/``cases_failed``
    count the cases."""
    sources: dict[str, dict[str, Any]] = {}
    for result in results:
        entry = sources.setdefault(result.source, {"cases": {}, "summary": {}})
        entry["cases"][result.case] = {"error": result.error} if result.error else dict(result.metrics)
    for entry in sources.values():
        ok = [m for m in entry["cases"].values() if "error" not in m]
        keys = sorted({k for m in ok for k, v in m.items() if isinstance(v, int | float)})
        summary: dict[str, Any] = {}
        for key in keys:
            values = [float(m[key]) for m in ok if isinstance(m.get(key), int | float)]
            summary[key] = float(np.mean(values)) if values else None
        summary["cases_ok"] = len(ok)
        summary["cases_failed"] = len(entry["cases"]) - len(ok)
        entry["summary"] = summary
    return sources


def build_results(results: list[CaseResult], settings: Settings) -> dict[str, Any]:
    """The JSON document written to ``results.json``."""
    return _jsonable(
        {
            "format": FORMAT,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "settings": asdict(settings),
            "sources": summarize(results),
        }
    )


def load_results(path: str | Path) -> dict[str, Any]:
    """Read a ``results.json`` written earlier (``--compare``). Raises ``ConfigError`` (one line)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"results file to compare with not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"cannot read results file {path}: {exc.__class__.__name__}") from None
    if (
        not isinstance(data, dict)
        or data.get("format") != FORMAT
        or not isinstance(data.get("sources"), dict)
    ):
        raise ConfigError(f"{path} is not a results.json written by 'python -m avatar eval'")
    return data


def _cell(value: Any, fmt: str) -> str:
    if isinstance(value, int | float) and math.isfinite(value):
        return fmt.format(value)
    return "–"


def _delta_cell(new: Any, old: Any, fmt: str) -> str:
    if isinstance(new, int | float) and isinstance(old, int | float):
        signed = fmt if fmt.startswith("{:+") else fmt.replace("{:", "{:+", 1)
        return signed.format(new - old)
    return "–"


def _table(rows: list[tuple[str, dict[str, Any]]], columns: list[tuple[str, str, str]], cell) -> list[str]:
    lines = ["| case | " + " | ".join(h for _, h, _ in columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, metrics in rows:
        lines.append(f"| {name} | " + " | ".join(cell(metrics, key, fmt) for key, _, fmt in columns) + " |")
    return lines


def _columns_for(entry: dict[str, Any]) -> list[tuple[str, str, str]]:
    present = {k for m in entry["cases"].values() for k, v in m.items() if v is not None}
    return [c for c in COLUMNS if c[0] in present]


def render_markdown(document: dict[str, Any], old: dict[str, Any] | None = None) -> str:
    """``report.md`` text: one table per source (engines first, then the real clips), a mean row, the
    failures, optional deltas against ``old`` results, and the explanation of the measures."""
    settings = document["settings"]
    lines = [
        "# Talking-portrait evaluation",
        "",
        f"{document['created']} · fps {settings['fps']:g} · size {settings['size']} · seed {settings['seed']}"
        f" · max seconds {settings['max_seconds'] or 'all'}",
        "",
    ]
    if old is not None and old.get("settings") != settings:
        changed = [
            f"{key} {old.get('settings', {}).get(key)} → {value}"
            for key, value in settings.items()
            if old.get("settings", {}).get(key) != value
        ]
        lines += [f"Compared with a run under other settings ({', '.join(changed)}).", ""]
    sources = document["sources"]
    order = [s for s in sources if s != REFERENCE] + ([REFERENCE] if REFERENCE in sources else [])
    for source in order:
        entry = sources[source]
        title = "Real clips (reference values)" if source == REFERENCE else f"Engine `{source}`"
        columns = _columns_for(entry)
        ok = [(name, m) for name, m in entry["cases"].items() if "error" not in m]
        rows = ok + [("**mean**", entry["summary"])]
        lines += ["", f"## {title}", ""]
        if ok:
            lines += _table(rows, columns, lambda m, key, fmt: _cell(m.get(key), fmt))
        failed = [(name, m["error"]) for name, m in entry["cases"].items() if "error" in m]
        if failed:
            lines += ["", "Failed cases:", ""] + [f"* {name}: {message}" for name, message in failed]
        old_entry = (old or {}).get("sources", {}).get(source)
        if old_entry and ok:
            old_cases = {**old_entry.get("cases", {}), "**mean**": old_entry.get("summary", {})}
            delta_rows = [(name, {"new": m, "old": old_cases.get(name, {})}) for name, m in rows]
            lines += ["", f"Change against {old.get('created', 'the old run')} (new minus old):", ""]
            if set(old_entry.get("cases", {})) != set(entry["cases"]):
                lines += ["The case sets differ: the mean row compares different cases.", ""]
            lines += _table(
                delta_rows,
                columns,
                lambda m, key, fmt: _delta_cell(m["new"].get(key), m["old"].get(key), fmt),
            )
    lines += ["", EXPLANATION]
    return "\n".join(lines)


def write_plots(results: list[CaseResult], folder: Path) -> list[Path]:
    """``folder/<case>.png`` per case: the speech envelope under every source's mouth track."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    by_case: dict[str, list[CaseResult]] = {}
    for result in results:
        if result.error is None and result.mouth is not None:
            by_case.setdefault(result.case, []).append(result)
    written = []
    for case, group in by_case.items():
        fig, ax = plt.subplots(figsize=(10, 3.2), dpi=100)
        env_ax = ax.twinx()
        first = group[0]
        times = np.arange(len(first.envelope)) / first.fps
        env_ax.fill_between(times, first.envelope, color="0.85", step="mid", label="speech envelope (RMS)")
        if first.speech is not None and first.speech.any():
            env_ax.fill_between(
                times,
                0,
                first.envelope.max() * 1.05,
                where=first.speech,
                color="tab:green",
                alpha=0.08,
                step="mid",
                label="VAD speech",
            )
        env_ax.set_ylabel("envelope (RMS)")
        env_ax.set_ylim(bottom=0)
        for result in group:
            t = np.arange(len(result.mouth)) / result.fps
            style = "k--" if result.source == REFERENCE else "-"
            r = result.metrics.get("sync_r")
            label = f"{result.source} (r {r:.2f})" if isinstance(r, float) else result.source
            ax.plot(t, result.mouth, style, linewidth=1.4, label=label)
        ax.set_zorder(env_ax.get_zorder() + 1)
        ax.patch.set_visible(False)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("mouth opening (face heights)")
        ax.set_title(case)
        ax.legend(loc="upper right", fontsize=8)
        fig.tight_layout()
        path = folder / f"{case}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


def write_report(
    results: list[CaseResult], settings: Settings, out_dir: str | Path, compare: str | Path | None = None
) -> dict[str, Any]:
    """Write ``results.json``, ``report.md`` and ``plots/`` into ``out_dir``; returns the JSON document."""
    out = Path(out_dir)
    old = load_results(compare) if compare else None
    try:
        out.mkdir(parents=True, exist_ok=True)
        document = build_results(results, settings)
        (out / "results.json").write_text(json.dumps(document, indent=1, allow_nan=False), encoding="utf-8")
        (out / "report.md").write_text(render_markdown(document, old), encoding="utf-8")
        write_plots(results, out / "plots")
    except OSError as exc:
        raise ConfigError(f"cannot write the report into {out}: {exc.strerror or exc}") from None
    return document
