"""Audio in: file decoding, anti-aliased resampling (batch and streaming), ring buffer.

Files are decoded by ``soundfile`` when it is installed (wav, flac, ogg/opus, mp3);
without it, WAV still works through ``scipy.io.wavfile`` so a minimal device
install can read WAV. Resampling is libsoxr's (python-soxr, quality 'HQ'), batch
and streaming alike: the streaming resampler, flushed, gives the batch output.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .deferred import import_soundfile
from .errors import AudioError
from .files import open_regular
from .native import native_stderr_to_log
from .text import display

log = logging.getLogger(__name__)

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


# -- decoding -----------------------------------------------------------------------
#: The sample rates a file may claim. Recordings use 8-384 kHz (768 kHz exists, rarely); a
#: header outside 4 kHz..768 kHz is damaged or lying, and believing it breaks the
#: resampler: at 40 MHz its up-factor rounds to 0, at 1 Hz its filter asks for tens of GB.
MIN_FILE_RATE = 4_000
MAX_FILE_RATE = 768_000

#: Samples (frames x channels) decoded at a time: 256 KB of float32 whatever the file's rate
#: and channel count, so a long file is never in memory at its own rate, only at the model's.
DECODE_BLOCK_SAMPLES = 1 << 16

#: Largest output the first allocation of :func:`load_audio` reserves (an hour at 16 kHz);
#: a longer file grows it. Untouched pages cost no memory; a header that claims years of
#: audio must not reserve them either.
_MAX_RESERVE_S = 3600

AUDIO_FIX = "give a wav, flac, ogg/opus or mp3 file"


def check_file_rate(rate: object, path: str | Path) -> int:
    """``rate`` as an int when it is within [MIN_FILE_RATE, MAX_FILE_RATE]; else one line."""
    if (isinstance(rate, bool) or not isinstance(rate, (int, np.integer))
            or not MIN_FILE_RATE <= rate <= MAX_FILE_RATE):
        raise AudioError(
            f"audio file {display(path)} claims a sample rate of {rate} Hz, outside the "
            f"{MIN_FILE_RATE}..{MAX_FILE_RATE} Hz of real recordings (a damaged or lying "
            "header): re-export the file"
        )
    return int(rate)


class _Decoder:
    """An open audio file: ``rate``, ``channels``, ``frames`` (a hint), ``blocks()``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.name = display(path)
        self._sf: Any = None
        self._data: Any = None
        # We own the descriptor until close() (libsndfile's own closing on a failed open
        # is not something to rely on).
        self._fd = open_regular(path, AudioError, AUDIO_FIX, "audio file")
        soundfile = import_soundfile()  # None in a minimal install: WAV only, through scipy
        try:
            if soundfile is not None:
                with native_stderr_to_log():  # mpg123 warns on fd 2 about broken MP3s
                    self._sf = soundfile.SoundFile(self._fd, closefd=False)
                rate, self.channels, self.frames = (self._sf.samplerate, self._sf.channels,
                                                    self._sf.frames)
            elif path.suffix.lower() in (".wav", ".wave"):
                rate, self._data = _map_wav_scipy(self._fd)
                self.channels = 1 if self._data.ndim == 1 else self._data.shape[1]
                self.frames = self._data.shape[0]
            else:
                raise AudioError(
                    f"cannot read {display(path.name)} without soundfile: install it "
                    "(pip install soundfile) or convert the file to WAV"
                )
            self.rate = check_file_rate(rate, path)
        except AudioError:
            self.close()
            raise
        except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, ...
            self.close()
            raise self._undecodable(exc) from None

    def _undecodable(self, exc: BaseException) -> AudioError:
        reason = display(" ".join(str(exc).split()) or type(exc).__name__)
        return AudioError(f"cannot decode audio file {self.name} ({reason}): {AUDIO_FIX}")

    def blocks(self) -> Iterator[np.ndarray]:
        """float32 ``(n, channels)`` blocks of about :data:`DECODE_BLOCK_SAMPLES` samples."""
        frames = max(1, DECODE_BLOCK_SAMPLES // max(1, self.channels))
        if self._sf is None:
            for start in range(0, self.frames, frames):
                yield _wav_to_float(self._data[start : start + frames]).reshape(-1, self.channels)
            return
        while True:
            try:
                with native_stderr_to_log():
                    block = self._sf.read(frames, dtype="float32", always_2d=True)
            except Exception as exc:  # a file damaged after its header
                raise self._undecodable(exc) from None
            if block.shape[0] == 0:
                return
            yield block

    def close(self) -> None:
        if self._sf is not None:
            self._sf.close()
            self._sf = None
        self._data = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> _Decoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _map_wav_scipy(fd: int) -> tuple[int, np.ndarray]:
    """``scipy.io.wavfile`` without soundfile: the samples memory-mapped where it can."""
    import scipy.io.wavfile

    with os.fdopen(fd, "rb", closefd=False) as fh:
        try:
            rate, data = scipy.io.wavfile.read(fh, mmap=True)
        except ValueError:  # 24-bit and some others cannot be mapped: read them whole
            fh.seek(0)
            rate, data = scipy.io.wavfile.read(fh)
    return int(rate), data


def _wav_to_float(data: np.ndarray) -> np.ndarray:
    if data.dtype == np.uint8:
        return (data.astype(np.float32) - 128.0) / 128.0
    if data.dtype == np.int16:
        return data.astype(np.float32) / 32768.0
    if data.dtype == np.int32:  # 24-bit is read left-justified into int32
        return data.astype(np.float32) / 2147483648.0
    return data.astype(np.float32)


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode a (short) file to float32 ``(n,)`` or ``(n, channels)`` at its own rate."""
    with _Decoder(Path(path)) as dec:
        blocks = list(dec.blocks())
        rate, channels = dec.rate, dec.channels
    data = np.concatenate(blocks) if blocks else np.zeros((0, channels), np.float32)
    return (data[:, 0] if channels == 1 else data), rate


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


class _Growing:
    """A float32 array filled front to back; grows and shrinks in place (``realloc``, which
    remaps large blocks rather than copying them), so there is never a second full copy."""

    def __init__(self, reserve: int) -> None:
        self.buf = np.empty(max(1024, reserve), dtype=np.float32)
        self.n = 0

    def add(self, y: np.ndarray) -> None:
        end = self.n + y.shape[0]
        if end > self.buf.shape[0]:
            self.buf.resize(max(end, 2 * self.buf.shape[0]), refcheck=False)
        self.buf[self.n : end] = y
        self.n = end

    def result(self) -> np.ndarray:
        self.buf.resize(self.n, refcheck=False)
        return self.buf


def load_audio(path: str | Path, sample_rate: int) -> np.ndarray:
    """Any file soundfile reads -> mono float32 at ``sample_rate`` (libsoxr resampling).

    Decoded, mixed down and resampled in blocks: memory holds the result at the model's
    rate, never the file at its own rate and channel count. Raises :class:`AudioError`
    (one line) for a missing, unusable (directory, FIFO, device, no permission),
    unreadable, empty, non-finite or unnormalised (peak above :data:`MAX_FILE_PEAK`) file
    and for a sample rate outside [MIN_FILE_RATE, MAX_FILE_RATE]; warns when the file's
    rate is below ``sample_rate`` (the top of the model's band is missing).
    """
    what = f"audio file {display(path)}"
    with _Decoder(Path(path)) as dec:
        if dec.rate < sample_rate:
            log.warning("%s is sampled at %d Hz: nothing above %.0f Hz reaches the model, "
                        "which listens up to %.0f Hz; expect lower accuracy", display(path),
                        dec.rate, dec.rate / 2, sample_rate / 2)
        rs = StreamingResampler(dec.rate, sample_rate)
        expected = min(max(0, dec.frames) * rs.up // rs.down + 1, _MAX_RESERVE_S * sample_rate)
        out = _Growing(expected)
        for block in dec.blocks():
            check_finite(block, what)
            peak = max(float(block.max()), -float(block.min()))  # no |block| temporary
            if peak > MAX_FILE_PEAK:
                raise AudioError(
                    f"{what} has samples up to {peak:.4g}, far outside [-1, 1] (float samples "
                    "that were never normalised): normalise or re-export it"
                )
            out.add(rs.push(block[:, 0] if block.shape[1] == 1 else to_mono(block)))
        if rs.samples_in == 0:
            raise AudioError(f"{what} is empty (0 samples): give a file with sound in it")
        out.add(rs.flush())
    return out.result()


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
