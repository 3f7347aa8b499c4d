"""espeak-ng text to speech behind the TTS interface."""

import shutil

import numpy as np
import pytest

from avatar.errors import AudioError, ConfigError
from avatar.tts import create_tts

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def test_spanish_speech_is_16k_and_audible():
    audio = create_tts().synthesize("Hola, me llamo Ana y hablo español.", "es")
    assert audio.dtype == np.float32
    assert 1.0 < len(audio) / 16000 < 6.0
    assert np.sqrt(np.mean(audio**2)) > 0.02


@pytest.mark.parametrize(
    ("text", "voice", "message"),
    [("", "en", "empty"), ("hi", "zz", "unknown voice"), ("hi", "../../etc", "unknown voice"),
     ("x" * 5000, "en", "too long")],
)
def test_bad_requests_are_refused_with_a_reason(text, voice, message):
    with pytest.raises(AudioError, match=message):
        create_tts().synthesize(text, voice)


@pytest.mark.parametrize("voice", ["en", "fr", "zh", "de", "ja"])
def test_short_language_codes_are_voices(voice):
    assert voice in create_tts().voices()


def test_unknown_engine():
    with pytest.raises(ConfigError):
        create_tts("nope")
