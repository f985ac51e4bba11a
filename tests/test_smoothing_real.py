"""The smoothing targets on real music: held-out clips played back to back.

Real clips of the manifest's test split go through the bundled int8 model as ``listen``
would (the windows of back-to-back clips, straddling windows included; the streaming
front-end equals the batch one, tests/test_features.py) and through the smoother with
the bundle's defaults (tuned on the *validation* split, clean and in held-out rooms, by
``python -m converter.tune_smoothing BUNDLE --data ... --write``):

* steady music: the clips of each genre that the model classifies right at track level
  (the smoother cannot fix a wrong model), back to back: 85 minutes in all with the
  eleven-genre model of 2026-12-04: published changes after the first lock, per 10 minutes;
* real changes: 192 pairs of such clips of two different genres: the delay from the
  boundary to the first publication of the new genre.

Measured with the shipped bundle (test split, clean files, hard cuts between clips):
**0.23 changes per 10 minutes** of steady music (target <= 1: met; validation, where the
defaults were chosen: 0.42 clean and 0.50 in held-out rooms); the price is a slow follow:
13% of the real changes published within 6 s, median 26 s. The previous defaults (3
averaged windows, surprise 0.6) give 2.35 changes per 10 minutes, 30% within 6 s, median
10 s; plain averaging + hysteresis 14.6 changes, 54% within 6 s (median 6 s). The model's
window accuracy (63%) leaves confident error streaks of 10-30 windows inside songs (a rock
song heard as pop or blues) that a causal smoother cannot tell from a real change, so
steadiness is bought with follow time; and in 15% of the changes the model puts the new
genre on top in no window that ends within 6 s of the boundary (``follow_6s_ceiling``
0.85), which no smoother of its votes can repair. The 6 s follow target stays a strict
expected failure, so that a better model that meets it turns this file red until the
expectation is updated. (The previous 4-genre model: 0.95 changes per 10 minutes, 44%
within 6 s, median 8.9 s, on a 4-genre test split.)
"""

from __future__ import annotations

import numpy as np
import pytest

from converter.tune_smoothing import evaluate, prepare
from firmware_py.bundle import default_bundle_path
from firmware_py.pipeline import Pipeline
from firmware_py.smoothing import SmoothingParams
from tests.paths import MUSIC, require_music
from tests.test_smoothing import CLASSIC


@pytest.fixture(scope="module")
def played():
    return prepare(str(default_bundle_path()), str(require_music()), "test")


@pytest.fixture(scope="module")
def shipped(played) -> dict[str, float]:
    return evaluate(played, SmoothingParams.from_dict(played["bundle"].smoothing))


def test_enough_real_music_is_played(played, shipped) -> None:
    assert shipped["minutes"] >= 40 and shipped["pairs"] >= 30
    minutes = {g: len(p) * played["bundle"].inference_hop_s / 60 for g, (p, _) in played["steady"].items()}
    # classical 31, rock 15, electronic 11 minutes (and 8 of the other genres) with the shipped model
    assert sum(m >= 10 for m in minutes.values()) >= 3, minutes
    assert len(minutes) >= 8, minutes


def test_segment_smoothing_is_far_steadier_than_plain_averaging(played, shipped) -> None:
    classic = evaluate(played, CLASSIC)
    assert shipped["changes_per_10min"] <= 0.1 * classic["changes_per_10min"], (shipped, classic)
    # the price of steadiness: a slow follow, but a follow (the second clip of a pair lasts
    # only 30 s for GTZAN, 60 s for Emotify: a change not published by its end counts as
    # never followed)
    assert shipped["median_delay_s"] <= 45.0, shipped  # measured 26.5
    assert shipped["follow_90s"] >= 0.65, shipped


def test_steady_music_changes_at_most_once_per_ten_minutes(shipped) -> None:
    """Issue 18's smoothing target, on the test split (the defaults were tuned on
    validation: 0.00 clean, 0.67 in held-out rooms)."""
    assert shipped["changes_per_10min"] <= 1.0, shipped  # measured 0.23 over 85 minutes


def test_the_model_alone_rules_out_following_every_change_within_six_seconds(shipped) -> None:
    """Why the target below fails: some changes get no vote for the new genre in time."""
    assert shipped["follow_6s"] <= shipped["follow_6s_ceiling"] < 0.99, shipped  # measured 0.85


def test_the_forked_prepare_gives_the_serial_streams() -> None:
    """prepare(workers=2): the clips (here in held-out rooms, joined with player gaps) and
    the streams shared between forked processes, each with its own interpreter, give the
    serial streams: the same pairs in the same order, the same probabilities and levels."""
    args = (str(default_bundle_path()), str(require_music()), "val")
    kw = {"rooms": True, "gaps": True, "pairs_per_genre_pair": 1, "max_per_genre": 2}
    # Exact equality holds on any machine: both runs execute the same code on the same
    # inputs on this machine (the children are forks of this process), and the int8 model's
    # outputs are dequantised integers; nothing is compared across machines or kernels.
    serial = prepare(*args, **kw, workers=1)
    forked = prepare(*args, **kw, workers=2)
    from tests.paths import manifest_rows

    # the quick look keeps the first two clips of each genre only
    assert serial["tracks"] == forked["tracks"] == sum(
        min(2, len(manifest_rows(g, "val"))) for g in serial["labels"])
    assert serial["correct"] == forked["correct"] >= 8
    assert list(serial["steady"]) == list(forked["steady"])
    for g in serial["steady"]:
        for a, b in zip(serial["steady"][g], forked["steady"][g], strict=True):
            np.testing.assert_array_equal(a, b)
    assert len(serial["pairs"]) == len(forked["pairs"]) >= 20
    for a, b in zip(serial["pairs"], forked["pairs"], strict=True):
        assert a[:3] == b[:3]
        np.testing.assert_array_equal(a[3], b[3])
        np.testing.assert_array_equal(a[4], b[4])


def test_the_forked_grid_search_gives_the_serial_figures(played) -> None:
    """search(workers=2) shares the grid between forked processes: the same points, in the
    same order, with exactly the serial figures, and each point's figures are its own."""
    from converter.tune_smoothing import search

    grid = {"average_windows": [3, 6], "enter_threshold": [0.3], "min_top_windows": [2],
            "surprise_margin": [0.6, 0.8], "segment_windows": [20, 80], "min_dwell_s": [3.0],
            "leave_threshold": [0.1], "gap_dip_db": [0.0], "gap_follow_s": [0.0]}
    serial = search(played, grid, workers=1)
    assert len(serial) == 8
    assert search(played, grid, workers=2) == serial
    # the grid points differ in what they measure (a search that returned one point's
    # figures for all would pass the comparison above)
    assert len({m["changes_per_10min"] for _, m in serial}) > 1 or \
        len({m["median_delay_s"] for _, m in serial}) > 1


@pytest.mark.xfail(strict=True, reason="model window accuracy 63%: measured 13% of real "
                   "changes followed within 6 s, median 26 s, with the steady defaults (30%, "
                   "10 s with the previous ones; target: all); the model votes for the new "
                   "genre within 6 s in only 85% of them")
def test_target_every_real_change_followed_within_six_seconds(shipped) -> None:
    assert shipped["follow_6s"] >= 0.99


def test_device_pipeline_follows_classical_to_rock(played) -> None:
    """The same through the device's streaming Pipeline, 0.1 s blocks, for one real pair."""
    from firmware_py.audio import load_audio
    from tests.paths import manifest_rows

    bundle = played["bundle"]
    model = bundle.open_model()
    rate = bundle.frontend.sample_rate

    def first_right(genre: str) -> np.ndarray:
        from firmware_py.classify import classify_file

        for r in manifest_rows(genre, "test"):
            if classify_file(MUSIC / r["path"], bundle, model).genre == genre:
                return load_audio(MUSIC / r["path"], rate)
        pytest.fail(f"no {genre} test clip classified right")

    a, b = first_right("classical"), first_right("rock")
    pipeline = Pipeline(bundle, model)
    audio = np.concatenate([a, b])
    step = rate // 10
    states = [r.state for i in range(0, audio.shape[0], step) for r in pipeline.push(audio[i : i + step])]
    boundary_s = a.shape[0] / rate
    assert [s for s in states if s.t_s <= boundary_s][-1].genre == "classical"
    follow = next(s.t_s for s in states if s.t_s > boundary_s and s.genre == "rock")
    assert follow - boundary_s <= 60.0  # the steady defaults: tens of seconds
    # the same clips through the offline analysis the figures above come from
    from converter.tune_smoothing import window_probs
    from firmware_py.smoothing import run_smoother

    offline = run_smoother(bundle.labels, window_probs(bundle, model, audio),
                           params=SmoothingParams.from_dict(bundle.smoothing),
                           inference_hop_s=bundle.framed_inference_hop_s, t0_s=bundle.frontend.window_s)
    offline_follow = next(s.t_s for s in offline if s.t_s > boundary_s and s.genre == "rock")
    assert abs(follow - offline_follow) <= 1.0, (follow, offline_follow)


def test_each_hop_result_carries_the_window_the_model_saw_even_in_one_big_block(played) -> None:
    """A block longer than the hop yields several results; each keeps its own window."""
    from firmware_py.audio import load_audio
    from firmware_py.features import logmel
    from tests.paths import clip

    bundle = played["bundle"]
    fe = bundle.frontend
    audio = load_audio(clip("rock", 0, "test"), fe.sample_rate)[: 9 * fe.sample_rate]
    pipeline = Pipeline(bundle, bundle.open_model())
    results = list(pipeline.push(audio[: 4 * fe.sample_rate]))
    big = list(pipeline.push(audio[4 * fe.sample_rate :]))  # 5 s in one block: several hops
    assert len(big) >= 4
    batch = logmel(audio, fe)
    for r in results + big:
        frames_total = round((r.t_s * fe.sample_rate - fe.n_fft) / fe.hop_length) + 1
        expect = batch[frames_total - fe.window_frames : frames_total]
        assert r.window.shape == expect.shape
        assert np.allclose(r.window, expect, atol=1e-3), r.t_s
    assert not np.allclose(big[0].window, big[-1].window)
