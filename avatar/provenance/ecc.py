"""Error correction for the mark: a terminated rate-1/3 convolutional code (constraint length 7,
generators 133/171/165 octal) with a soft-decision Viterbi decoder.

``n`` message bits become ``3 * (n + 6)`` coded bits (64 -> 210). Soft inputs are real numbers whose
sign says the coded bit (positive = 1) and whose size says how sure the channel is.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

CONSTRAINT = 7
MEMORY = CONSTRAINT - 1
STATES = 1 << MEMORY
GENERATORS = (0o133, 0o171, 0o165)
RATE_INVERSE = len(GENERATORS)


def coded_length(message_bits: int) -> int:
    """Number of coded bits for ``message_bits`` message bits (tail included)."""
    return RATE_INVERSE * (message_bits + MEMORY)


def _parity(value: np.ndarray) -> np.ndarray:
    result = np.zeros_like(value)
    for shift in range(CONSTRAINT):
        result ^= (value >> shift) & 1
    return result


@lru_cache(maxsize=1)
def _trellis() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(predecessors (STATES, 2), input bit per next state (STATES,), outputs (STATES, 2, RATE) in ±1).

    The register holds the newest bit in its top position: ``reg = bit << 6 | state`` and the next
    state is ``reg >> 1``.
    """
    next_states = np.arange(STATES)
    inputs = next_states >> (MEMORY - 1)
    predecessors = np.stack([((next_states << 1) | x) & (STATES - 1) for x in (0, 1)], axis=1)
    registers = (inputs[:, None] << MEMORY) | predecessors
    outputs = np.stack([_parity(registers & g) for g in GENERATORS], axis=-1).astype(np.float64)
    return predecessors, inputs, outputs * 2.0 - 1.0


def encode(bits: np.ndarray) -> np.ndarray:
    """uint8 0/1 message of shape (n,) -> uint8 0/1 codeword of shape (3 * (n + 6),)."""
    message = np.concatenate([np.asarray(bits, dtype=np.int64).reshape(-1) & 1, np.zeros(MEMORY, np.int64)])
    state = 0
    out = np.empty((message.size, RATE_INVERSE), dtype=np.uint8)
    for i, bit in enumerate(message):
        register = (int(bit) << MEMORY) | state
        out[i] = [bin(register & g).count("1") & 1 for g in GENERATORS]
        state = register >> 1
    return out.reshape(-1)


def decode(soft: np.ndarray) -> np.ndarray:
    """Maximum-likelihood message (uint8 0/1, shape (n,)) for soft coded values of shape (3 * (n + 6),).

    Maximises the correlation between the soft values and the ±1 codeword; the trellis starts and ends
    in the zero state.
    """
    soft = np.asarray(soft, dtype=np.float64).reshape(-1, RATE_INVERSE)
    predecessors, inputs, outputs = _trellis()
    metric = np.full(STATES, -np.inf)
    metric[0] = 0.0
    choices = np.empty((soft.shape[0], STATES), dtype=np.int8)
    for step, received in enumerate(soft):
        branch = outputs @ received  # (STATES, 2)
        candidates = metric[predecessors] + branch
        best = np.argmax(candidates, axis=1)
        choices[step] = best
        metric = candidates[np.arange(STATES), best]
    state = 0
    decoded = np.empty(soft.shape[0], dtype=np.uint8)
    for step in range(soft.shape[0] - 1, -1, -1):
        decoded[step] = inputs[state]
        state = predecessors[state, choices[step, state]]
    return decoded[: soft.shape[0] - MEMORY]
