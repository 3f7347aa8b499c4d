"""The text-to-speech interface and its registry."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from avatar.errors import ConfigError


class TextToSpeech(ABC):
    """Turns text into 16 kHz mono float32 speech. Implementations raise ``AudioError`` for bad input."""

    name = "tts"
    max_chars = 1000

    @abstractmethod
    def synthesize(self, text: str, voice: str = "en") -> np.ndarray:
        """Speech for ``text`` in ``voice`` (a language code such as 'en', 'es', 'de'), float32 16 kHz."""

    @abstractmethod
    def voices(self) -> list[str]:
        """Voice identifiers this engine accepts."""


def create_tts(name: str = "espeak") -> TextToSpeech:
    """Instantiate a TTS engine by name (``espeak``)."""
    if name == "espeak":
        from avatar.tts.espeak import EspeakTTS

        return EspeakTTS()
    raise ConfigError(f"unknown text-to-speech engine {name!r}; available: espeak")
