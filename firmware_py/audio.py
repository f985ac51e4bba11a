"""Audio in: file decoding, anti-aliased resampling (batch and streaming), ring buffer.

Files are decoded by ``soundfile`` when it is installed (wav, flac, ogg/opus, mp3);
without it, WAV still works through ``scipy.io.wavfile`` so a minimal device
install can read WAV. Resampling is polyphase FIR (``scipy.signal.resample_poly``
design: Kaiser window, beta 5, 10 zero crossings per side), and the streaming
resampler produces the very same samples chunk by chunk.
"""

from __future__ import annotations

import logging
import math
from fractions import Fraction
from pathlib import Path

import numpy as np

from .errors import AudioError
from .native import native_stderr_to_log

log = logging.getLogger(__name__)

#: Largest up/down factor used before a rate ratio is approximated.
_MAX_RATIO_TERM = 1000


# -- rate conversion ----------------------------------------------------------------
def rate_ratio(source_rate: int, target_rate: int) -> tuple[int, int]:
    """``(up, down)`` with ``source_rate * up / down`` == (or within 0.01 % of) target."""
    if source_rate <= 0 or target_rate <= 0:
        raise AudioError(
            f"invalid sample rate {source_rate} Hz -> {target_rate} Hz: rates must be > 0"
        )
    frac = Fraction(target_rate, source_rate)
    if frac.numerator > _MAX_RATIO_TERM or frac.denominator > _MAX_RATIO_TERM:
        frac = frac.limit_denominator(_MAX_RATIO_TERM)
    return frac.numerator, frac.denominator


def _design_filter(up: int, down: int) -> np.ndarray:
    """The low-pass ``scipy.signal.resample_poly`` uses by default, in numpy alone.

    ``firwin(2 * 10 * max(up, down) + 1, 1 / max(up, down), window=("kaiser", 5.0))``:
    a windowed sinc with its cut-off at the lower Nyquist rate, unit gain at DC, times
    ``up``. Written out here because importing ``scipy.signal`` costs ~80 MB of resident
    memory on the device (tests check the taps against scipy's).
    """
    max_rate = max(up, down)
    half_len = 10 * max_rate
    cutoff = 1.0 / max_rate
    n = np.arange(2 * half_len + 1, dtype=np.float64) - half_len
    h = cutoff * np.sinc(cutoff * n) * np.kaiser(2 * half_len + 1, 5.0)
    h /= h.sum()
    return h * up


def resample(samples: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Resample a whole 1-D signal; float32 out. Identity when the rates match.

    The same output as ``scipy.signal.resample_poly(x, up, down, window=("kaiser", 5.0))``
    (``ceil(len * up / down)`` samples), computed by :class:`StreamingResampler` in
    blocks so that memory stays bounded for long files.
    """
    x = np.asarray(samples, dtype=np.float32).reshape(-1)
    if source_rate == target_rate:
        return x
    up, down = rate_ratio(source_rate, target_rate)
    if up == down:
        return x
    n_out = -(-x.shape[0] * up // down)
    rs = StreamingResampler(source_rate, target_rate)
    # Small blocks: push() builds an (outputs x taps) gather matrix, ~1 MB at 8192 samples
    # in, where a whole second at 48 kHz would briefly cost ~16 MB of resident memory.
    block = 8192
    parts = [rs.push(x[i : i + block]) for i in range(0, x.shape[0], block)]
    parts.append(rs.push(np.zeros(rs.half_len // up + rs._taps + 1, dtype=np.float32)))
    return np.concatenate(parts)[:n_out].astype(np.float32, copy=False)


class StreamingResampler:
    """Polyphase resampler for live audio: push chunks of any size, get output samples.

    The concatenated output equals ``resample(all_input)`` sample for sample (up to
    float rounding) for every sample whose filter support has arrived; the last
    ``~10`` input samples' worth of output appears with the next push (the filter's
    look-ahead, 0.2 ms at 48 kHz).
    """

    def __init__(self, source_rate: int, target_rate: int) -> None:
        self.source_rate = int(source_rate)
        self.target_rate = int(target_rate)
        self.up, self.down = rate_ratio(self.source_rate, self.target_rate)
        self.passthrough = self.up == self.down
        if self.passthrough:
            return
        h = _design_filter(self.up, self.down)
        self.half_len = (h.shape[0] - 1) // 2
        # Polyphase table: phase p uses taps h[p], h[p + up], ...; row i multiplies x[k - i].
        taps = math.ceil(h.shape[0] / self.up)
        padded = np.zeros(taps * self.up)
        padded[: h.shape[0]] = h
        self._phases = padded.reshape(taps, self.up).T.astype(np.float64)  # (up, taps)
        self._taps = taps
        self._history = np.zeros(taps - 1, dtype=np.float64)  # zeros before the start
        self._n_in = 0  # input samples consumed so far
        self._m_next = 0  # index of the next output sample

    def push(self, samples: np.ndarray) -> np.ndarray:
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if self.passthrough:
            return x
        buf = np.concatenate((self._history, x.astype(np.float64)))
        n_total = self._n_in + x.shape[0]
        # Output m needs input up to k_max(m) = floor((m * down + half_len) / up).
        m_end = (n_total * self.up - self.half_len - 1) // self.down + 1  # first m not ready
        m = np.arange(self._m_next, max(m_end, self._m_next), dtype=np.int64)
        if m.shape[0]:
            t = m * self.down + self.half_len
            k_max = t // self.up
            phase = t % self.up
            # buf[0] holds input index (n_in - len(history)).
            base = k_max - (self._n_in - self._history.shape[0])
            idx = base[:, None] - np.arange(self._taps)[None, :]
            y = np.einsum("ij,ij->i", self._phases[phase], buf[idx])
        else:
            y = np.zeros(0)
        self._m_next += m.shape[0]
        self._n_in = n_total
        self._history = buf[-(self._taps - 1) :] if self._taps > 1 else buf[:0]
        return y.astype(np.float32)


# -- decoding -----------------------------------------------------------------------
def _read_wav_scipy(path: Path) -> tuple[np.ndarray, int]:
    import scipy.io.wavfile

    rate, data = scipy.io.wavfile.read(str(path))
    if data.dtype == np.uint8:
        data = (data.astype(np.float32) - 128.0) / 128.0
    elif data.dtype == np.int16:
        data = data.astype(np.float32) / 32768.0
    elif data.dtype == np.int32:  # 24-bit is read left-justified into int32
        data = data.astype(np.float32) / 2147483648.0
    else:
        data = data.astype(np.float32)
    return data, int(rate)


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode a file to float32 ``(n,)`` or ``(n, channels)`` at its own rate."""
    path = Path(path)
    if not path.exists():
        raise AudioError(f"audio file not found: {path}: check the path")
    if not path.is_file():
        raise AudioError(f"not an audio file: {path} is a directory; give a file")
    try:
        import soundfile
    except ImportError:  # minimal device install: WAV only
        soundfile = None
    try:
        if soundfile is not None:
            with native_stderr_to_log():  # mpg123 warns on fd 2 about broken MP3s
                data, rate = soundfile.read(str(path), dtype="float32", always_2d=False)
        elif path.suffix.lower() in (".wav", ".wave"):
            data, rate = _read_wav_scipy(path)
        else:
            raise AudioError(
                f"cannot read {path.name} without soundfile: install it "
                "(pip install soundfile) or convert the file to WAV"
            )
    except AudioError:
        raise
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, ...
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise AudioError(
            f"cannot decode audio file {path} ({reason}): use a wav, flac, ogg/opus or mp3 file"
        ) from None
    return np.asarray(data, dtype=np.float32), int(rate)


def to_mono(data: np.ndarray) -> np.ndarray:
    """Average channels: ``(n, channels)`` -> ``(n,)``."""
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 1:
        return data
    if data.ndim == 2:
        return data.mean(axis=1, dtype=np.float32)
    raise AudioError(f"audio has shape {data.shape}: expected (samples,) or (samples, channels)")


def check_finite(samples: np.ndarray, what: str) -> None:
    if not np.all(np.isfinite(samples)):
        bad = int(np.count_nonzero(~np.isfinite(samples)))
        raise AudioError(
            f"{what} contains {bad} NaN/Inf sample(s): re-export the audio "
            "(the decoder or the recording is broken)"
        )


#: Largest sample magnitude accepted from a file (+18 dB over full scale). Lossy decodes of
#: loud, clipped masters overshoot by several dB (a GTZAN hip-hop clip in Opus peaks at 2.1);
#: float files that were never normalised are off by orders of magnitude (127, 32768).
MAX_FILE_PEAK = 8.0


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Any file soundfile reads -> mono float32 at ``sample_rate`` (polyphase resampling).

    Raises :class:`AudioError` (one line) for a missing, unreadable, empty,
    non-finite or unnormalised (peak above :data:`MAX_FILE_PEAK`) file; warns when the
    file's rate is below ``sample_rate`` (the top of the model's band is missing).
    """
    data, rate = read_audio(path)
    if data.size == 0:
        raise AudioError(f"audio file {path} is empty (0 samples): give a file with sound in it")
    check_finite(data, f"audio file {path}")
    peak = max(float(data.max()), -float(data.min()))  # no full-size |data| temporary
    if peak > MAX_FILE_PEAK:
        raise AudioError(
            f"audio file {path} has samples up to {peak:.4g}, far outside [-1, 1] (float "
            "samples that were never normalised): normalise or re-export it"
        )
    if rate < sample_rate:
        log.warning("%s is sampled at %d Hz: nothing above %.0f Hz reaches the model, which "
                    "listens up to %.0f Hz; expect lower accuracy", path, rate, rate / 2,
                    sample_rate / 2)
    return resample(to_mono(data), rate, sample_rate)


# -- buffering ----------------------------------------------------------------------
class RingBuffer:
    """Fixed-capacity ring of rows (e.g. log-mel frames); O(1) push per row.

    ``latest(n)`` returns the newest ``n`` rows in time order as one contiguous copy.
    """

    def __init__(self, capacity: int, width: int, dtype: np.dtype = np.float32) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be > 0")
        self.capacity = capacity
        self._data = np.zeros((capacity, width), dtype=dtype)
        self._write = 0  # next row to write
        self.count = 0  # rows written in total

    def push(self, rows: np.ndarray) -> None:
        rows = np.asarray(rows)
        n = rows.shape[0]
        if n == 0:
            return
        if n >= self.capacity:
            rows = rows[-self.capacity :]
            self._data[:] = rows
            self._write = 0
        else:
            end = self._write + n
            if end <= self.capacity:
                self._data[self._write : end] = rows
            else:
                first = self.capacity - self._write
                self._data[self._write :] = rows[:first]
                self._data[: n - first] = rows[first:]
            self._write = end % self.capacity
        self.count += n

    @property
    def filled(self) -> int:
        return min(self.count, self.capacity)

    def latest(self, n: int) -> np.ndarray:
        if n > self.filled:
            raise ValueError(f"only {self.filled} rows buffered, asked for {n}")
        start = (self._write - n) % self.capacity
        if start + n <= self.capacity:
            return self._data[start : start + n].copy()
        return np.concatenate((self._data[start:], self._data[: (start + n) % self.capacity]))
