"""Lip sync by a reference mouth track (benchmarks/lip_sync.py): the lag estimator, send times, the audio the
server hears, light clients keeping their encoded frames and decoding them afterwards, session seeds."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

av = pytest.importorskip("av")
pytest.importorskip("aiortc")

from aiortc.jitterbuffer import JitterFrame  # noqa: E402
from aiortc.rtcrtpparameters import RTCRtpCodecParameters  # noqa: E402

from benchmarks import lip_sync  # noqa: E402
from benchmarks.lip_sync import (  # noqa: E402
    References,
    ReferenceSpec,
    ReferenceTrack,
    decode_kept,
    delay_of,
    heard_audio,
    lip_sync_by_reference,
    send_times,
    session_seed,
    spec_from_config,
)
from benchmarks.many_sessions import number_sessions, summarise  # noqa: E402
from benchmarks.stream_benchmark import EncodedFrameCounter  # noqa: E402

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
FPS = 25.0


def smooth_signal(rng: np.random.Generator, seconds: float, rate: float = 100.0,
                  width_s: float = 0.06) -> tuple[np.ndarray, np.ndarray]:
    """A mouth-like random signal: white noise at ``rate`` Hz smoothed by a Gaussian of ``width_s``.
    Returns (times s, values)."""
    n = int(seconds * rate)
    kernel_t = np.arange(-4 * width_s, 4 * width_s + 1e-9, 1 / rate)
    kernel = np.exp(-0.5 * (kernel_t / width_s) ** 2)
    values = np.convolve(rng.standard_normal(n), kernel / kernel.sum(), mode="same")
    return np.arange(n) / rate, values


def paced_sends(rng: np.random.Generator, seconds: float, start: float = 100.0) -> list[tuple[float, float]]:
    """(wall time, RMS) per 20 ms chunk, paced with a little jitter as the paced tracks are."""
    chunks = int(seconds / 0.02)
    return [(start + k * 0.02 + rng.uniform(0, 0.004), 0.1) for k in range(chunks)]


def live_frames(rng: np.random.Generator, sent: list[tuple[float, float]], times: np.ndarray,
                values: np.ndarray, lag_s: float, noise: float) -> tuple[np.ndarray, np.ndarray]:
    """Frames j showing audio instant j / FPS, arriving at send_time + ``lag_s`` + jitter, their mouth the
    signal at that instant plus noise (a few frames lost, one without a face)."""
    shown = np.arange(int(times[-1] * FPS)) / FPS
    arrivals = send_times(sent, shown) + lag_s + rng.uniform(-0.012, 0.012, len(shown))
    mouth = np.interp(shown, times, values) + noise * values.std() * rng.standard_normal(len(shown))
    keep = rng.uniform(size=len(shown)) > 0.03
    arrivals, mouth = arrivals[keep], mouth[keep]
    mouth[5] = np.nan
    order = np.argsort(arrivals)
    return arrivals[order], mouth[order]


def reference_of(times: np.ndarray, values: np.ndarray) -> ReferenceTrack:
    """The reference track: frame k shows audio instant k / FPS."""
    return ReferenceTrack(np.interp(np.arange(int(times[-1] * FPS)) / FPS, times, values), FPS)


@pytest.mark.parametrize("lag_s", [0.23, 0.08, 0.61])
def test_reference_lag_recovers_a_known_lag(lag_s: float) -> None:
    rng = np.random.default_rng(3)
    times, values = smooth_signal(rng, 12.0)
    sent = paced_sends(rng, 12.0)
    arrivals, mouth = live_frames(rng, sent, times, values, lag_s, noise=0.3)
    start, stop = sent[50][0], sent[-1][0]
    result = lip_sync_by_reference(reference_of(times, values), sent, arrivals, mouth, start, stop)
    assert result["mouth_to_photon_ref_ms"] == pytest.approx(lag_s * 1000, abs=20)
    assert result["lag_ref_correlation"] > 0.8


def test_reference_lag_of_an_unrelated_track_is_low() -> None:
    rng = np.random.default_rng(4)
    times, values = smooth_signal(rng, 20.0)
    sent = paced_sends(rng, 20.0)
    _, other = smooth_signal(rng, 20.0)
    arrivals, mouth = live_frames(rng, sent, times, other, 0.2, noise=0.3)
    reference = reference_of(times, values)
    result = lip_sync_by_reference(reference, sent, arrivals, mouth, sent[50][0], sent[-1][0])
    assert result["lag_ref_correlation"] < 0.35


def test_reference_delay_counts_in_the_lag() -> None:
    # the reference was rendered from audio heard 40 ms behind what was sent: its frame k shows sent
    # instant k / FPS - 0.04; placed as if it showed k / FPS it would sit 40 ms late, shortening the lag
    rng = np.random.default_rng(5)
    times, values = smooth_signal(rng, 12.0)
    sent = paced_sends(rng, 12.0)
    arrivals, mouth = live_frames(rng, sent, times, values, 0.2, noise=0.1)
    heard = reference_of(times + 0.04, values)  # heard instant t shows sent instant t - 0.04
    delayed = ReferenceTrack(heard.mouth, FPS, delay_s=0.04)
    start, stop = sent[50][0], sent[-1][0]
    assert lip_sync_by_reference(delayed, sent, arrivals, mouth, start, stop)["mouth_to_photon_ref_ms"] == \
        pytest.approx(200, abs=20)
    assert lip_sync_by_reference(heard, sent, arrivals, mouth, start, stop)["mouth_to_photon_ref_ms"] == \
        pytest.approx(160, abs=20)


def test_no_reference_or_no_frames_is_not_measured() -> None:
    sent = [(0.0, 0.1)]
    empty = {"mouth_to_photon_ref_ms": None, "lag_ref_correlation": None}
    assert lip_sync_by_reference(None, sent, np.arange(3.0), np.ones(3), 0, 1) == empty
    flat = ReferenceTrack(np.ones(100), FPS)
    assert lip_sync_by_reference(flat, sent, np.arange(50) * 0.04, np.arange(50.0), 0, 2) == empty


def test_send_times_take_the_wall_time_of_the_chunk_holding_the_instant() -> None:
    sent = [(10.0, 0.1), (10.025, 0.1), (10.041, 0.1)]
    times = send_times(sent, np.array([0.0, 0.0195, 0.02, 0.04, 0.059, 0.1, -0.01]))
    # chunk starts: the chunk's own time; inside a chunk: plus the offset; past the end: from the last
    assert times == pytest.approx([10.0, 10.0195, 10.025, 10.041, 10.06, 10.101, 9.99])


def test_heard_audio_is_the_sent_audio_through_opus_a_few_ms_late() -> None:
    t = np.arange(16000) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 300 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)
    heard = heard_audio(audio)
    assert abs(len(heard) - len(audio)) <= 640  # the encoder's resampler may hold the last chunk back
    delay = delay_of(heard, audio)
    assert 0.003 <= delay <= 0.015  # Opus pre-skip 6.5 ms plus the resamplers
    shift = round(delay * 16000)
    n = len(heard) - shift
    assert np.corrcoef(heard[shift:], audio[:n])[0, 1] > 0.9


def test_delay_of_finds_a_whole_sample_shift() -> None:
    rng = np.random.default_rng(6)
    sent = rng.standard_normal(8000).astype(np.float32)
    heard = np.concatenate([np.zeros(104, np.float32), sent])[:8000]
    assert delay_of(heard, sent) == pytest.approx(104 / 16000)
    assert delay_of(np.zeros(100), np.zeros(100)) == 0.0


def moving_square_frames(width: int = 96, height: int = 64, count: int = 6) -> list[np.ndarray]:
    """Distinct pictures: a bright square moving across a gradient."""
    frames = []
    for k in range(count):
        image = np.zeros((height, width, 3), np.uint8)
        image[..., 0] = np.linspace(0, 200, width, dtype=np.uint8)[None, :]
        image[..., 2] = 60
        image[10:40, 8 + 12 * k : 38 + 12 * k] = 250
        frames.append(image)
    return frames


ENCODERS = {"VP8": ("libvpx", {"deadline": "realtime", "cpu-used": "8"}),
            "H264": ("libx264", {"preset": "ultrafast", "tune": "zerolatency"})}
H264 = RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=102)


def encode(images: list[np.ndarray], codec_name: str = "VP8") -> list[bytes]:
    """One encoded frame per picture (VP8 by libvpx, H.264 Annex B by libx264, as aiortc sends them)."""
    encoder, options = ENCODERS[codec_name]
    codec = av.CodecContext.create(encoder, "w")
    codec.height, codec.width = images[0].shape[:2]
    codec.pix_fmt = "yuv420p"
    codec.time_base = Fraction(1, 25)
    codec.bit_rate = 2_000_000
    codec.options = options
    out = []
    for k, image in enumerate(images):
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts = k
        out += [bytes(p) for p in codec.encode(frame)]
    return out + [bytes(p) for p in codec.encode(None)]


@pytest.mark.parametrize("codec", [VP8, H264], ids=["VP8", "H264"])
def test_kept_frames_decode_after_the_session_like_the_originals(codec: RTCRtpCodecParameters) -> None:
    images = moving_square_frames()
    packets = encode(images, codec.name)
    assert len(packets) == len(images)
    counter = EncodedFrameCounter(keep=True)
    for k, data in enumerate(packets):
        counter.put((codec, JitterFrame(data, k * 3600)))
    counter.put((codec, JitterFrame(packets[2], 2 * 3600)))  # the same frame completed twice
    assert counter.empty() and len(counter.frames) == len(packets) + 1  # nothing decoded live
    arrivals, decoded = decode_kept(counter.codec, counter.kept)
    assert len(decoded) == len(images)
    assert np.all(np.diff(arrivals) > 0)
    assert arrivals.tolist() == [a for a, _, _ in counter.kept[: len(images)]]
    for image, picture in zip(images, decoded, strict=True):
        assert picture.shape == (256, 256, 3)
        expected = lip_sync.to_mouth_side(image).astype(np.int16)
        assert np.abs(picture.astype(np.int16) - expected).mean() < 8
    moved = [int(np.argmax(p[60:140, :, 1].mean(axis=0) > 200)) for p in decoded]
    assert moved == sorted(moved) and moved[-1] > moved[0]  # the square moves in decoding order


def test_counter_keeps_nothing_unless_asked() -> None:
    counter = EncodedFrameCounter()
    counter.put((VP8, JitterFrame(encode(moving_square_frames(count=1))[0], 0)))
    assert counter.kept == [] and len(counter.frames) == 1


def test_decode_kept_refuses_an_unknown_codec_and_accepts_nothing() -> None:
    with pytest.raises(ValueError, match="AV1"):
        decode_kept("AV1", [(0.0, 0, b"x")])
    arrivals, images = decode_kept(None, [])
    assert len(arrivals) == 0 and images == []


def test_spec_follows_the_server_config_and_passes_only_picture_options() -> None:
    from server.config import load_config

    config = load_config()
    spec = spec_from_config("parametric", ["engine.seed=7", "engine.options={motion: rules, threads: 2}"])
    assert Path(spec.portrait) == config.path(config.avatar.default) and spec.framing == config.avatar.framing
    assert spec.seed == 7 and spec.size == config.engine.size and spec.fps == config.engine.fps
    args = spec.render_args()
    assert args[args.index("--motion") + 1] == "rules" and "threads" not in " ".join(args)
    assert args[args.index("--framing") + 1] == config.avatar.framing
    assert args[args.index("--seed") + 1] == "7" and args[args.index("--engine") + 1] == "parametric"
    assert spec_from_config("parametric", size=256).size == 256
    with pytest.raises(SystemExit, match="no portrait for avatar"):
        spec_from_config("parametric", avatar="no_such_avatar_here")


def test_references_render_each_session_seed_once(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    made: list[ReferenceSpec] = []

    def fake_render(heard: np.ndarray, spec: ReferenceSpec, cache_dir: Path,
                    delay_s: float) -> ReferenceTrack:
        made.append(spec)
        return ReferenceTrack(np.zeros(3), spec.fps, delay_s)

    monkeypatch.setattr(lip_sync, "reference_mouth", fake_render)
    audio = np.zeros(3200, np.float32)
    references = References(audio, ReferenceSpec(portrait="p.png", seed=10), tmp_path)
    references.track(None, 11)
    references.track(256, 13)
    references.track(None, 11)  # kept: not made again
    assert [(s.size, s.seed) for s in made] == [(512, 11), (256, 13)]


def test_session_seed_is_the_servers_else_its_offer_order() -> None:
    reported = {"stats": [{"fps": 25.0}, {"seed": 42, "fps": 25.0}]}
    assert session_seed(reported, 10, 3) == 42
    assert session_seed({"stats": [{"fps": 25.0}]}, 10, 3) == 13
    assert session_seed({"stats": []}, 0, 1) == 1


def test_sessions_are_numbered_in_offer_order() -> None:
    runs = [{"offered": 5.3}, {"offered": 5.0}, {"offered": 5.6}]
    number_sessions(runs, 4)
    assert [r["session_number"] for r in runs] == [5, 4, 6]


def test_lip_sync_by_reference_decides_sustained(monkeypatch: pytest.MonkeyPatch) -> None:
    import benchmarks.many_sessions as many

    figures = iter([(230.0, 0.8), (260.0, 0.4)])

    def fake_analyse_light(run: dict, silence_s: float, speech_s: float, reference: object) -> dict:
        lag, r = next(figures)
        return {"fps": 25.0, "fresh_fps": 25.0, "repeat_share": 0.0, "first_frame_s": 0.1,
                "first_animated_s": 0.3, "stalls": 0, "max_gap_ms": 50.0, "mouth_to_photon_ms": None,
                "lag_correlation": None, "mouth_to_photon_ref_ms": lag, "lag_ref_correlation": r,
                "server_audio_in_to_frame_out_ms": 100.0, "server_engine_ms_per_frame": 10.0,
                "server_windows_dropped": 0, "server_frames_repeated": 0}

    class FixedReferences:
        spec = ReferenceSpec(portrait="p.png", seed=0)

        def track(self, size: int | None, seed: int) -> ReferenceTrack:
            return ReferenceTrack(np.zeros(3), FPS)

    monkeypatch.setattr(many, "analyse_light", fake_analyse_light)
    runs = [{"offered": 1.0, "stats": [], "size": (512, 512)}, {"offered": 2.0, "stats": [], "size": None}]
    number_sessions(runs, 1)
    summary = summarise(2, runs, 2.0, 8.0, light=True, references=FixedReferences())  # type: ignore[arg-type]
    assert summary["mouth_to_photon_ref_ms_max"] == 260.0 and summary["lag_ref_correlation_min"] == 0.4
    assert not summary["sustained"]  # one session's r 0.4 < 0.5: lip sync not intact
    assert [s["session_number"] for s in summary["per_session"]] == [1, 2]


def test_envelope_method_finds_the_lag_of_a_mouth_that_follows_loudness() -> None:
    """``best_lag`` (the envelope method) shares ``reference_lag``'s search: a mouth that follows the sent
    chunks' loudness 180 ms later is found there."""
    from benchmarks.stream_benchmark import best_lag

    rng = np.random.default_rng(3)
    times, values = smooth_signal(rng, 12.0)
    sent = [(t, float(np.interp(k * 0.02, times, values))) for k, (t, _) in enumerate(paced_sends(rng, 12.0))]
    arrivals, mouth = live_frames(rng, sent, times, values, 0.18, noise=0.2)
    lag, r = best_lag(sent, arrivals, mouth, sent[0][0] + 1.0, sent[-1][0] - 1.0)
    assert abs(lag - 0.18) <= 0.02 and r > 0.8
    assert np.isnan(best_lag([], arrivals, mouth, 0.0, 1.0)[0])
