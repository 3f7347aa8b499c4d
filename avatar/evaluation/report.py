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

REENACTMENT_COLUMNS: list[tuple[str, str, str]] = [
    ("face_detection_rate", "face found", "{:.0%}"),
    ("sync_r", "sync r", "{:.2f}"),
    ("gt_r", "mouth r", "{:.2f}"),
    ("gt_lag_ms", "lag ms", "{:+.0f}"),
    ("gt_width_r", "width r", "{:.2f}"),
    ("lip_closure_recall", "closures", "{:.0%}"),
    ("lip_closed_share", "closed", "{:.0%}"),
    ("lmd", "LMD", "{:.3f}"),
    ("head_yaw_std_ratio", "yaw σ", "{:.2f}"),
    ("head_pitch_std_ratio", "pitch σ", "{:.2f}"),
    ("head_roll_std_ratio", "roll σ", "{:.2f}"),
    ("blinks_per_min", "blinks/min", "{:.1f}"),
    ("gt_frames_unreliable", "unreliable", "{:.0f}"),
    ("gt_frames_excluded", "excluded", "{:.0f}"),
]
"""Columns of the self-reenactment tables (one row per source); on the reference rows the σ columns
show the real head's standard deviation in degrees (the ``head_*_std_deg`` keys) instead of a ratio."""

_REAL_STD = {f"head_{axis}_std_ratio": f"head_{axis}_std_deg" for axis in ("yaw", "pitch", "roll")}

REENACTMENT_EXPLANATION = """\
Each case gives the engine the real speaker's first frame with a face and the clip's own speech, then
compares the output's face mesh with the real clip's, frame by frame at the output fps (the real clip
resampled by nearest frame). Frames where either has no face, or where the real face is turned past 35°
or fits the canonical face badly (its lips cannot be trusted: the thresholds prepare-motion drops training
frames by; **unreliable**), are left out of the comparison (**excluded** counts both, frames per case).
**mouth r** / **width r**: Pearson r of the mouth opening (inner-lip gap 13-14) / width
(corners 61-291), both over face height, at the best lag within ±120 ms (**lag ms** of the opening,
positive = output after the real mouth). **closures**: share of the real speaker's closed-lip frames also
closed in the output; a frame is closed when its opening is below 25 % of that track's own 95th-percentile
opening (each track on its own scale); **closed** is the share of all frames that are closed (an output
that never opens scores 100 % closures, but also a high closed share). **LMD**: mean distance of the 40
lip landmarks after a per-frame similarity fit of eye corners and nose onto the real face, in face
heights (the mouth's resting shape counts; no per-clip mean is removed). **yaw/pitch/roll σ**: the
output's head-angle standard deviation over the real speaker's (1 = as much head motion; reference rows:
the real σ in degrees); their mean over cases is dominated by clips whose real head is nearly still
(GRID: 0.2-0.5°), so the pooled ratio of mean σs is given too. **face found**, **sync r** and
**blinks/min** as below, for each source. Identical clips score LMD ≈ 0.004 (tracking noise), not 0.
"""

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
  (self-reenactment on the real clips), at the best lag within ±120 ms: how much the mouth opens when
  the real one does. The self-reenactment section adds width, closures, LMD and head motion.
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


def reenactment_summary(sources: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{source: {"cases": n, metric: mean}}`` over the self-reenactment cases only (those whose real
    clip was measured), for the ``REENACTMENT_COLUMNS`` metrics and the head σ in degrees, plus for the
    engines ``head_*_std_ratio_pooled`` (mean σ over the reference's mean σ); empty without any case."""
    real_cases = [name for name, m in sources.get(REFERENCE, {}).get("cases", {}).items() if "error" not in m]
    if not real_cases:
        return {}
    keys = [key for key, _, _ in REENACTMENT_COLUMNS] + list(_REAL_STD.values())
    out: dict[str, dict[str, Any]] = {}
    for source in [REFERENCE] + [s for s in sources if s != REFERENCE]:
        cases = sources[source]["cases"]
        ok = [cases[name] for name in real_cases if name in cases and "error" not in cases[name]]
        if not ok:
            continue
        summary: dict[str, Any] = {"cases": len(ok)}
        for key in keys:
            values = [float(m[key]) for m in ok if isinstance(m.get(key), int | float)]
            if values:
                summary[key] = float(np.mean(values))
        out[source] = summary
    real = out.get(REFERENCE, {})
    for source, summary in out.items():
        for ratio, std in _REAL_STD.items():
            if source != REFERENCE and summary.get(std) is not None and real.get(std):
                summary[f"{ratio}_pooled"] = summary[std] / real[std]
    return out


def build_results(results: list[CaseResult], settings: Settings) -> dict[str, Any]:
    """The JSON document written to ``results.json``: settings, per-source per-case metrics and means
    (``sources``), and the self-reenactment means per source (``reenactment``)."""
    sources = summarize(results)
    return _jsonable(
        {
            "format": FORMAT,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "settings": asdict(settings),
            "sources": sources,
            "reenactment": reenactment_summary(sources),
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


def _reenactment_cell(metrics: dict[str, Any], key: str, fmt: str, real: bool) -> str:
    if real and key in _REAL_STD:
        value = metrics.get(_REAL_STD[key])
        return f"{value:.1f}°" if isinstance(value, int | float) and math.isfinite(value) else "–"
    if real and (key.startswith("gt_") or key in ("lip_closure_recall", "lmd")):
        return "–"
    return _cell(metrics.get(key), fmt)


def render_reenactment(document: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    """Markdown lines of the self-reenactment section: means per source, then every case's rows (real
    clip first), and the change of the means against ``old`` when it has them; none without cases."""
    means = document.get("reenactment") or {}
    if not means:
        return []
    columns = REENACTMENT_COLUMNS
    header = " | ".join(h for _, h, _ in columns)
    lines = ["", "## Self-reenactment against the real video", "", REENACTMENT_EXPLANATION.rstrip(), ""]
    lines += ["| source | cases | " + header + " |", "|---" * (len(columns) + 2) + "|"]
    for source, m in means.items():
        cells = " | ".join(_reenactment_cell(m, k, f, source == REFERENCE) for k, _, f in columns)
        lines.append(f"| {source} | {m['cases']} | {cells} |")
    pooled = [
        f"{source} yaw {_cell(m.get('head_yaw_std_ratio_pooled'), '{:.2f}')}, pitch "
        f"{_cell(m.get('head_pitch_std_ratio_pooled'), '{:.2f}')}, roll "
        f"{_cell(m.get('head_roll_std_ratio_pooled'), '{:.2f}')}"
        for source, m in means.items()
        if source != REFERENCE
    ]
    if pooled:
        lines += ["", "Pooled head σ ratios (mean output σ over mean real σ): " + "; ".join(pooled) + "."]
    old_means = (old or {}).get("reenactment") or {}
    shared = [s for s in means if s in old_means]
    if shared:
        lines += ["", f"Change of the means against {old.get('created', 'the old run')} (new minus old):", ""]
        lines += ["| source | cases | " + header + " |", "|---" * (len(columns) + 2) + "|"]
        for source in shared:
            new_m, old_m = means[source], old_means[source]
            cells = " | ".join(_delta_cell(new_m.get(k), old_m.get(k), f) for k, _, f in columns)
            lines.append(f"| {source} | {new_m['cases']} (was {old_m.get('cases', '–')}) | {cells} |")
    sources = document["sources"]
    lines += ["", "| case | source | " + header + " |", "|---" * (len(columns) + 2) + "|"]
    for case in sources[REFERENCE]["cases"]:
        for source in means:
            m = sources[source]["cases"].get(case)
            if m is None:
                continue
            if "error" in m:
                message = m["error"][:60].replace("|", "/")
                lines.append(f"| {case} | {source} | failed: {message} |" + " |" * (len(columns) - 1))
                continue
            cells = " | ".join(_reenactment_cell(m, k, f, source == REFERENCE) for k, _, f in columns)
            lines.append(f"| {case} | {source} | {cells} |")
    return lines


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
    lines += render_reenactment(document, old)
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
