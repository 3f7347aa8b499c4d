"""Training data of the motion sampler: prepared clips (``prepare-motion``) -> motion vectors at 25 fps
with their mel power, and seeded, augmented batches of (audio context, motion frames, target frame).

A prepared clip (``<prepared>/motion/<stem>.npz``) holds per source video frame ``times``, ``pose``
(6), ``expression`` (478, 3), ``eye_openness``, ``gaze`` (2), ``keep``, and ``mel_power`` (hops, 40) on
the 10 ms grid, plus ``speaker_id`` and ``split``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from avatar.errors import ConfigError
from avatar.motion.audio_features import CONTEXT_HOPS, PAST_HOPS, frame_context, frame_hops, log_mel
from avatar.motion.representation import SLICES, MotionBasis, eye_blink
from avatar.motion.voice_normaliser import VoiceNormalisation, speech_hops

FPS = 25.0
SILENT_HEAD_HOLD = 0.9
"""In a silence example the head's target is its last pose moved a tenth of the way back to rest: the
training clips hold talking people only, and without this a silent session kept a speaker's head motion."""
MAX_FRAMES_PER_SPEAKER_FOR_BASIS = 3000
LOSS_WEIGHTS = {"mouth": 3.0, "brows": 1.0, "blink": 1.0, "gaze": 0.3, "head": 1.0}
VOICE_SAMPLE_HOPS = 64
"""Speech hops of a clip drawn per example to estimate its voice mean (``voice_normaliser``)."""


@dataclass
class MotionClip:
    """One clip on the 25 fps grid: raw motion vectors (F, 27), which frames are usable, mel power."""

    name: str
    speaker: str
    split: str
    vectors: np.ndarray
    valid: np.ndarray
    mel_power: np.ndarray
    speech: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    """Indices of its speech hops (``voice_normaliser.speech_hops``)."""

    @property
    def frames(self) -> int:
        return len(self.vectors)


def read_prepared(folder: str | Path, splits: tuple[str, ...]) -> list[dict]:
    """The prepared clips of ``splits`` in ``folder/motion`` (dicts of arrays). ConfigError if none."""
    files = sorted((Path(folder) / "motion").glob("*.npz"))
    clips = []
    for path in files:
        with np.load(path, allow_pickle=False) as data:
            item = {k: data[k] for k in data.files}
        item["name"] = path.stem
        if str(item.get("split", "train")) in splits and item["keep"].sum() >= FPS:
            clips.append(item)
    if not clips:
        raise ConfigError(
            f"no prepared clips of split {','.join(splits)} in {folder}/motion "
            "(run python -m avatar prepare-motion first)"
        )
    return clips


def head_relative(pose: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """(frames, 5): pitch, yaw, roll and x, y translation (face heights) relative to the clip median."""
    angles = pose[:, :3] - np.median(pose[keep, :3], axis=0)
    size = np.exp(pose[:, 5:6])
    shift = pose[:, 3:5] * size
    scale = float(np.median(size[keep]))
    shift = (shift - np.median(shift[keep], axis=0)) / scale
    return np.concatenate([angles, shift], axis=1).astype(np.float32)


def source_vectors(item: dict, basis: MotionBasis) -> np.ndarray:
    """Raw motion vectors (source frames, 27) of a prepared clip (non-kept frames hold garbage)."""
    keep = item["keep"].astype(bool)
    expression = np.nan_to_num(item["expression"])
    gaze = item["gaze"] - np.median(item["gaze"][keep], axis=0)
    blink = eye_blink(item["eye_openness"], keep)
    return basis.encode(
        expression, blink, np.nan_to_num(gaze), np.nan_to_num(head_relative(item["pose"], keep))
    )


def resample(item: dict, vectors: np.ndarray, fps: float = FPS) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation of source-frame vectors onto the ``fps`` grid; a frame is valid when both
    neighbouring source frames are kept and at most 1.6 source frame intervals apart."""
    times, keep = item["times"].astype(np.float64), item["keep"].astype(bool)
    grid = np.arange(int(np.floor(times[-1] * fps)) + 1) / fps
    right = np.clip(np.searchsorted(times, grid), 1, len(times) - 1)
    left = right - 1
    span = times[right] - times[left]
    weight = np.clip((grid - times[left]) / np.maximum(span, 1e-9), 0.0, 1.0)[:, None]
    out = (1 - weight) * vectors[left] + weight * vectors[right]
    interval = float(np.median(np.diff(times))) if len(times) > 1 else 1.0 / fps
    valid = keep[left] & keep[right] & (span <= 1.6 * interval) & (grid >= times[0])
    return out.astype(np.float32), valid


def fit_basis(items: list[dict], seed: int = 0) -> MotionBasis:
    """PCA bases from kept frames of the training clips (at most 3,000 frames per speaker)."""
    rng = np.random.default_rng(seed)
    by_speaker: dict[str, list[np.ndarray]] = {}
    for item in items:
        frames = np.flatnonzero(item["keep"])
        by_speaker.setdefault(str(item["speaker_id"]), []).append(item["expression"][frames])
    samples = []
    for chunks in by_speaker.values():
        frames = np.concatenate(chunks)
        pick = rng.permutation(len(frames))[:MAX_FRAMES_PER_SPEAKER_FOR_BASIS]
        samples.append(frames[pick])
    return MotionBasis.fit_pca(np.nan_to_num(np.concatenate(samples)))


def build_clips(items: list[dict], basis: MotionBasis) -> list[MotionClip]:
    clips = []
    for item in items:
        vectors, valid = resample(item, source_vectors(item, basis))
        clips.append(
            MotionClip(
                item["name"],
                str(item["speaker_id"]),
                str(item["split"]),
                vectors,
                valid,
                item["mel_power"].astype(np.float32),
                speech_hops(log_mel(item["mel_power"])),
            )
        )
    return clips


def loss_weights() -> np.ndarray:
    """Per-value loss weights (27,) of the normalised motion vector."""
    weights = np.ones(SLICES.head.stop, np.float32)
    weights[SLICES.mouth] = LOSS_WEIGHTS["mouth"]
    weights[SLICES.brows] = LOSS_WEIGHTS["brows"]
    weights[SLICES.blink] = LOSS_WEIGHTS["blink"]
    weights[SLICES.gaze] = LOSS_WEIGHTS["gaze"]
    weights[SLICES.head] = LOSS_WEIGHTS["head"]
    return weights


@dataclass
class Augment:
    """Audio and motion-frame augmentation (all off for validation)."""

    gain_db: float = 12.0
    noise_prob: float = 0.5
    snr_db: tuple[float, float] = (5.0, 40.0)
    shift_prob: float = 0.5
    shift_bins: float = 1.5
    context_noise: float = 0.1
    mouth_context_noise: float = 1.0
    """The mouth block of the motion frames gets noise of std U(0.2, 1) * this: the mouth must come
    from the audio, not from copying the last frames (which alone predict the next frame well)."""
    audio_drop: float = 0.15
    tempo_prob: float = 0.0
    tempo_range: float = 1.25
    """Share of examples heard faster or slower (speed perturbation without a pitch change): the window's
    hops and motion frames are read at ``s`` times their spacing around the frame, ``s`` log-uniform in
    ``[1 / tempo_range, tempo_range]``; the target frame stays where it is. Off for the shipped model:
    with 0.5 the validation speakers' mouth and width r in motion space rose by 0.02 on average over two
    seeds, but rendered mouth r fell (0.38 against 0.43; docs/motion.md)."""
    spec_masks: int = 0
    spec_bands: int = 6
    spec_hops: int = 4
    """SpecAugment on the log-mel window: ``spec_masks`` frequency masks of 0..``spec_bands`` bands and as
    many time masks of 0..``spec_hops`` hops per example, each set to the window's mean, so the mouth
    cannot lean on one band or one instant of one voice."""
    silence_prob: float = 0.1
    """Share of examples whose audio is replaced by silence (digital zeros or a faint noise floor, -100 to
    -50 dB) with the mouth at rest and the head easing from its last pose towards rest (blinks and gaze as
    they were): the clips hold pauses of a second at most, so without these a long
    silence (a listener, a gap between sentences of a voice agent) left the lips parted."""


def voice_prior(clips: list[MotionClip]) -> np.ndarray:
    """The corpus's mean log-mel (40,) of speech hops: the mean of its speakers' means."""
    by_speaker: dict[str, list[np.ndarray]] = {}
    for c in clips:
        if len(c.speech):
            by_speaker.setdefault(c.speaker, []).append(log_mel(c.mel_power[c.speech]))
    if not by_speaker:
        raise ConfigError("no speech in the training clips")
    return np.mean([np.concatenate(rows).mean(axis=0) for rows in by_speaker.values()], axis=0)


def spec_augment(log: np.ndarray, rng: np.random.Generator, aug: Augment) -> np.ndarray:
    """``log`` (B, hops, bands) with ``aug.spec_masks`` frequency and time masks per example filled with
    each window's mean (SpecAugment without time warping)."""
    b, hops, bands = log.shape
    fill = log.mean(axis=(1, 2), keepdims=True)
    masked = np.zeros(log.shape, dtype=bool)
    for size, axis in ((aug.spec_bands, 2), (aug.spec_hops, 1)):
        n = log.shape[axis]
        grid = np.arange(n)[None]
        for _ in range(aug.spec_masks):
            width = rng.integers(0, size + 1, b)
            first = rng.integers(0, n - width + 1)
            inside = (grid >= first[:, None]) & (grid < (first + width)[:, None])
            masked |= inside[:, None, :] if axis == 2 else inside[:, :, None]
    return np.where(masked, fill, log).astype(np.float32)


def _interpolate_rows(rows: np.ndarray, at: np.ndarray) -> np.ndarray:
    """``rows`` (T, C) read at fractional indices ``at`` (K,) by linear interpolation; indices outside
    [0, T - 1] give zero rows."""
    lo = np.floor(at).astype(int)
    frac = (at - lo)[:, None].astype(np.float32)
    inside = (at >= 0) & (at <= len(rows) - 1)
    lo_c, hi_c = np.clip(lo, 0, len(rows) - 1), np.clip(lo + 1, 0, len(rows) - 1)
    out = rows[lo_c] * (1 - frac) + rows[hi_c] * frac
    return np.where(inside[:, None], out, 0.0).astype(np.float32)


class MotionSamples:
    """Frames to learn from, sampled with speaker weights ``1 / sqrt(speaker frames)`` (so one speaker
    with hours cannot dominate), turned into batches of normalised arrays.

    With ``voice`` the log-mel windows are shifted as the sampler shifts them (``voice_normaliser``):
    by a voice mean estimated from ``min(H, 64)`` of the clip's speech hops (augmented with the window)
    and weighted ``H / (H + prior_hops)`` against the prior, ``H`` hops of speech heard so far being
    0 in 15% of examples (a voice's first words) and log-uniform in 10..3000 otherwise."""

    def __init__(
        self,
        clips: list[MotionClip],
        basis: MotionBasis,
        context_frames: int,
        voice: VoiceNormalisation | None = None,
    ) -> None:
        self.clips, self.basis, self.n, self.voice = clips, basis, context_frames, voice
        self.normed = [basis.normalise(c.vectors) for c in clips]
        self.rest = basis.normalise(basis.rest_vector()[None])[0]
        refs, weights = [], []
        speaker_frames: dict[str, int] = {}
        for c in clips:
            speaker_frames[c.speaker] = speaker_frames.get(c.speaker, 0) + int(c.valid.sum())
        for ci, c in enumerate(clips):
            ok = c.valid.copy()
            for k in range(1, context_frames + 1):  # the motion frames must be usable too
                ok[k:] &= c.valid[:-k]
            frames = np.flatnonzero(ok)
            refs.append(np.stack([np.full(len(frames), ci), frames], axis=1))
            weights.append(np.full(len(frames), 1.0 / np.sqrt(speaker_frames[c.speaker])))
        self.refs = np.concatenate(refs)
        w = np.concatenate(weights)
        self.probs = w / w.sum()
        speech = np.concatenate([c.mel_power.sum(axis=1) for c in clips])
        self.speech_power = float(np.median(speech[speech > 0])) if (speech > 0).any() else 1.0

    def __len__(self) -> int:
        return len(self.refs)

    def batch(self, rng: np.random.Generator, size: int, aug: Augment | None) -> dict[str, np.ndarray]:
        pick = self.refs[rng.choice(len(self.refs), size=size, p=self.probs)]
        return self.gather(pick, rng, aug)

    def gather(
        self, refs: np.ndarray, rng: np.random.Generator | None, aug: Augment | None
    ) -> dict[str, np.ndarray]:
        """Arrays for (clip, frame) pairs: mel (B, 48, 40) log, context (B, n, 27), target (B, 27),
        audio_keep (B,)."""
        tempo = np.ones(len(refs))
        if aug is not None and rng is not None and aug.tempo_prob > 0:
            scaled = rng.random(len(refs)) < aug.tempo_prob
            tempo[scaled] = np.exp(rng.uniform(-1.0, 1.0, int(scaled.sum())) * np.log(aug.tempo_range))
        mel = np.stack([self._mel_window(c, f, s) for (c, f), s in zip(refs, tempo, strict=True)])
        context = np.stack([self._motion_frames(c, f, s) for (c, f), s in zip(refs, tempo, strict=True)])
        target = np.stack([self.normed[c][f] for c, f in refs])
        keep = np.ones(len(refs), np.float32)
        voice = self._voice_hops(refs, rng) if self.voice is not None else None
        if aug is not None and rng is not None:
            last = context[:, -1].copy()
            if voice is not None:  # the same gain, noise and band shift as the window
                both = self._augment_audio(np.concatenate([mel, voice[0]], axis=1), rng, aug)
                mel, voice = both[:, : mel.shape[1]], (both[:, mel.shape[1] :], voice[1], voice[2])
            else:
                mel = self._augment_audio(mel, rng, aug)
            context = context + rng.normal(size=context.shape).astype(np.float32) * (
                aug.context_noise * rng.random((len(refs), 1, 1)).astype(np.float32)
            )
            mouth_std = aug.mouth_context_noise * rng.uniform(0.2, 1.0, size=(len(refs), 1, 1))
            context[:, :, SLICES.mouth] += (
                rng.normal(size=context[:, :, SLICES.mouth].shape) * mouth_std
            ).astype(np.float32)
            keep = (rng.random(len(refs)) >= aug.audio_drop).astype(np.float32)
            silent = rng.random(len(refs)) < aug.silence_prob
            if silent.any():
                level = 10.0 ** (rng.uniform(-100.0, -50.0, size=(int(silent.sum()), 1, 1)) / 10.0)
                mel[silent] = level * rng.exponential(size=mel[silent].shape)
                target[np.ix_(silent, np.arange(SLICES.brows.stop))] = self.rest[: SLICES.brows.stop]
                head = np.arange(SLICES.head.start, SLICES.head.stop)
                rest_head = self.rest[SLICES.head]
                eased = rest_head + SILENT_HEAD_HOLD * (last[silent][:, head] - rest_head)
                target[np.ix_(silent, head)] = eased
        log = log_mel(mel)
        if aug is not None and rng is not None and aug.spec_masks > 0:
            log = spec_augment(log, rng, aug)
        if voice is not None:
            rows, mask, weight = voice
            mean = (log_mel(rows) * mask[..., None]).sum(axis=1) / np.maximum(mask.sum(axis=1), 1.0)[:, None]
            prior = self.voice.prior
            log = self.voice.apply(log, prior + weight[:, None] * (mean - prior))
        return {
            "mel": log.astype(np.float32),
            "context": context.astype(np.float32),
            "target": target,
            "audio_keep": keep,
        }

    def _mel_window(self, clip: int, frame: int, tempo: float) -> np.ndarray:
        """(CONTEXT_HOPS, bands) mel power of ``frame``'s window, its hops ``tempo`` times as far apart
        (linear interpolation; zeros outside the clip, as ``frame_context``)."""
        power = self.clips[clip].mel_power
        if tempo == 1.0:
            return frame_context(power, frame, FPS)
        at = frame_hops(frame, FPS) + (np.arange(CONTEXT_HOPS) - PAST_HOPS) * tempo
        return _interpolate_rows(power, at)

    def _motion_frames(self, clip: int, frame: int, tempo: float) -> np.ndarray:
        """(n, D) normalised motion frames before ``frame``, ``tempo`` frames apart (the first frame
        repeats before the clip's start)."""
        normed = self.normed[clip]
        if tempo == 1.0:
            return normed[np.maximum(np.arange(frame - self.n, frame), 0)]
        at = np.maximum(frame - np.arange(self.n, 0, -1) * tempo, 0.0)
        return _interpolate_rows(normed, at)

    def _voice_hops(
        self, refs: np.ndarray, rng: np.random.Generator | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per example: speech-hop mel power (B, 64, 40), which rows count (B, 64) and the voice mean's
        weight against the prior (B,). Without ``rng`` every speech hop of the clip counts fully."""
        rows = np.zeros((len(refs), VOICE_SAMPLE_HOPS, self.clips[0].mel_power.shape[1]), np.float32)
        mask = np.zeros((len(refs), VOICE_SAMPLE_HOPS), np.float32)
        weight = np.zeros(len(refs), np.float32)
        for i, (c, _) in enumerate(refs):
            speech = self.clips[c].speech
            if not len(speech):
                continue
            if rng is None:
                heard, pick = float(len(speech)), speech[:: max(1, len(speech) // VOICE_SAMPLE_HOPS)]
            else:
                heard = 0.0 if rng.random() < 0.15 else float(np.exp(rng.uniform(np.log(10), np.log(3000))))
                pick = rng.choice(speech, size=max(1, min(int(heard), VOICE_SAMPLE_HOPS)))
            pick = pick[:VOICE_SAMPLE_HOPS]
            rows[i, : len(pick)] = self.clips[c].mel_power[pick]
            mask[i, : len(pick)] = 1.0
            weight[i] = heard / (heard + self.voice.prior_hops)
        return rows, mask, weight

    def _augment_audio(self, mel: np.ndarray, rng: np.random.Generator, aug: Augment) -> np.ndarray:
        b, _, bands = mel.shape
        mel = mel * (10.0 ** (rng.uniform(-aug.gain_db, aug.gain_db, size=(b, 1, 1)) / 10.0))
        shift = rng.uniform(-aug.shift_bins, aug.shift_bins, size=b) * (rng.random(b) < aug.shift_prob)
        grid = np.arange(bands, dtype=np.float32)
        for i in np.flatnonzero(shift):
            src = np.clip(grid - shift[i], 0, bands - 1)
            lo = np.floor(src).astype(int)
            hi = np.minimum(lo + 1, bands - 1)
            frac = (src - lo)[None]
            mel[i] = mel[i][:, lo] * (1 - frac) + mel[i][:, hi] * frac
        noisy = rng.random(b) < aug.noise_prob
        if noisy.any():
            snr = rng.uniform(*aug.snr_db, size=(b, 1, 1))
            tilt = rng.uniform(-1.0, 0.3, size=(b, 1, 1)) * np.linspace(0, 3, bands)[None, None]
            level = self.speech_power / bands * 10.0 ** (-snr / 10.0)
            noise = level * 10.0**tilt * rng.exponential(size=mel.shape)
            mel = np.where(noisy[:, None, None], mel + noise, mel)
        return mel.astype(np.float32)
