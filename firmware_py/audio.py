"""Audio in: file decoding (to the model's rate) and the ring buffer of front-end frames.

Files are decoded by ``soundfile`` when it is installed (wav, flac, ogg/opus, mp3);
without it, WAV still works through ``scipy.io.wavfile`` so a minimal device
install can read WAV. Resampling is :mod:`firmware_py.resample` (libsoxr), whose names
are re-exported here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .deferred import import_soundfile
from .errors import AudioError
from .files import open_regular
from .native import native_stderr_to_log
from .resample import (  # noqa: F401  (re-exported: the resampler's former home)
    MAX_FILE_RATE,
    MIN_FILE_RATE,
    RESAMPLER_ID,
    SOXR_QUALITY,
    StreamingResampler,
    check_finite,
    rate_ratio,
    resample,
    resampled_length,
)
from .text import display

#: The audio files genre-edge reads (libsndfile through soundfile; WAV also without it):
#: what training discovers in a folder and what ``index`` picks up.
AUDIO_SUFFIXES = frozenset({".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".au",
                            ".aiff", ".aif"})

log = logging.getLogger(__name__)


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
