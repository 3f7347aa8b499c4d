"""Voice from text: how long Lingua takes to build, how much memory it holds, how fast and how right it is.

    taskset -c 1 env OMP_NUM_THREADS=1 .venv/bin/python benchmarks/language_detection.py

Uses ``avatar.tts.language.LanguageGuesser`` (the pages' 11 voice languages, low-accuracy mode, models
preloaded) on the sentences of tests/test_language.py, short phrases and every sentence cut to its first
three words; memory is the process's peak resident size before and after building the detector.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from avatar.tts.language import LanguageGuesser  # noqa: E402
from tests.test_language import SENTENCES  # noqa: E402

SHORT = {"es": "¿Qué tal?", "en": "How are you?", "de": "Wie geht's?", "fr": "Ça va bien ?",
         "it": "Come stai?", "pt": "Tudo bem?", "nl": "Hoe gaat het?", "pl": "Jak się masz?",
         "ru": "Как дела?", "zh": "你好吗？", "ja": "元気ですか？"}


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    guesser = LanguageGuesser()
    before = peak_mb()
    t0 = time.perf_counter()
    guesser.guess("warm up: build the detector")
    build_s = time.perf_counter() - t0
    print(f"build + first guess: {build_s:.2f} s, peak memory +{peak_mb() - before:.0f} MB "
          f"({len(guesser.codes)} languages)")
    sets = {"sentences": SENTENCES, "short phrases": SHORT,
            "first three words": {code: " ".join(text.split()[:3]) for code, text in SENTENCES.items()
                                  if code not in ("zh", "ja")}}
    for name, texts in sets.items():
        times, right, unsure = [], 0, 0
        for code, text in texts.items():
            for _ in range(20):
                t = time.perf_counter()
                found = guesser.guess(text)
                times.append(time.perf_counter() - t)
            right += found is not None and found.code == code
            unsure += found is None
        wrong = len(texts) - right - unsure
        print(f"{name}: {right}/{len(texts)} right, {unsure} unsure, {wrong} wrong; median "
              f"{1000 * statistics.median(times):.2f} ms, max {1000 * max(times):.2f} ms per text")


if __name__ == "__main__":
    main()
