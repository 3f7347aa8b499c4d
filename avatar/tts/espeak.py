"""espeak-ng (Debian package ``espeak-ng``) as an offline text-to-speech engine."""

from __future__ import annotations

import functools
import io
import re
import shutil
import subprocess
import wave

import numpy as np

from avatar.engine import SAMPLE_RATE
from avatar.errors import AudioError, ConfigError
from avatar.tts.base import TextToSpeech

_VOICE_ID = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{1,8})*$")


def _resample(audio: np.ndarray, rate: int) -> np.ndarray:
    """Linear-phase polyphase resampling to 16 kHz."""
    if rate == SAMPLE_RATE:
        return audio
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(rate, SAMPLE_RATE)
    return resample_poly(audio, SAMPLE_RATE // g, rate // g).astype(np.float32)


class EspeakTTS(TextToSpeech):
    """Runs ``espeak-ng --stdout`` in a subprocess (bounded by ``timeout_s``)."""

    name = "espeak"

    def __init__(self, executable: str | None = None, timeout_s: float = 20.0, words_per_minute: int = 160):
        exe = executable or shutil.which("espeak-ng")
        if exe is None:
            raise ConfigError("espeak-ng is not installed (Debian: apt-get install espeak-ng)")
        self._exe = exe
        self._timeout = timeout_s
        self._wpm = int(words_per_minute)

    @functools.cache  # noqa: B019 - one engine per process; the voice list never changes
    def voices(self) -> list[str]:
        """Language codes espeak-ng answers to: each voice's own (``en-us``, ``cmn``) and the languages
        it stands for (``en``, ``zh``) from the "Other Languages" column, e.g. ``(zh 5)``."""
        out = subprocess.run([self._exe, "--voices"], capture_output=True, text=True, timeout=self._timeout)
        codes: set[str] = set()
        for line in out.stdout.splitlines()[1:]:
            fields = line.split()
            if len(fields) > 1:
                codes.add(fields[1])
            codes.update(re.findall(r"\(([A-Za-z0-9-]+) \d+\)", line))
        return sorted(codes)

    def synthesize(self, text: str, voice: str = "en") -> np.ndarray:
        text = " ".join(str(text).split())
        if not text:
            raise AudioError("nothing to say: the text is empty")
        if len(text) > self.max_chars:
            raise AudioError(f"text too long: {len(text)} characters (at most {self.max_chars})")
        if not _VOICE_ID.match(voice or "") or voice not in self.voices():
            raise AudioError(f"unknown voice {voice!r}; use a language code such as en, es, de, fr, zh")
        try:
            result = subprocess.run(
                [self._exe, "-v", voice, "-s", str(self._wpm), "--stdout", "--", text],
                capture_output=True,
                timeout=self._timeout,
            )
        except subprocess.TimeoutExpired:
            raise AudioError(f"text to speech took longer than {self._timeout:.0f} s") from None
        if result.returncode != 0 or len(result.stdout) < 44:
            raise AudioError(f"espeak-ng failed: {result.stderr.decode(errors='replace').strip()[:200]}")
        # espeak-ng writes a streaming WAV header with unknown sizes: read the format, take the rest raw.
        data = result.stdout
        with wave.open(io.BytesIO(data[:44])) as header:
            rate, width, channels = header.getframerate(), header.getsampwidth(), header.getnchannels()
        if width != 2 or channels != 1:
            raise AudioError("espeak-ng returned an unexpected audio format")
        pcm = np.frombuffer(data[44 : 44 + (len(data) - 44) // 2 * 2], dtype="<i2")
        return _resample(pcm.astype(np.float32) / 32768.0, rate)
