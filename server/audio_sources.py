"""Where the face's voice comes from: the two audio sources a session's timeline is fed by.

Both write 16 kHz mono float32 into the session's ``AudioInput`` (ring buffer + windower) and return the
engine windows that became ready. The session calls ``hear`` for every inbound microphone frame and
``tick`` every 20 ms; an interrupt calls ``mute``. Which source a session has follows its mode:

* ``MicrophoneSource`` (mirror mode): the face speaks the client's microphone; ``tick`` pads silence
  when the microphone stalls or was never offered.
* ``SpeechSource`` (speak mode): the face speaks queued speech (text to speech, pushed audio), fed in
  real time by ``tick`` (silence when none is queued); the microphone only listens for barge-in.

A ``SpeechListener`` (the session's ``Speaker``) hears what a source does: speech entering the
timeline, the user talking.
"""

from __future__ import annotations

from typing import Protocol

import av
import numpy as np

from avatar.audio.vad import VoiceActivity
from avatar.engine import SAMPLE_RATE, AudioWindow
from server.audio_input import AudioInput, MonoResampler
from server.clock import Clock
from server.speech_input import SpeechQueue

BARGE_IN_WINDOW = SAMPLE_RATE * 2 // 5
"""400 ms of microphone audio ..."""
BARGE_IN_FRACTION = 0.5
"""... at least half of it speech: the user is talking (speak mode stops the avatar then)."""


class SpeechListener(Protocol):
    """What a source tells the session's speech controller."""

    def speech_entered(self, start: int, end: int) -> None:
        """Speech now fills timeline samples [start, end)."""

    def voice_heard(self) -> bool:
        """The microphone heard at least ``BARGE_IN_WINDOW`` samples; returns True when it barged in."""


class _Deaf:
    def speech_entered(self, start: int, end: int) -> None:
        pass

    def voice_heard(self) -> bool:
        return False


class AudioSource(Protocol):
    """The narrow interface between a session's timeline and the voice it speaks."""

    listener: SpeechListener

    def hear(self, frame: av.AudioFrame) -> list[AudioWindow]:
        """One inbound microphone frame (any rate/layout); returns the windows that became ready."""

    def hear_samples(self, samples: np.ndarray) -> list[AudioWindow]:
        """Like ``hear`` for 16 kHz mono float32 samples, shape (n,) (tests, adapters)."""

    def tick(self) -> list[AudioWindow]:
        """Keep the timeline up with the wall clock (silence or queued speech); ready windows."""

    def mute(self, start: int) -> int:
        """Silence the face's voice from timeline sample ``start`` on; returns the samples silenced."""

    @property
    def user_speaking(self) -> bool:
        """Whether the microphone is judged to carry the user's voice now (barge-in)."""


class MicrophoneSource:
    """Mirror mode: the microphone is the face's voice; silence pads the timeline when it stalls."""

    def __init__(self, audio: AudioInput) -> None:
        self.audio = audio
        self.listener: SpeechListener = _Deaf()

    def hear(self, frame: av.AudioFrame) -> list[AudioWindow]:
        return self.audio.push_frame(frame)

    def hear_samples(self, samples: np.ndarray) -> list[AudioWindow]:
        return self.audio.push_samples(samples)

    def tick(self) -> list[AudioWindow]:
        return self.audio.pad_silence()

    def mute(self, start: int) -> int:
        """Nothing: the user's own voice on the timeline is not silenced by an interrupt."""
        return 0

    @property
    def user_speaking(self) -> bool:
        """False: in mirror mode the microphone is the face's voice, not a barge-in signal."""
        return False


class SpeechSource:
    """Speak mode: queued speech (or silence) enters the timeline in real time; the microphone's voice
    activity over the last 400 ms tells the listener when the user talks."""

    def __init__(self, audio: AudioInput, queue: SpeechQueue, clock: Clock,
                 vad_aggressiveness: int = 2) -> None:
        self.audio = audio
        self.queue = queue
        self.clock = clock
        self.listener: SpeechListener = _Deaf()
        self._t0: float | None = None  # clock time of the first tick: timeline sample 0
        self._fed = 0  # samples appended by ``tick`` so far
        self._mic = MonoResampler()
        self._mic_vad = VoiceActivity(aggressiveness=vad_aggressiveness)
        self._mic_samples = 0

    def tick(self) -> list[AudioWindow]:
        """Append queued speech, then silence, up to the wall clock since the first tick."""
        now = self.clock.now()
        if self._t0 is None:
            self._t0 = now
        missing = int((now - self._t0) * SAMPLE_RATE) - self._fed
        if missing <= 0:
            return []
        chunk, speech = self.queue.take(missing)
        if speech:
            start = self.audio.ring.end
            self.listener.speech_entered(start, start + speech)
        self._fed += missing
        return self.audio.append(chunk, speech)

    def mute(self, start: int) -> int:
        return self.audio.mute(start)

    def hear(self, frame: av.AudioFrame) -> list[AudioWindow]:
        """The microphone only drives barge-in here: no windows."""
        samples = self._mic(frame)
        if samples.size:
            self.hear_samples(samples)
        return []

    def hear_samples(self, samples: np.ndarray) -> list[AudioWindow]:
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._mic_vad.feed(samples)
        self._mic_samples += samples.size
        if self._mic_samples >= BARGE_IN_WINDOW:
            self.listener.voice_heard()
        return []

    @property
    def user_speaking(self) -> bool:
        start = max(0, self._mic_samples - BARGE_IN_WINDOW)
        return self._mic_vad.speech_fraction(start, self._mic_samples) >= BARGE_IN_FRACTION
