"""Anti-aliased resampling, batch and streaming: libsoxr's (python-soxr, quality 'HQ').

The streaming resampler, flushed, gives the batch output; the device resamples a
microphone's rate to the model's with it, training its files with :func:`resample`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import AudioError

#: The sample rates a file may claim. Recordings use 8-384 kHz (768 kHz exists, rarely); a
#: header outside 4 kHz..768 kHz is damaged or lying, and believing it breaks the
#: resampler: at 40 MHz its up-factor rounds to 0, at 1 Hz its filter asks for tens of GB.
MIN_FILE_RATE = 4_000
MAX_FILE_RATE = 768_000


def check_finite(samples: np.ndarray, what: str) -> None:
    """One-line :class:`AudioError` when ``samples`` hold a NaN or an Inf."""
    if not np.all(np.isfinite(samples)):
        bad = int(np.count_nonzero(~np.isfinite(samples)))
        raise AudioError(
            f"{what} contains {bad} NaN/Inf sample(s): re-export the audio "
            "(the decoder or the recording is broken)"
        )


#: Largest up/down factor used before a rate ratio is approximated.
_MAX_RATIO_TERM = 1000


# -- rate conversion ----------------------------------------------------------------
#: libsoxr's quality recipe for all resampling, batch and streaming. 'HQ' (20-bit precision:
#: flat to 91 % of the lower Nyquist rate, over 120 dB of alias rejection from Nyquist up) is
#: libsoxr's default and the one the training audio was resampled with (librosa's
#: ``soxr_hq``), so the device hears what the model was trained on. 'VHQ' (28-bit) is past
#: float32's 24 bits and costs ~30 % more CPU and twice the delay; 'MQ' saves ~10 %.
SOXR_QUALITY = "HQ"
#: Names the resampler in the digests of caches whose contents it shapes (training/rooms.py).
RESAMPLER_ID = f"soxr-{SOXR_QUALITY}"


def _soxr() -> Any:
    """python-soxr, imported on first use (~0.5 MB resident with a running 48 kHz stream):
    a 16 kHz file or microphone never loads it."""
    try:
        import soxr
    except ImportError:
        raise AudioError(
            "resampling needs python-soxr, a dependency of genre-edge that is not installed: "
            "pip install soxr"
        ) from None
    return soxr


def rate_ratio(source_rate: int, target_rate: int) -> tuple[int, int]:
    """``(up, down)`` with ``source_rate * up / down`` == (or within 0.01 % of) target.

    The guard every resampler passes: rates must be > 0 and at most 1000:1 apart. The
    ratio itself only decides that rates within 0.01 % of each other pass through
    (``up == down``) and sizes allocations; libsoxr resamples at the exact rates.
    """
    if source_rate <= 0 or target_rate <= 0:
        raise AudioError(
            f"invalid sample rate {source_rate} Hz -> {target_rate} Hz: rates must be > 0"
        )
    if (isinstance(source_rate, int) and isinstance(target_rate, int)
            and max(source_rate, target_rate) <= _MAX_RATIO_TERM * min(source_rate, target_rate)):
        g = math.gcd(target_rate, source_rate)  # not ``fractions``: ~0.4 MB with ``decimal``
        if max(target_rate, source_rate) // g <= _MAX_RATIO_TERM:
            return target_rate // g, source_rate // g
    from fractions import Fraction  # an odd ratio, a non-int rate, rates too far apart

    frac = Fraction(target_rate, source_rate)
    if not Fraction(1, _MAX_RATIO_TERM) <= frac <= _MAX_RATIO_TERM:
        # Beyond 1000:1 either way (40 MHz to 16 kHz, 1 Hz) no real pair of rates is
        # meant: a header or a setting is wrong.
        raise AudioError(
            f"cannot resample {source_rate} Hz to {target_rate} Hz: the rates are more than "
            f"{_MAX_RATIO_TERM}:1 apart; use a rate between {MIN_FILE_RATE} and "
            f"{MAX_FILE_RATE} Hz"
        )
    if frac.numerator > _MAX_RATIO_TERM or frac.denominator > _MAX_RATIO_TERM:
        frac = frac.limit_denominator(_MAX_RATIO_TERM)
    return frac.numerator, frac.denominator


def resampled_length(n: int, source_rate: int, target_rate: int) -> int:
    """Samples that ``n`` input samples become: ``n * target / source`` rounded to the
    nearest, halves up (libsoxr's length, batch or streamed and flushed)."""
    return (2 * n * target_rate + source_rate) // (2 * source_rate)


def resample(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Resample a whole 1-D signal with libsoxr ('HQ'); float32 out. Identity when the
    rates match (or are within 0.01 %).

    :func:`resampled_length` samples come out, time-aligned with the input (no delay).
    :class:`StreamingResampler` fed the same samples in any blocks and flushed gives the
    same output (tested within 1e-6: libsoxr's one-shot call streams internally too).
    Raises :class:`AudioError` for non-finite samples (a NaN would smear over a whole
    filter block).
    """
    x = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
    if source_rate == target_rate:
        return x
    up, down = rate_ratio(source_rate, target_rate)
    if up == down:
        return x
    check_finite(x, "audio to resample")
    if x.shape[0] == 0:
        return x
    y = _soxr().resample(x, int(source_rate), int(target_rate), quality=SOXR_QUALITY)
    return np.asarray(y, dtype=np.float32)


class StreamingResampler:
    """libsoxr's streaming resampler ('HQ') for live audio: push chunks of any size, get
    output samples.

    The output is time-aligned with the input: after a :meth:`flush` the concatenated
    output equals ``resample(all_input)`` (within 1e-6), so windows counted in output
    samples line up with the batch front-end's. Until then the filter holds back its
    look-ahead and part of one internal block: at most ~40 ms of output from 44.1 or
    48 kHz in 0.1 s blocks (21-23 ms on average), which arrives with the next pushes.
    Non-finite input samples are zeroed (counted in ``nonfinite_samples``): through
    libsoxr one NaN would spoil a whole block of output, where the pipeline zeroes single
    samples.
    """

    def __init__(self, source_rate: int, target_rate: int) -> None:
        self.source_rate = int(source_rate)
        self.target_rate = int(target_rate)
        self.up, self.down = rate_ratio(self.source_rate, self.target_rate)
        self.passthrough = self.up == self.down
        self.nonfinite_samples = 0
        self._n_in = 0  # input samples consumed so far
        self._n_out = 0
        self._flushed = False
        self._stream: Any = None
        if not self.passthrough:
            self._stream = _soxr().ResampleStream(self.source_rate, self.target_rate, 1,
                                                  dtype="float32", quality=SOXR_QUALITY)

    @property
    def samples_in(self) -> int:
        """Input samples pushed so far."""
        return self._n_in

    @property
    def samples_out(self) -> int:
        """Output samples returned so far."""
        return self._n_out

    def push(self, samples: np.ndarray) -> np.ndarray:
        if self._flushed:
            raise AudioError("this resampler's stream has ended (flushed): start a new one")
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._n_in += x.shape[0]
        if self.passthrough:
            self._n_out += x.shape[0]
            return x
        if x.shape[0] == 0:
            return np.zeros(0, dtype=np.float32)
        # One sum instead of an isfinite pass: NaN/Inf anywhere make it non-finite (so can
        # an overflow, rarely: then the exact check below finds nothing to zero).
        if not math.isfinite(float(np.add.reduce(x, dtype=np.float32))):
            bad = ~np.isfinite(x)
            if bad.any():
                self.nonfinite_samples += int(np.count_nonzero(bad))
                x = np.where(bad, np.float32(0.0), x)
        y = self._stream.resample_chunk(np.ascontiguousarray(x))
        self._n_out += y.shape[0]
        return y

    def flush(self) -> np.ndarray:
        """The output still held back, as if the input ended here: after it,
        ``resampled_length(samples_in, ...)`` samples have come out in all. The stream is
        over after a flush (a push raises :class:`AudioError`)."""
        if self._flushed or self.passthrough:
            self._flushed = True
            return np.zeros(0, dtype=np.float32)
        self._flushed = True
        y = self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        self._n_out += y.shape[0]
        return y
