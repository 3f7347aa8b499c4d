"""The avatar in a real pipecat pipeline (pipecat's PipelineWorker and WorkerRunner; extra ``[pipecat]``):
TTS audio in, the parametric engine's frames out, each followed by its audio; lips on the voice (face
mesh on the pushed images against the pushed audio); idle between turns; interruptions stop the face.

``benchmarks/agent_frameworks.py`` runs the same pipeline and reports the numbers (docs/integrations.md).
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pipecat", reason="pipecat-ai is not installed (scripts/setup.sh --test installs it)")

from benchmarks.agent_frameworks import AUDIO_RATE, run_pipecat, speech_pcm  # noqa: E402
from tests.conftest import ROOT  # noqa: E402

PORTRAIT = ROOT / "avatar/assets/astronaut.png"


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """About 4 s of espeak-ng speech, int16 at 24 kHz."""
    return speech_pcm(None)[: 4 * AUDIO_RATE]


@pytest.fixture(scope="module")
def prepared():
    """The parametric engine with its rule-based motion (deterministic, and its mouth follows loudness
    closely, so a lag or a mismatch between picture and sound shows) and the shipped portrait."""
    from avatar.engines import create_engine

    engine = create_engine("parametric", motion="rules")
    yield engine, engine.prepare(PORTRAIT)
    engine.close()


async def test_pipeline_turns_tts_audio_into_lip_synced_frames(speech, prepared):
    log, measures = await run_pipecat(PORTRAIT, speech, idle_s=1.0, prepared=prepared)
    frames_per_second = 25
    samples = AUDIO_RATE // frames_per_second
    assert {a.shape for a in log.audio} == {(samples,)}, "each image is followed by 1/25 s of its audio"
    assert {i.shape for i in log.images} == {(512, 512, 3)}
    out = np.concatenate(log.audio)
    start = int(np.argmax(np.array(log.speaking))) * samples
    assert np.array_equal(out[start : start + speech.size][np.abs(speech) > 0],
                          speech[np.abs(speech) > 0]), "the TTS audio passes through unchanged"
    assert abs(measures.speech_frames - speech.size / samples) <= 4
    assert measures.video_fps_per_audio_s == pytest.approx(frames_per_second, abs=0.5)
    idle = [t for t, s in zip(log.image_times, log.speaking, strict=True) if not s and t < log.markers[0][0]]
    assert len(idle) >= 10, "idle frames before the speech"
    assert log.markers and log.markers[0][0] >= log.image_times[int(np.flatnonzero(log.speaking)[-1])], (
        "TTSStoppedFrame comes after the video of the audio before it"
    )
    # Offline renders of this engine reach r 0.8 with this measure; a picture one frame off its sound
    # shows as a 40 ms lag.
    assert measures.mouth_r >= 0.6, f"the mouth does not follow the voice (r {measures.mouth_r:.2f})"
    assert abs(measures.mouth_lag_ms) <= 30, f"mouth {measures.mouth_lag_ms:.0f} ms off the voice"


async def test_interruption_stops_the_face_with_the_voice(speech, prepared):
    log, measures = await run_pipecat(PORTRAIT, speech, idle_s=0.3, interrupt_after_s=0.1, tail_s=0.6,
                                      prepared=prepared)
    assert measures.speech_frames_after_interrupt is not None
    assert measures.speech_frames_after_interrupt <= 1, "at most the frame being pushed at that moment"
    speaking = np.array(log.speaking)
    last_speech = int(np.flatnonzero(speaking)[-1])
    assert speaking.sum() < speech.size / (AUDIO_RATE // 25) - 5, "the rest of the speech was dropped"
    assert len(speaking) - last_speech > 5, "idle frames go on after the interruption"
    assert not log.markers, "the interrupted turn's TTSStoppedFrame is dropped with its speech"
