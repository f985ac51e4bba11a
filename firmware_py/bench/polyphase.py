"""The device's former resampler, kept only as the benchmark's reference.

A streaming polyphase FIR in numpy: ``scipy.signal.resample_poly``'s default design
(Kaiser window, beta 5, 10 zero crossings per side, cut-off at the lower Nyquist rate).
It cost ~2.4 ms of CPU per second of 48 kHz audio here, ten times the front-end; the
device now resamples with libsoxr (:mod:`firmware_py.audio`). ``genre-edge bench`` and
``bench frontend`` time both in the same process and report the ratio.
"""

from __future__ import annotations

import math

import numpy as np

from ..resample import rate_ratio

#: Entries of the (outputs x taps) gather matrix one step builds (~1 MB each of indices,
#: samples and taps): a step takes as many input samples as keep it this size.
_GATHER_ENTRIES = 1 << 17


def design_filter(up: int, down: int) -> np.ndarray:
    """``firwin(2 * 10 * max(up, down) + 1, 1 / max(up, down), window=("kaiser", 5.0)) * up``."""
    max_rate = max(up, down)
    half_len = 10 * max_rate
    cutoff = 1.0 / max_rate
    n = np.arange(2 * half_len + 1, dtype=np.float64) - half_len
    h = cutoff * np.sinc(cutoff * n) * np.kaiser(2 * half_len + 1, 5.0)
    h /= h.sum()
    return h * up


class PolyphaseResampler:
    """Push chunks, get output; ``push`` + ``flush`` == ``scipy.signal.resample_poly``."""

    def __init__(self, source_rate: int, target_rate: int) -> None:
        self.up, self.down = rate_ratio(int(source_rate), int(target_rate))
        self.passthrough = self.up == self.down
        self._n_in = 0
        if self.passthrough:
            return
        h = design_filter(self.up, self.down)
        self.half_len = (h.shape[0] - 1) // 2
        # Polyphase table: phase p uses taps h[p], h[p + up], ...; row i multiplies x[k - i].
        taps = math.ceil(h.shape[0] / self.up)
        padded = np.zeros(taps * self.up)
        padded[: h.shape[0]] = h
        self._phases = padded.reshape(taps, self.up).T.astype(np.float64)  # (up, taps)
        self._taps = taps
        self._history = np.zeros(taps - 1, dtype=np.float64)  # zeros before the start
        self._m_next = 0  # index of the next output sample

    def push(self, samples: np.ndarray) -> np.ndarray:
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if self.passthrough:
            self._n_in += x.shape[0]
            return x
        step = max(1, _GATHER_ENTRIES * self.down // (self.up * self._taps))
        if x.shape[0] > step:
            return np.concatenate([self._push(x[i : i + step])
                                   for i in range(0, x.shape[0], step)])
        return self._push(x)

    def flush(self) -> np.ndarray:
        """The rest, as if the input ended here with zeros: ``ceil(n_in * up / down)`` in all."""
        if self.passthrough:
            return np.zeros(0, dtype=np.float32)
        n_out = -(-self._n_in * self.up // self.down)
        before = self._m_next
        tail = self._push(np.zeros(self.half_len // self.up + self._taps + 1, dtype=np.float32))
        return tail[: max(0, n_out - before)]

    def _push(self, x: np.ndarray) -> np.ndarray:
        buf = np.concatenate((self._history, x.astype(np.float64)))
        n_total = self._n_in + x.shape[0]
        # Output m needs input up to k_max(m) = floor((m * down + half_len) / up).
        m_end = (n_total * self.up - self.half_len - 1) // self.down + 1  # first m not ready
        m = np.arange(self._m_next, max(m_end, self._m_next), dtype=np.int64)
        if m.shape[0]:
            t = m * self.down + self.half_len
            k_max = t // self.up
            phase = t % self.up
            base = k_max - (self._n_in - self._history.shape[0])  # buf[0]'s input index
            idx = base[:, None] - np.arange(self._taps)[None, :]
            y = np.einsum("ij,ij->i", self._phases[phase], buf[idx])
        else:
            y = np.zeros(0)
        self._m_next += m.shape[0]
        self._n_in = n_total
        self._history = buf[-(self._taps - 1) :] if self._taps > 1 else buf[:0]
        return y.astype(np.float32)
