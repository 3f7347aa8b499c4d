"""Lip sync by a reference mouth track: mouth-to-photon for clients that need not decode live.

The envelope method (stream_benchmark.py ``best_lag``) correlates the loudness the client sent with the
mouth it received; learned motion does not open the mouth in step with loudness closely enough for that
(r ~0.2). Here the live mouth is compared with the mouth the SAME engine draws for the SAME audio offline:

1. ``reference_mouth``: the audio the client sent (silence + speech) as the server hears it
   (``heard_audio``: through aiortc's own Opus encoder and decoder and the server's 16 kHz resampler,
   ``delay_s`` ~6.5 ms behind the sent audio) is rendered by ``python -m avatar render`` (a subprocess)
   with the server's engine, fps, size, engine options, portrait and framing, and the session's seed
   (the server seeds session n with ``engine.seed + n``, n counting the sessions it opened from 1);
   frame k shows heard instant k / fps, i.e. sent instant k / fps - delay_s. Its mouth opening per frame
   (``mouth_openings``: MediaPipe inner-lip gap 13-14 over face height 10-152, on 256x256 RGB) is cached
   in ``cache_dir`` by a hash of all of those, so a render serves later runs too.
2. ``decode_kept``: a light client's kept encoded frames ``(arrival monotonic s, RTP timestamp, bytes)``
   are decoded after the sessions ended (PyAV, VP8 or H.264, whichever was negotiated) into 256x256 RGB
   paired with their arrival times, so decoding costs the live run nothing.
3. ``send_times``: audio instant tau (s into the sent audio) counts as sent at the wall time of the 20 ms
   chunk holding sample tau * 16000 (``PacedAudioTrack`` / ``PreEncodedAudioTrack`` ``sent``: one
   (wall time, RMS) per chunk, in order) plus tau's offset into that chunk. At 25 fps (2 chunks a frame)
   frame instants fall on chunk starts, where this is exactly the chunk's wall time; the offset keeps a few
   ms of codec delay (``delay_s``) from moving a frame by a whole chunk. (A paced track hands a chunk over
   at its first sample's time; a real microphone could only send it 20 ms later, once it was recorded.)
4. ``reference_lag``: the lag L (s, 0..1 in 10 ms steps) maximising Pearson r between the reference mouth
   placed at the send times of its audio instants, m_ref(send_time(k / fps - delay_s)), and the live mouth at
   arrival times, m_live(t + L), both interpolated on a 10 ms wall-clock grid over the speech (+-0.5 s).
   The frame showing audio instant tau thus arrives at send_time(tau) + L: mouth-to-photon by reference.

Why the seed and the Opus round trip matter: the mouth opening MediaPipe reads from the pictures is NOT
mostly audio-determined. The learned motion's mouth itself is (two seeds' mouth coefficients agree at
r 0.97 on the val clips, motion space), but the seed also draws the head motion, and the head's turns
change the lip gap the renderer draws and, much more, the gap MediaPipe reads: offline, two seeds of the
same audio gave mouth tracks correlated at only r 0.17-0.49, and 0.87-0.93 with the head held still
(astronaut, english_radio.wav, 2026-12-08; ``runs``-style probes, not tests). The clean vs the
Opus-decoded audio (same seed) correlated at r 0.72. With both matched, a live light client on this
machine found r 0.86 (lag 230 ms); with the clean audio 0.72; with the wrong seed 0.16. The server reports
each session's seed in its ``stats`` events (``seed``); without it (an older server) session n is taken to
have ``engine.seed + n`` in the order of the offers, and a wrong guess shows as a low
``lag_ref_correlation``, not as a wrong lag.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import wave
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import av
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from avatar.audio.io import float_to_pcm16  # noqa: E402

SAMPLE_RATE = 16000
CHUNK_S = 0.02
"""Seconds of audio per sent chunk (``tests.paced_audio.CHUNK`` samples at 16 kHz)."""
MOUTH_SIDE = 256
"""Pictures are resized to MOUTH_SIDE x MOUTH_SIDE before MediaPipe (as ``VideoRecorder`` keeps them)."""
DEFAULT_CACHE = ROOT / "out" / "lip_sync_reference"
PYAV_DECODERS = {"VP8": "vp8", "H264": "h264"}
"""aiortc codec name -> PyAV decoder."""


def mouth_openings(images: Sequence[np.ndarray]) -> np.ndarray:
    """Inner-lip gap / face height per RGB frame (MediaPipe face mesh, landmarks 13-14 over 10-152);
    NaN where no face was found. Shape (len(images),)."""
    from avatar.facemesh import import_mediapipe

    mp = import_mediapipe()
    out = np.full(len(images), np.nan)
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1) as mesh:
        for i, image in enumerate(images):
            found = mesh.process(image).multi_face_landmarks
            if not found:
                continue
            lm = found[0].landmark
            gap = np.hypot(lm[13].x - lm[14].x, lm[13].y - lm[14].y)
            face = np.hypot(lm[10].x - lm[152].x, lm[10].y - lm[152].y)
            out[i] = gap / max(face, 1e-6)
    return out


def to_mouth_side(image: np.ndarray) -> np.ndarray:
    """RGB ``image`` (H, W, 3) resized to MOUTH_SIDE square (INTER_AREA, as ``VideoRecorder``)."""
    return cv2.resize(image, (MOUTH_SIDE, MOUTH_SIDE), interpolation=cv2.INTER_AREA)


def decode_kept(codec: str | None,
                kept: Sequence[tuple[float, int, bytes]]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Decode a light client's kept frames ``(arrival monotonic s, RTP timestamp, encoded bytes)`` in
    arrival order with PyAV; a timestamp counts once (its first arrival, as ``delivery``). Returns the
    arrival times (s, shape (n,)) of the frames that decoded and their MOUTH_SIDE x MOUTH_SIDE RGB
    pictures. A frame the decoder rejects (e.g. lost references) is skipped, not fatal."""
    if not kept:
        return np.zeros(0), []
    if codec not in PYAV_DECODERS:
        raise ValueError(f"cannot decode kept frames of codec {codec!r} (known: {', '.join(PYAV_DECODERS)})")
    decoder = av.CodecContext.create(PYAV_DECODERS[codec], "r")
    arrival_of: dict[int, float] = {}
    arrivals: list[float] = []
    images: list[np.ndarray] = []

    def take(frames: list[av.VideoFrame]) -> None:
        for frame in frames:
            if frame.pts in arrival_of:
                arrivals.append(arrival_of[frame.pts])
                images.append(to_mouth_side(frame.to_ndarray(format="rgb24")))

    for arrived, timestamp, data in sorted(kept, key=lambda f: f[0]):
        if timestamp in arrival_of:
            continue
        arrival_of[timestamp] = arrived
        packet = av.Packet(data)
        packet.pts = timestamp
        try:
            take(decoder.decode(packet))
        except av.error.FFmpegError:
            continue
    try:
        take(decoder.decode(None))  # frames a decoder held back (none for VP8 / Baseline H.264)
    except av.error.FFmpegError:
        pass
    return np.array(arrivals), images


def decode_mp4(path: str | Path) -> list[np.ndarray]:
    """Every video frame of ``path`` as MOUTH_SIDE x MOUTH_SIDE RGB, in order."""
    with av.open(str(path)) as container:
        return [to_mouth_side(frame.to_ndarray(format="rgb24")) for frame in container.decode(video=0)]


def send_times(sent: Sequence[tuple[float, float]], tau: np.ndarray) -> np.ndarray:
    """Wall time (s) at which audio instant ``tau`` (s into the sent audio, any shape) counts as sent: that
    of the 20 ms chunk holding it plus tau's offset into the chunk (``sent``: (wall time, RMS) per chunk in
    order; instants before the first or past the last chunk are placed from that chunk)."""
    wall = np.array([t for t, _ in sent])
    tau = np.asarray(tau, dtype=np.float64)
    chunk = np.clip(np.floor(tau / CHUNK_S + 1e-6).astype(int), 0, len(wall) - 1)
    return wall[chunk] + (tau - chunk * CHUNK_S)


def reference_lag(ref_times: np.ndarray, ref_mouth: np.ndarray, arrivals: np.ndarray, live_mouth: np.ndarray,
                  start: float, stop: float, max_lag_s: float = 1.0,
                  step: float = 0.01) -> tuple[float, float]:
    """Lag L (s) in 0..``max_lag_s`` maximising Pearson r of m_ref(t) and m_live(t + L) on a ``step`` grid
    of wall time t in [start, stop), and that r; (nan, nan) when either track has under 10 valid
    samples or is flat. ``ref_times``: wall time each reference frame's audio was sent; ``arrivals``: wall
    time each live frame arrived (both monotonic s; NaN mouths are left out)."""
    ref_ok, live_ok = ~np.isnan(ref_mouth), ~np.isnan(live_mouth)
    if ref_ok.sum() < 10 or live_ok.sum() < 10:
        return float("nan"), float("nan")
    order = np.argsort(ref_times[ref_ok], kind="stable")
    grid = np.arange(start, stop, step)
    ref_g = np.interp(grid, ref_times[ref_ok][order], ref_mouth[ref_ok][order])
    live_t, live_m = arrivals[live_ok], live_mouth[live_ok]
    if len(grid) < 10 or ref_g.std() < 1e-9:
        return float("nan"), float("nan")
    best = (float("nan"), -2.0)
    for lag in np.arange(0.0, max_lag_s + 1e-9, step):
        live_g = np.interp(grid + lag, live_t, live_m)
        if live_g.std() < 1e-9:
            continue
        r = float(np.corrcoef(ref_g, live_g)[0, 1])
        if r > best[1]:
            best = (round(float(lag), 3), r)
    return best if best[1] > -2.0 else (float("nan"), float("nan"))


def lip_sync_by_reference(reference: ReferenceTrack | None, sent: Sequence[tuple[float, float]],
                          arrivals: np.ndarray, live_mouth: np.ndarray, start: float, stop: float) -> dict:
    """``mouth_to_photon_ref_ms`` and ``lag_ref_correlation`` of one session (None when not measured):
    ``reference_lag`` with reference frame k placed at send_time(k / fps - delay_s)."""
    if reference is None or not sent or len(arrivals) == 0:
        return {"mouth_to_photon_ref_ms": None, "lag_ref_correlation": None}
    shown = np.arange(len(reference.mouth)) / reference.fps - reference.delay_s
    lag, r = reference_lag(send_times(sent, shown), reference.mouth, arrivals, live_mouth, start, stop)
    return {"mouth_to_photon_ref_ms": round(lag * 1000, 0) if lag == lag else None,
            "lag_ref_correlation": round(r, 3) if r == r else None}


@dataclass(frozen=True)
class ReferenceSpec:
    """What the server draws a session with (``render`` options): its engine, the portrait, and
    ``seed``: the server's ``engine.seed`` (a session n gets ``seed + n``, see ``References``)."""

    portrait: str
    engine: str = "parametric"
    fps: float = 25.0
    size: int = 512
    seed: int = 0
    framing: str = "head_and_shoulders"
    options: dict = field(default_factory=dict)
    """Engine options; ``motion``, ``motion_model`` and ``checkpoint`` are passed to ``render``, others
    (speed settings such as ``threads``) do not change the picture and are left out."""

    def render_args(self) -> list[str]:
        args = ["--portrait", self.portrait, "--engine", self.engine, "--fps", str(self.fps),
                "--size", str(self.size), "--seed", str(self.seed), "--framing", self.framing]
        for key, flag in (("motion", "--motion"), ("motion_model", "--motion-model"),
                          ("checkpoint", "--checkpoint")):
            if self.options.get(key):
                args += [flag, str(self.options[key])]
        return args


@dataclass(frozen=True)
class ReferenceTrack:
    """The reference mouth: ``mouth[k]`` (inner-lip gap / face height, NaN without a face) of the frame
    showing heard instant k / ``fps`` s, which is sent instant k / ``fps`` - ``delay_s``."""

    mouth: np.ndarray
    fps: float
    delay_s: float = 0.0


def spec_from_config(engine: str, overrides: Sequence[str] = (), avatar: str | None = None,
                     size: int | None = None) -> ReferenceSpec:
    """The ``ReferenceSpec`` of a server started with ``--engine engine --set ...overrides`` (the
    project's ``configs/default.yaml`` otherwise; a server given by URL is assumed to use it too), for
    the avatar id ``avatar`` (None: the default portrait) at side ``size`` (None: ``engine.size``)."""
    from server.config import load_config

    config = load_config(overrides=overrides, flags={"engine.name": engine})
    portrait = config.path(config.avatar.default)
    framing = config.avatar.framing
    if avatar:
        folder = config.path(config.avatar.dir)
        found = [path for path in (folder / f"{avatar}{ext}" for ext in (".png", ".jpg", ".jpeg"))
                 if path.is_file()]
        if not found:
            raise SystemExit(f"lip sync reference: no portrait for avatar {avatar!r} in {folder}")
        portrait = found[0]
        sidecar = portrait.with_suffix(".json")
        try:
            if sidecar.is_file():
                framing = json.loads(sidecar.read_text()).get("framing", framing)
        except (OSError, ValueError, AttributeError):
            pass
    e = config.engine
    return ReferenceSpec(portrait=str(portrait), engine=e.name, fps=e.fps, size=size or e.size, seed=e.seed,
                         framing=str(framing), options=dict(e.options))


def heard_audio(audio: np.ndarray, packets: Sequence[bytes] | None = None) -> np.ndarray:
    """What the server hears of ``audio`` (16 kHz mono float, as sent by ``PacedAudioTrack`` or, as
    Opus ``packets``, by ``PreEncodedAudioTrack``): aiortc's Opus encoder (``opus_packets``), aiortc's
    Opus decoder (48 kHz stereo) and the server's ``MonoResampler`` (16 kHz mono float), in order."""
    from aiortc.codecs import get_decoder
    from aiortc.jitterbuffer import JitterFrame
    from aiortc.rtcrtpparameters import RTCRtpCodecParameters

    from benchmarks.stream_benchmark import opus_packets
    from server.audio_input import MonoResampler

    decoder = get_decoder(RTCRtpCodecParameters(mimeType="audio/opus", clockRate=48000, channels=2,
                                                payloadType=111))
    resample = MonoResampler()
    packets = packets if packets is not None else opus_packets(audio)
    heard = [resample(frame) for k, packet in enumerate(packets)
             for frame in decoder.decode(JitterFrame(packet, k * 960))]
    return np.concatenate(heard) if heard else np.zeros(0, np.float32)


def delay_of(heard: np.ndarray, sent: np.ndarray, max_delay_s: float = 0.03) -> float:
    """Seconds (whole 16 kHz samples, 0..``max_delay_s``) by which ``heard`` lags ``sent``: the shift
    maximising their normalised cross-correlation (0 for silence)."""
    n = min(len(heard), len(sent))
    best, best_r = 0, 0.0
    for shift in range(0, min(int(max_delay_s * SAMPLE_RATE), n - 1) + 1):
        a, b = heard[shift:n].astype(np.float64), sent[: n - shift].astype(np.float64)
        norm = np.sqrt(np.dot(a, a) * np.dot(b, b))
        r = float(np.dot(a, b) / norm) if norm > 0 else 0.0
        if r > best_r:
            best, best_r = shift, r
    return best / SAMPLE_RATE


def reference_key(heard: np.ndarray, spec: ReferenceSpec) -> str:
    """Cache key: the heard samples, every ``spec`` field and the portrait file's size and mtime."""
    digest = hashlib.sha256(float_to_pcm16(heard).tobytes())
    portrait = Path(spec.portrait)
    stat = portrait.stat() if portrait.is_file() else None
    digest.update(json.dumps([asdict(spec), stat and [stat.st_size, stat.st_mtime_ns]], sort_keys=True,
                             default=str).encode())
    return digest.hexdigest()[:20]


def write_wav(path: Path, audio: np.ndarray) -> None:
    """16 kHz mono 16-bit WAV of ``audio`` (``float_to_pcm16``)."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(float_to_pcm16(audio).tobytes())


def reference_mouth(heard: np.ndarray, spec: ReferenceSpec, cache_dir: Path = DEFAULT_CACHE,
                    delay_s: float = 0.0) -> ReferenceTrack:
    """The reference mouth track of 16 kHz ``heard`` audio (``heard_audio``, ``delay_s`` behind what was
    sent) drawn as ``spec`` says, ``spec.seed`` being the session's seed. Renders with ``python -m avatar
    render`` (the MP4 and the mouth track are kept in ``cache_dir``) unless a cached track exists. A failed
    render ends the benchmark with its last error line."""
    key = reference_key(heard, spec)
    cache_dir.mkdir(parents=True, exist_ok=True)
    track_path = cache_dir / f"{key}.npy"
    if track_path.is_file():
        return ReferenceTrack(np.load(track_path), spec.fps, delay_s)
    mp4 = cache_dir / f"{key}.mp4"
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "heard.wav"
        write_wav(wav, heard)
        cmd = [sys.executable, "-m", "avatar", "render", *spec.render_args(), "--audio", str(wav),
               "--out", str(mp4), "--quiet", "--no-manifest"]
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ})
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"lip sync reference: python -m avatar render failed: {last}")
    mouth = mouth_openings(decode_mp4(mp4))
    np.save(track_path, mouth)
    (cache_dir / f"{key}.json").write_text(json.dumps({"spec": asdict(spec), "frames": len(mouth),
                                                       "audio_s": len(heard) / SAMPLE_RATE}, indent=2))
    return ReferenceTrack(mouth, spec.fps, delay_s)


class References:
    """Reference tracks of one sent ``audio`` per (video side, session seed), made on first use and
    kept (``track``)."""

    def __init__(self, audio: np.ndarray, spec: ReferenceSpec, cache_dir: Path = DEFAULT_CACHE,
                 packets: Sequence[bytes] | None = None) -> None:
        self.spec, self.cache_dir = spec, cache_dir
        self.heard = heard_audio(audio, packets)
        self.delay_s = delay_of(self.heard, audio)
        self._tracks: dict[tuple[int, int], ReferenceTrack] = {}

    def track(self, size: int | None, seed: int) -> ReferenceTrack:
        """The track at video side ``size`` (None: the spec's) of a session whose motion seed is ``seed``
        (``session_seed``)."""
        side = size or self.spec.size
        if (side, seed) not in self._tracks:
            spec = replace(self.spec, size=side, seed=seed)
            self._tracks[side, seed] = reference_mouth(self.heard, spec, self.cache_dir, self.delay_s)
        return self._tracks[side, seed]


def session_seed(run: dict, engine_seed: int, session_number: int) -> int:
    """A streamed session's motion seed: the ``seed`` its server reported in ``stats``, else (an older
    server) ``engine_seed + session_number``, as the server seeds session n."""
    for event in reversed(run.get("stats") or []):
        if isinstance(event.get("seed"), int):
            return event["seed"]
    return engine_seed + session_number
