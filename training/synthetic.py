"""A tiny synthetic music dataset for tests: drum, bass and chord patterns per "genre".

Each class has its own tempo range, drum pattern, bass waveform and chord timbre, with
random key, level and noise per clip, so a small CNN separates them in a few epochs
while the task is not trivial for a single frame. Written as 16-bit WAV in a
folder-per-genre tree (``OUT/<genre>/<genre>.000NN.wav``, GTZAN's layout).

Run ``python -m training.synthetic OUT`` to write one.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import scipy.io.wavfile

#: class -> (tempo range in BPM, kick steps, snare steps, hat every n steps, bass wave, chord harmonics)
STYLES: dict[str, dict] = {
    "ambient": dict(bpm=(60, 75), kick=(), snare=(), hat=0, bass="sine", chord=(1.0, 0.3),
                    pad=True),
    "techno": dict(bpm=(125, 135), kick=(0, 4, 8, 12), snare=(), hat=2, bass="saw",
                   chord=(1.0,), pad=False),
    "rockish": dict(bpm=(95, 115), kick=(0, 8, 10), snare=(4, 12), hat=2, bass="square",
                    chord=(1.0, 0.7, 0.5, 0.4, 0.3), pad=False),
    "bossa": dict(bpm=(80, 95), kick=(0, 6, 8, 14), snare=(3, 7, 10, 13), hat=1, bass="sine",
                  chord=(1.0, 0.2), pad=False),
}


def _osc(kind: str, freq: float, t: np.ndarray) -> np.ndarray:
    phase = (freq * t) % 1.0
    if kind == "sine":
        return np.sin(2 * np.pi * phase)
    if kind == "saw":
        return 2.0 * phase - 1.0
    return np.sign(np.sin(2 * np.pi * phase))


def render_clip(style: str, duration_s: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """One clip of ``style``, mono float32 in [-1, 1], ``duration_s`` seconds."""
    s = STYLES[style]
    n = int(duration_s * sample_rate)
    t = np.arange(n) / sample_rate
    out = np.zeros(n)
    bpm = rng.uniform(*s["bpm"])
    step = 60.0 / bpm / 4  # sixteenth notes, seconds
    root = 55.0 * 2 ** (rng.integers(0, 12) / 12)
    env_t = np.arange(int(0.25 * sample_rate)) / sample_rate
    kick = np.sin(2 * np.pi * (50 + 100 * np.exp(-env_t * 30)) * env_t) * np.exp(-env_t * 12)
    noise = rng.standard_normal(len(env_t))
    snare = noise * np.exp(-env_t * 20) * 0.6
    hat = np.diff(noise, prepend=0.0) * np.exp(-env_t * 80) * 0.25
    n_steps = int(duration_s / step)
    for k in range(n_steps):
        i = int(k * step * sample_rate)
        for hits, sound in ((s["kick"], kick), (s["snare"], snare)):
            if k % 16 in hits:
                m = min(len(sound), n - i)
                out[i : i + m] += sound[:m]
        if s["hat"] and k % s["hat"] == 0:
            m = min(len(hat), n - i)
            out[i : i + m] += hat[:m]
    # Bass on every beat, chord changes every bar (I - IV - V - I).
    progression = (0, 5, 7, 0)
    bar = step * 16
    for b in range(int(np.ceil(duration_s / bar))):
        i0, i1 = int(b * bar * sample_rate), min(n, int((b + 1) * bar * sample_rate))
        if i0 >= n:
            break
        tt = t[i0:i1]
        f = root * 2 ** (progression[b % 4] / 12)
        out[i0:i1] += 0.35 * _osc(s["bass"], f, tt) * (0.6 + 0.4 * np.cos(2 * np.pi * tt / (step * 4)) ** 2)
        for interval in (0, 4, 7):
            fc = 4 * f * 2 ** (interval / 12)
            tone = sum(a * np.sin(2 * np.pi * fc * (h + 1) * tt) for h, a in enumerate(s["chord"]))
            out[i0:i1] += (0.25 if s["pad"] else 0.12) * tone
    out += rng.standard_normal(n) * 10 ** (rng.uniform(-50, -30) / 20)
    out *= 10 ** (rng.uniform(-12, 0) / 20) / max(1e-9, np.abs(out).max())
    return out.astype(np.float32)


def make_dataset(
    out_dir: str | Path,
    *,
    genres: Sequence[str] = tuple(STYLES),
    clips_per_genre: int = 12,
    duration_s: float = 6.0,
    sample_rate: int = 16000,
    seed: int = 0,
) -> Path:
    """Write ``OUT/<genre>/<genre>.000NN.wav`` clips and return ``OUT``.

    Parameters
    ----------
    out_dir : str or Path
        Folder to create.
    genres : sequence of str
        Classes from :data:`STYLES`.
    clips_per_genre : int
        Clips per class.
    duration_s : float
        Length of each clip in seconds.
    sample_rate : int
        WAV sample rate in Hz (any rate works; the loader resamples).
    seed : int
        Seed of the generator.
    """
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    for g in genres:
        (out / g).mkdir(parents=True, exist_ok=True)
        for k in range(clips_per_genre):
            x = render_clip(g, duration_s, sample_rate, rng)
            scipy.io.wavfile.write(out / g / f"{g}.{k:05d}.wav", sample_rate,
                                   (x * 32767).astype(np.int16))
    return out


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="folder to write")
    p.add_argument("--clips", type=int, default=12, help="clips per genre (default 12)")
    p.add_argument("--seconds", type=float, default=6.0, help="clip length in s (default 6)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    print(make_dataset(a.out, clips_per_genre=a.clips, duration_s=a.seconds, seed=a.seed))


if __name__ == "__main__":
    main()
