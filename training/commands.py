"""``genre-edge train`` and ``genre-edge evaluate`` (light imports; TensorFlow only inside ``run``)."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

from firmware_py.cli import Command
from firmware_py.errors import GenreEdgeError

from .presets import PRESETS, TEACHERS
from .train_config import TrainConfig

#: The presets and teachers, and the defaults --help shows: read from their declarations
#: (training.presets, training.train_config: no numpy, no TensorFlow).
ARCHS = tuple(PRESETS)
ARCH_WINDOW_FRAMES = {name: preset.window_frames for name, preset in PRESETS.items()}
TEACHER_NAMES = tuple(TEACHERS)
_DEFAULTS = TrainConfig()
TRAIN_DEFAULTS = {key: getattr(_DEFAULTS, key) for key in (
    "ema", "balance", "distill", "distill_temperature", "teacher_l2", "rooms", "clean_p",
    "val_rooms", "hint", "validate_from")}
AUGMENT_DEFAULTS = {"room_p": _DEFAULTS.augment.room_p, "mixup_p": _DEFAULTS.augment.mixup_p}


def _number_in(low: float, high: float):
    """An argparse type: a float in ``[low, high]``."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be in [{low:g}, {high:g}], got {text}")
        return value

    return parse


_probability = _number_in(0.0, 1.0)
_loss_weight = _number_in(0.0, 100.0)


def _momentum(text: str) -> float:
    value = _probability(text)
    if value >= 1.0:
        raise argparse.ArgumentTypeError(f"must be below 1, got {text}")
    return value


#: What a training run writes into its folder besides the reports of ``evaluate.report_names``
#: (removed first by --overwrite).
RUN_FILES = ("run.json", "splits.json", "history.json", "model.keras", "curves.png")


def clear_run_folder(out: Path) -> None:
    """Remove a previous run's files (``--overwrite``) before training starts: an
    interrupted or still-running overwrite must never leave a folder that mixes two runs
    (the old labels and splits with the new model). Other files are left alone."""
    from .dataset import SPLITS
    from .evaluate import report_names

    if not (out / "run.json").is_file():
        return  # not a training run: touch nothing
    names = {*RUN_FILES, *(n for split in SPLITS for n in report_names(split).values())}
    for name in sorted(names):
        (out / name).unlink(missing_ok=True)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if not 0 <= value <= 64:
        raise argparse.ArgumentTypeError(f"must be in [0, 64], got {text}")
    return value


def _positive(kind: type):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    return parse


# -- train ------------------------------------------------------------------------------
def _train_configure(p: argparse.ArgumentParser) -> None:
    d = p.add_argument_group("data")
    d.add_argument("--data", required=True,
                   help="folder of audio: one sub-folder per genre (GTZAN layout works), or the root "
                        "that a manifest's paths are relative to")
    d.add_argument("--manifest", help="CSV with path,genre[,split] (default: DATA/manifest.csv if present)")
    d.add_argument("--genres", help="comma-separated genres to train on (default: all, see --min-clips)")
    d.add_argument("--min-clips", type=_positive(int),
                   help="use every genre with at least this many clips")
    d.add_argument("--split", default=None,
                   help="manifest (its split column; default when it has one), random (seeded, "
                        "stratified by genre), or a shipped split: gtzan-filtered")
    d.add_argument("--val-fraction", type=float, default=0.1, help="random split: val share (0.1)")
    d.add_argument("--test-fraction", type=float, default=0.2, help="random split: test share (0.2)")
    d.add_argument("--cache", help="feature cache folder (default $GENRE_EDGE_CACHE or ~/.cache/genre-edge)")
    d.add_argument("--workers", type=_positive(int), help="decoding processes (default: all cores)")
    m = p.add_argument_group("model")
    m.add_argument("--arch", default="edge", choices=ARCHS, help="architecture preset (default edge)")
    m.add_argument("--window-frames", type=_positive(int),
                   help="model input length in front-end frames, 100 per second (default: the "
                        "preset's, 300 = 3 s for edge)")
    m.add_argument("--n-mels", type=_positive(int), help="mel bands (default 64; a new cache)")
    m.add_argument("--compression", choices=["log", "pcen"], default="log",
                   help="front-end compression: log-mel dB (default) or per-channel energy "
                        "normalisation (PCEN: removes the playback level; a new cache)")
    f = p.add_argument_group("fit")
    f.add_argument("--out", required=True, help="run folder to write (model.keras, run.json, ...)")
    f.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    f.add_argument("--epochs", type=_positive(int), default=24, help="maximum epochs (default 24)")
    f.add_argument("--batch-size", type=_positive(int), default=64, help="windows per step (64)")
    f.add_argument("--crops-per-track", type=_positive(int), default=16,
                   help="random training windows per track and epoch (default 16)")
    f.add_argument("--lr", type=_positive(float), help="peak learning rate (default: the preset's)")
    f.add_argument("--patience", type=_positive(int), default=10,
                   help="early stopping: epochs without a better validation track accuracy (10), "
                        "never before half of --epochs")
    f.add_argument("--validate-from", type=_positive(int), default=TRAIN_DEFAULTS["validate_from"],
                   help="first epoch that is validated and may be kept; earlier epochs only train "
                        "(~15-20 s less each for the default recipe; the last epoch is always "
                        f"validated; default {TRAIN_DEFAULTS['validate_from']}: every epoch)")
    f.add_argument("--seed", type=int, default=0, help="seed of splits, crops, augmentation, weights")
    f.add_argument("--no-augment", action="store_true", help="no augmentation and no mixup")
    f.add_argument("--no-mixup", action="store_true", help="augmentation without mixup")
    f.add_argument("--room-p", type=_probability, default=AUGMENT_DEFAULTS["room_p"],
                   help="share of windows through the simulated room / microphone chain "
                        f"(default {AUGMENT_DEFAULTS['room_p']:g})")
    f.add_argument("--mixup-p", type=_probability, default=AUGMENT_DEFAULTS["mixup_p"],
                   help=f"share of mixed batches (default {AUGMENT_DEFAULTS['mixup_p']:g})")
    f.add_argument("--ema", type=_momentum, default=TRAIN_DEFAULTS["ema"],
                   help="momentum of the moving average of the weights that is validated and "
                        f"saved; 0 turns it off (default {TRAIN_DEFAULTS['ema']:g})")
    f.add_argument("--balance", action=argparse.BooleanOptionalAction, default=TRAIN_DEFAULTS["balance"],
                   help="draw as many windows from every genre per epoch; --no-balance weighs the "
                        "loss per genre instead (default: "
                        f"{'--balance' if TRAIN_DEFAULTS['balance'] else '--no-balance'})")
    k = p.add_argument_group("distillation (training.teacher)")
    k.add_argument("--teacher", choices=TEACHER_NAMES,
                   help="distil from a pre-trained music tagger: a linear probe on its embeddings "
                        "gives soft targets (needs: pip install --no-deps musicnn==0.1.0)")
    k.add_argument("--distill", type=_probability, default=TRAIN_DEFAULTS["distill"],
                   help="weight of the teacher in the targets (default "
                        f"{TRAIN_DEFAULTS['distill']:g})")
    k.add_argument("--distill-temperature", type=_positive(float),
                   default=TRAIN_DEFAULTS["distill_temperature"],
                   help="softening of the teacher's probabilities, p^(1/T) (default "
                        f"{TRAIN_DEFAULTS['distill_temperature']:g})")
    k.add_argument("--hint", type=_loss_weight, default=TRAIN_DEFAULTS["hint"],
                   help="weight of a second loss: the student's pooled features predict the "
                        "teacher's whole embedding (training only; default "
                        f"{TRAIN_DEFAULTS['hint']:g}: off)")
    k.add_argument("--teacher-l2", type=_positive(float), default=TRAIN_DEFAULTS["teacher_l2"],
                   help=f"L2 penalty of the teacher's probe (default {TRAIN_DEFAULTS['teacher_l2']:g})")
    r = p.add_argument_group("rooms (training.rooms: music as the device hears it)")
    r.add_argument("--rooms", type=_count, default=TRAIN_DEFAULTS["rooms"],
                   help="renderings of every training track through simulated rooms (speaker, "
                        "reverberation, noise, microphone band, -45..-10 dBFS), cached once "
                        f"(default {TRAIN_DEFAULTS['rooms']}: clean clips only)")
    r.add_argument("--clean-p", type=_probability, default=TRAIN_DEFAULTS["clean_p"],
                   help="with --rooms: share of training crops from the clean clip (default "
                        f"{TRAIN_DEFAULTS['clean_p']:g})")
    r.add_argument("--val-rooms", type=_count, default=TRAIN_DEFAULTS["val_rooms"],
                   help="with --rooms: renderings of every validation track through the "
                        "validation rooms; epochs are chosen on clean and in-room accuracy "
                        f"(default {TRAIN_DEFAULTS['val_rooms']})")
    r.add_argument("--rir-dir", help="folder of measured room impulse responses (wav, flac...) "
                                     "to train with instead of simulated rooms")
    r.add_argument("--noise-dir", help="folder of background recordings to train with instead "
                                       "of synthetic noise")
    f.add_argument("--budget-min", type=_positive(float),
                   help="train for this many minutes of wall clock (the learning-rate schedule "
                        "follows the clock; --epochs is an upper bound): compares presets on "
                        "equal time")
    f.add_argument("--train-on-val", metavar="RUN", dest="refit_of",
                   help="the final fit of a recipe chosen on validation: train on the training "
                        "and validation tracks, validate nothing, keep the last epoch, take the "
                        "temperature of RUN (that recipe's run on the training tracks alone, "
                        "same data, split and flags)")
    f.add_argument("--no-calibrate", action="store_true",
                   help="keep the raw softmax (default: fit a temperature on validation)")
    f.add_argument("--threads", type=int, default=0, help="TensorFlow threads (default: all cores)")
    f.add_argument("--distribute", default="none", choices=["none", "mirrored"],
                   help="mirrored: tf.distribute.MirroredStrategy over all GPUs")
    f.add_argument("--mixed-precision", default="auto", choices=["auto", "on", "off"],
                   help="float16 compute (auto: on when a GPU is present)")
    f.add_argument("--prepare-only", action="store_true",
                   help="build what this training and its reports read from the cache "
                        "(features, room renderings of training and of the val/test reports, "
                        "the teacher's embeddings) with every core, then stop: "
                        "for several runs, one core each, that share them")
    f.add_argument("--no-evaluate", action="store_true",
                   help="skip the val and test reports after training")
    f.add_argument("-q", "--quiet", action="store_true", help="no progress output")


def _train_run(args: argparse.Namespace) -> int:
    """``genre-edge train``: check the flags, cache the features (and rooms), fit, report."""
    t0 = time.time()
    out = _checked_out_folder(args)
    spec, splits, frontend, cache_dir = _prepared_splits(args, out, t0)
    if not args.no_evaluate:
        _render_evaluation_rooms(args, splits, frontend, cache_dir)
    if args.prepare_only:
        from .fit import prepare_teacher

        prepare_teacher(_train_config(args), splits, len(spec.genres), frontend,
                        verbose=0 if args.quiet else 1)
        if not args.quiet:
            print(f"caches ready in {cache_dir} ({time.time() - t0:.0f} s); nothing trained")
        return 0
    from .fit import train

    run = train(spec, splits, list(spec.genres), frontend, out, _train_config(args), cache_dir=cache_dir,
                verbose=0 if args.quiet else 1)
    if not args.no_evaluate:
        from .evaluate import evaluate_run

        for split in _report_splits(args):
            evaluate_run(out, split, verbose=0 if args.quiet else 1)
    if not args.quiet:
        print(f"run written to {out} (best epoch {run['best_epoch']}, {time.time() - t0:.0f} s in all)")
    return 0


def _report_splits(args: argparse.Namespace) -> tuple[str, ...]:
    """The splits reported after training: a refit trained on the validation tracks, so
    only its test report means anything."""
    return ("test",) if args.refit_of else ("val", "test")


def _checked_out_folder(args: argparse.Namespace) -> Path:
    """Flag combinations and the output folders, checked before any decoding (a bad path
    or a flag that does nothing must not cost minutes first)."""
    if not args.teacher:
        for flag, key in (("--distill", "distill"), ("--distill-temperature", "distill_temperature"),
                          ("--teacher-l2", "teacher_l2"), ("--hint", "hint")):
            if getattr(args, key) != TRAIN_DEFAULTS[key]:
                raise GenreEdgeError(f"{flag} only applies with a teacher: add --teacher "
                                     f"{TEACHER_NAMES[0]} or drop {flag}")
    if (args.rir_dir or args.noise_dir) and not args.rooms:
        raise GenreEdgeError("--rir-dir/--noise-dir only apply with --rooms: add --rooms 4")
    if args.budget_min and args.validate_from > 1:
        raise GenreEdgeError("--validate-from cannot be combined with --budget-min (the budget "
                             "ends the run at an epoch not known in advance): drop one of them")
    if args.refit_of:
        if args.budget_min:
            raise GenreEdgeError("--train-on-val cannot be combined with --budget-min (the run "
                                 "must end with the recipe's last epoch): drop --budget-min")
        from .refit import check_refit_source

        check_refit_source(Path(args.refit_of), Path(args.out))
    out = Path(args.out)
    if (out / "run.json").exists() and not args.overwrite:
        raise GenreEdgeError(f"{out} already holds a training run: choose another --out or pass --overwrite")
    for folder, flag in ((out, "--out"), (Path(args.cache).expanduser() if args.cache else None, "--cache")):
        if folder is None:
            continue
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise GenreEdgeError(f"cannot use {flag} {folder} ({exc.strerror}): choose a writable "
                                 "folder") from None
    return out


def _prepared_splits(args: argparse.Namespace, out: Path, t0: float) -> tuple[Any, dict, Any, Path]:
    """The dataset's track-level splits with their features (and room renderings) cached:
    ``(spec, splits, frontend, cache_dir)``; tracks that cannot be decoded are dropped."""
    from firmware_py.features import DEFAULT_PARAMS

    from .dataset import build_cache, check_disjoint, default_cache_dir, prepare_dataset, to_tracks

    genres = [g.strip() for g in args.genres.split(",") if g.strip()] if args.genres else None
    spec, parts = prepare_dataset(
        args.data, manifest=args.manifest, genres=genres, min_clips=args.min_clips,
        split=args.split, seed=args.seed, val_fraction=args.val_fraction,
        test_fraction=args.test_fraction)
    frontend = dataclasses.replace(
        DEFAULT_PARAMS,
        window_frames=args.window_frames or ARCH_WINDOW_FRAMES[args.arch],
        n_mels=args.n_mels or DEFAULT_PARAMS.n_mels, compression=args.compression)
    cache_dir = Path(args.cache).expanduser().resolve() if args.cache else default_cache_dir()
    splits = to_tracks(parts, list(spec.genres), frontend, cache_dir)
    check_disjoint(splits)
    if args.overwrite:
        clear_run_folder(out)
    stats = build_cache([t for part in splits.values() for t in part], workers=args.workers,
                        progress=not args.quiet)
    if stats.failed:
        bad = set(stats.failed)
        splits = {k: [t for t in v if str(t.path) not in bad] for k, v in splits.items()}
        for part, tracks in splits.items():
            if not tracks:
                raise GenreEdgeError(f"every {part} track failed to decode: check the audio files")
    if not args.quiet:
        print(f"features: {stats.decoded} decoded, {stats.cached} from cache, {len(stats.failed)} "
              f"unreadable ({time.time() - t0:.0f} s) in {cache_dir}", flush=True)
    if args.rooms:
        splits = _render_rooms(args, splits, frontend, cache_dir)
    return spec, splits, frontend, cache_dir


def _train_config(args: argparse.Namespace) -> TrainConfig:
    """The flags as a :class:`~training.train_config.TrainConfig`."""
    from .train_config import AugmentParams

    aug = (AugmentParams.none() if args.no_augment
           else AugmentParams(room_p=args.room_p, mixup_p=args.mixup_p))
    if args.no_mixup:
        aug = dataclasses.replace(aug, mixup_alpha=0.0, mixup_p=0.0)
    return TrainConfig(
        arch=args.arch, epochs=args.epochs, batch_size=args.batch_size,
        crops_per_track=args.crops_per_track, learning_rate=args.lr, patience=args.patience,
        validate_from=args.validate_from,
        seed=args.seed, threads=args.threads, distribute=args.distribute,
        mixed_precision=args.mixed_precision, ema=args.ema, balance=args.balance,
        teacher=args.teacher, distill=args.distill, distill_temperature=args.distill_temperature,
        teacher_l2=args.teacher_l2, hint=args.hint, rooms=args.rooms, clean_p=args.clean_p,
        val_rooms=args.val_rooms, rir_dir=args.rir_dir, noise_dir=args.noise_dir,
        calibrate=not args.no_calibrate, budget_min=args.budget_min or 0.0,
        refit_of=str(Path(args.refit_of)) if args.refit_of else None, augment=aug)


def _render_rooms(args: argparse.Namespace, splits: dict, frontend, cache_dir: Path) -> dict:
    """Render (and cache) the training and validation rooms before TensorFlow loads (the
    renderers fork); tracks that cannot be rendered are dropped from every split."""
    from .room_features import build_room_cache, training_renderings

    t0 = time.time()
    from .refit import train_and_val

    # a refit (--train-on-val) trains on the validation tracks in the training rooms
    train, val = ((train_and_val(splits), []) if args.refit_of
                  else (splits["train"], splits["val"]))
    train_rooms, items, val_items = training_renderings(
        train, val, frontend.sample_rate, cache_dir, rooms=args.rooms,
        val_rooms=args.val_rooms, rir_dir=args.rir_dir, noise_dir=args.noise_dir)
    failed = build_room_cache([*items, *val_items], workers=args.workers,
                              progress=not args.quiet)
    if failed:
        splits = {k: [t for t in v if str(t.path) not in failed] for k, v in splits.items()}
    if not args.quiet:
        print(f"rooms: {args.rooms} renderings per training track ({train_rooms.source} "
              f"responses: {len(train_rooms.rirs)}), {args.val_rooms} per validation track, "
              f"{len(failed)} unreadable ({time.time() - t0:.0f} s)", flush=True)
    return splits


def _render_evaluation_rooms(args: argparse.Namespace, splits: dict, frontend, cache_dir: Path) -> None:
    """Render (and cache) the held-out rooms of the val and test reports that follow the
    training, now, with every worker: after training, TensorFlow is loaded and the renderers
    cannot fork, so ~800 renderings would run on one core after the fit."""
    from .evaluate import ROOMS_PER_TRACK, in_room_tracks

    t0 = time.time()
    n = 0
    for split in _report_splits(args):
        if splits.get(split):
            items, _ = in_room_tracks(splits[split], split, frontend, cache_dir,
                                      workers=args.workers, progress=not args.quiet)
            n += len(items)
    if not args.quiet:
        print(f"evaluation rooms: {n} renderings ({ROOMS_PER_TRACK} per val/test track) "
              f"ready ({time.time() - t0:.0f} s)", flush=True)


train = Command("train", "train a genre classifier on labelled audio (writes a run folder)",
                _train_configure, _train_run)


# -- evaluate ---------------------------------------------------------------------------
def _evaluate_configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="training run folder (the --out of 'genre-edge train')")
    p.add_argument("--split", default="test", choices=["train", "val", "test"],
                   help="tracks to evaluate on (default test)")
    p.add_argument("--no-rooms", action="store_true",
                   help="clean files only (default: also every track through held-out rooms)")
    p.add_argument("--rooms-per-track", type=_count, default=3,
                   help="held-out rooms each track is played through (default 3)")
    p.add_argument("--rir-dir", help="your own room: a folder of impulse responses measured "
                                     "with the device's microphone (wav, flac, ...)")
    p.add_argument("--noise-dir", help="your own background: a folder of recordings made "
                                       "with the device's microphone")
    p.add_argument("-q", "--quiet", action="store_true", help="no summary line")


def _evaluate_run(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_run

    if args.no_rooms and (args.rir_dir or args.noise_dir):
        raise GenreEdgeError("--rir-dir/--noise-dir need the in-room evaluation: drop --no-rooms")
    evaluate_run(args.run, args.split, verbose=0 if args.quiet else 1,
                 rooms=not args.no_rooms and args.rooms_per_track > 0,
                 rooms_per_track=args.rooms_per_track,
                 rir_dir=Path(args.rir_dir).expanduser() if args.rir_dir else None,
                 noise_dir=Path(args.noise_dir).expanduser() if args.noise_dir else None)
    return 0


evaluate = Command("evaluate", "evaluate a training run: report.json, report.md, confusion and curves",
                   _evaluate_configure, _evaluate_run)
