"""Training hyper-parameters (:class:`TrainConfig`, stored in ``run.json`` as ``train``)
and augmentation strengths (:class:`AugmentParams`, applied by :mod:`training.augment`).

Standard library only: ``genre-edge train --help`` takes its defaults from here without
numpy or TensorFlow. :mod:`training.fit` re-exports both.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class AugmentParams:
    """Augmentation strengths; every probability is per window.

    Attributes
    ----------
    gain_db : float
        Uniform random gain in ``[-gain_db, gain_db]`` dB.
    room_p : float
        Probability of the simulated room / microphone chain. Off by default: on the
        4-genre music set it did not raise validation accuracy (see docs/training.md);
        ``genre-edge train --room-p 0.3`` turns it on for microphone robustness.
    reverb_t60_s : tuple of float
        Range of the reverberation time (s, 60 dB power decay).
    reverb_wet_db : tuple of float
        Range of the tail's level relative to the direct sound (dB).
    tilt_db : float
        EQ tilt across the mel range, uniform in ``[-tilt_db, tilt_db]`` dB.
    bass_cut_db : float
        Largest attenuation of the lowest bands (small speaker), dB.
    snr_db : tuple of float
        Range of the signal-to-noise ratio of the additive noise (dB, mean power).
    time_masks, time_mask_frames : int
        Number of time masks and the largest mask width (frames).
    freq_masks, freq_mask_bands : int
        Number of frequency masks and the largest mask width (mel bands).
    mixup_alpha : float
        Beta(alpha, alpha) mixup between windows of a batch; 0 disables it.
    mixup_p : float
        Fraction of batches that are mixed. Off by default: with mixup the edge model
        underfitted (training accuracy ~70 %, see docs/training.md).
    """

    gain_db: float = 10.0
    room_p: float = 0.0
    reverb_t60_s: tuple[float, float] = (0.2, 1.2)
    reverb_wet_db: tuple[float, float] = (-12.0, 0.0)
    tilt_db: float = 8.0
    bass_cut_db: float = 15.0
    snr_db: tuple[float, float] = (10.0, 40.0)
    time_masks: int = 2
    time_mask_frames: int = 25
    freq_masks: int = 2
    freq_mask_bands: int = 6
    mixup_alpha: float = 0.3
    mixup_p: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def none(cls) -> AugmentParams:
        """No augmentation at all."""
        return cls(gain_db=0.0, room_p=0.0, time_masks=0, freq_masks=0, mixup_alpha=0.0, mixup_p=0.0)



@dataclass
class TrainConfig:
    """Training hyper-parameters (stored in ``run.json`` as ``train``).

    Attributes
    ----------
    arch : str
        Preset name (``training.models.PRESETS``).
    epochs : int
        Largest number of epochs.
    batch_size : int
        Windows per step (per replica when distributed).
    crops_per_track : int
        Random training windows drawn from each training track per epoch.
    learning_rate : float or None
        Peak learning rate; ``None`` takes the preset's.
    warmup_epochs : float
        Linear warm-up length, then cosine decay to 1 % of the peak.
    weight_decay : float
        AdamW decoupled weight decay.
    label_smoothing : float
        Label smoothing of the cross-entropy.
    patience : int
        Stop after this many epochs without a better validation track accuracy.
    min_epochs : int or None
        Never stop early before this epoch (default: half of ``epochs``, so the
        cosine schedule gets to its low learning rates, where the tiny validation set
        stops being noisy).
    validate_from : int
        First epoch (1-based) that is validated, may be kept and counts for early stopping;
        the epochs before it only train (the last epoch is always validated). 1: every epoch.
    seed : int
        Seed of everything random (crops, augmentation, initialisation).
    inference_hop_s : float
        Hop of the evaluation windows, seconds.
    threads : int
        TensorFlow intra-op threads (0: all cores).
    distribute : str
        ``none`` or ``mirrored`` (``tf.distribute.MirroredStrategy`` over all GPUs).
    mixed_precision : str
        ``auto`` (float16 compute on a GPU), ``on`` or ``off``.
    ema : float
        Momentum of an exponential moving average of the weights (0: off); validation,
        checkpoints and the exported model use the averaged weights.
    balance : bool
        Draw the same number of training windows from every class per epoch (tracks of
        small classes are visited more often) instead of weighting the loss per class.
    teacher : str or None
        Distil from this pre-trained tagger (``training.teacher.TEACHERS``): the target of
        every training window becomes ``(1 - distill) * one-hot + distill * teacher``.
    distill : float
        Weight of the teacher's probabilities in the targets.
    distill_temperature : float
        Softening of the teacher's probabilities (``p ** (1 / T)``).
    teacher_l2 : float
        L2 penalty of the teacher's linear probe.
    rooms : int
        Renderings of every training track through simulated rooms (:mod:`training.rooms`:
        speaker, room response, noise, microphone band, level), cached once; 0 trains on
        clean clips only.
    clean_p : float
        With ``rooms``, the share of training crops taken from the clean clip.
    val_rooms : int
        With ``rooms``, renderings of every validation track through the validation rooms;
        checkpoints are chosen on the mean of clean and in-room validation track accuracy.
    rir_dir, noise_dir : str or None
        A folder of measured room impulse responses / background recordings that replaces
        the simulated training rooms / synthetic noises.
    hint : float
        With a teacher: weight of a second loss that makes the student's pooled features
        predict the teacher's whole embedding (200 penultimate activations + 50 tags,
        standardised; mean squared error through a linear head used only in training):
        far more to learn from per window than the 11 probabilities. 0: off.
    budget_min : float
        Train for this many minutes of wall clock (the learning-rate schedule follows the
        clock, ``epochs`` is only an upper bound); 0: the epoch schedule.
    calibrate : bool
        Fit a softmax temperature on the validation windows (clean and in-room) after
        training and fold it into the saved model (``run.json`` ``calibration``).
    refit_of : str or None
        The final fit of a recipe chosen on validation (``--train-on-val RUN``): RUN is the
        run of the same recipe on the training tracks alone, whose validation chose its
        settings. This run trains on the training *and* validation tracks (one list in
        track order), validates nothing, keeps the last epoch and folds RUN's fitted
        temperature into it (there is no held-out data left to fit one on). None: off.
    augment : AugmentParams
        Augmentation strengths.
    """

    arch: str = "edge"
    epochs: int = 24
    batch_size: int = 64
    crops_per_track: int = 16
    learning_rate: float | None = None
    warmup_epochs: float = 2.0
    weight_decay: float = 1e-3
    label_smoothing: float = 0.05
    patience: int = 10
    min_epochs: int | None = None
    validate_from: int = 1
    seed: int = 0
    inference_hop_s: float = 1.0
    threads: int = 0
    distribute: str = "none"
    mixed_precision: str = "auto"
    ema: float = 0.0
    balance: bool = False
    teacher: str | None = None
    distill: float = 0.5
    distill_temperature: float = 1.0
    teacher_l2: float = 1.0
    rooms: int = 0
    clean_p: float = 0.25
    val_rooms: int = 2
    rir_dir: str | None = None
    noise_dir: str | None = None
    calibrate: bool = True
    budget_min: float = 0.0
    hint: float = 0.0
    refit_of: str | None = None
    augment: AugmentParams = field(default_factory=AugmentParams)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
