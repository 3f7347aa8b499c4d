"""Which voice should read a text: its language, told by Lingua (``lingua-language-detector``, whose
models ship inside the wheel; nothing is downloaded).

The detector knows only ``VOICE_LANGUAGES`` that the TTS also has (the voices the pages offer), in
Lingua's low-accuracy mode (trigram models only) with the models loaded once: about 0.25 s to build and
24 MB of memory on one core, then well under 1 ms per sentence (docs/benchmarks.md, Voice from text).
Short or ambiguous texts (confidence under ``MIN_CONFIDENCE``) get no answer and the caller falls back.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

VOICE_LANGUAGES = ("en", "es", "de", "fr", "it", "pt", "nl", "pl", "ru", "zh", "ja")
"""ISO 639-1 codes of the voices the pages offer; espeak-ng answers to each of them."""
MIN_CONFIDENCE = 0.7
"""Below it the answer is "unsure" (None): two-word phrases such as "¿Qué tal?" score 0.6-0.7 for a wrong
language, whole sentences 0.9-1.0 for the right one (benchmarks/language_detection.py)."""
MAX_DETECT_CHARS = 2000
"""Longer texts are judged by their start (the language rarely changes, the cost grows with length)."""


@dataclass(frozen=True)
class DetectedLanguage:
    code: str
    """ISO 639-1 code, usable as a TTS voice (``es``)."""
    confidence: float
    """0..1, Lingua's relative confidence among ``VOICE_LANGUAGES``."""


class LanguageGuesser:
    """``guess(text)`` -> ``DetectedLanguage`` or None; thread-safe, the detector is built on first use."""

    def __init__(self, codes: tuple[str, ...] | list[str] = VOICE_LANGUAGES) -> None:
        self.codes = tuple(dict.fromkeys(code.lower() for code in codes))
        self._detector = None
        self._lock = threading.Lock()

    def _build(self):
        from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

        languages = []
        for code in self.codes:
            iso = getattr(IsoCode639_1, code.upper(), None)
            if iso is not None:
                languages.append(Language.from_iso_code_639_1(iso))
        if len(languages) < 2:
            raise ValueError(f"language detection needs at least two known languages, got {self.codes}")
        return (LanguageDetectorBuilder.from_languages(*languages)
                .with_low_accuracy_mode().with_preloaded_language_models().build())

    def guess(self, text: str) -> DetectedLanguage | None:
        text = " ".join(str(text).split())[:MAX_DETECT_CHARS]
        if not any(ch.isalpha() for ch in text):
            return None
        with self._lock:
            if self._detector is None:
                self._detector = self._build()
            values = self._detector.compute_language_confidence_values(text)
        if not values or values[0].value < MIN_CONFIDENCE:
            return None
        best = values[0]
        return DetectedLanguage(best.language.iso_code_639_1.name.lower(), round(float(best.value), 3))


__all__ = ["DetectedLanguage", "LanguageGuesser", "VOICE_LANGUAGES"]
