"""Training and evaluation commands: train, train-head, evaluate, calibrate-model, make-cohort,
make-normaliser, evaluate-identification, import-pretrained."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from faceapp.config import default_model_path


def _embedding_dim(text: str) -> int:
    """``--dim``: a whole number from 2 to the gallery's largest storable dimension."""
    from faceapp.gallery.types import MAX_EMBEDDING_DIM

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if not 2 <= value <= MAX_EMBEDDING_DIM:
        raise argparse.ArgumentTypeError(
            f"must be from 2 to {MAX_EMBEDDING_DIM} (the gallery stores at most that), got {value}")
    return value


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("train", help="train the encoder with triplet loss and online mining")
    p.add_argument("data", help="identity folders: DATA/<person>/<image>")
    p.add_argument("--people", help="people*.txt restricting the identities (LFW protocol file)")
    p.add_argument("--out", required=True, help="checkpoint to write (best epoch), e.g. models/NAME.pt")
    p.add_argument("--backbone", default="resnet", choices=["resnet", "inception_resnet_v1"])
    p.add_argument("--input-size", type=int, default=96)
    p.add_argument("--dim", type=_embedding_dim, default=128,
                   help="embedding dimension D (2..8192; every search backend handles any D)")
    p.add_argument("--width", type=int, default=32, help="channels of the first ResNet stage")
    p.add_argument("--layers", default="1,2,2,1", help="BasicBlocks per ResNet stage")
    p.add_argument("--miner", default="batch-hard", choices=["batch-hard", "semi-hard", "batch-all"])
    p.add_argument("--warmup-miner", default="batch-all", choices=["batch-hard", "semi-hard", "batch-all"])
    p.add_argument("--warmup-epochs", type=int, default=2)
    p.add_argument("--margin", type=float, default=0.2)
    p.add_argument("--soft-margin", action="store_true", help="softplus instead of the hinge")
    p.add_argument("--metric", default="squared_l2", choices=["squared_l2", "cosine"])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--max-minutes", type=float, help="stop (and finish annealing) after this time")
    p.add_argument("--max-steps", type=int, help="stop after this many steps (smoke runs)")
    p.add_argument("--p", type=int, default=24, help="identities per batch")
    p.add_argument("--k", type=int, default=4, help="images per identity in a batch")
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--aux-weight", type=float, default=1.0, help="CosFace auxiliary loss weight (0: off)")
    p.add_argument("--val-identities", type=int, default=100)
    p.add_argument("--flip-tta", action="store_true", help="embed crop + mirror at inference")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--cache-dir", default="cache", help="aligned-crop cache folder")
    p.add_argument("--resume", action="store_true", help="continue from OUT.state")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_train)

    f = sub.add_parser(
        "finetune",
        help="fine-tune the imported dlib ResNet's last blocks with triplet loss and online hard mining",
    )
    f.add_argument("data", help="identity folders: DATA/<person>/<image>")
    f.add_argument("--people", help="people*.txt restricting the identities (e.g. peopleDevTrain.txt)")
    f.add_argument("--base", default=str(default_model_path()), help="dlib ResNet checkpoint to start from")
    f.add_argument("--out", required=True, help="checkpoint to write (best epoch on validation AUC)")
    f.add_argument("--train-blocks", type=int, default=3, help="trailing residual blocks trained (+ fc)")
    f.add_argument("--epochs", type=int, default=8)
    f.add_argument("--lr", type=float, default=1e-4)
    f.add_argument("--margin", type=float, default=0.1, help="triplet margin (squared L2, unit vectors)")
    f.add_argument("--miner", default="batch-hard", choices=["batch-hard", "semi-hard", "batch-all"])
    f.add_argument("--p", type=int, default=32, help="identities per batch")
    f.add_argument("--k", type=int, default=4, help="images per identity in a batch")
    f.add_argument("--val-identities", type=int, default=300)
    f.add_argument("--max-minutes", type=float, help="stop after this much training time")
    f.add_argument("--max-steps", type=int, help="stop after this many steps (smoke runs)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--cache-dir", default="cache", help="aligned-crop cache folder")
    f.add_argument("--resume", action="store_true", help="continue from OUT.state")
    f.add_argument("--json", action="store_true")
    f.set_defaults(func=_finetune)

    h = sub.add_parser("train-head", help="train the binary verification head of a model")
    h.add_argument("data")
    _model_options(h)
    h.add_argument("--people", help="people*.txt: training identities")
    h.add_argument("--mode", default="l1", choices=["l1", "chi2"])
    h.add_argument("--pairs", type=int, default=20000, help="balanced training pairs")
    h.add_argument("--seed", type=int, default=0)
    h.set_defaults(func=_train_head)

    e = sub.add_parser("evaluate", help="LFW-protocol verification: 10-fold accuracy, AUC, EER, TAR@FAR")
    _model_options(e, data=True)
    e.add_argument("--pairs", required=True, help="pairs*.txt")
    e.add_argument("--scorer", default="distance", help="distance, head (= head_l1), head_l1, head_chi2, all")
    e.add_argument("--plots", help="folder for roc_<scorer>.png and hist_<scorer>.png")
    e.add_argument(
        "--write-calibration",
        action="store_true",
        help="also store this run's thresholds in the model's calibration.json (default: read-only; "
        "prefer `faceapp calibrate-model`, which measures FAR 1e-3/1e-4 on >= 1e5 impostor pairs)",
    )
    e.add_argument("--no-calibration", action="store_true", help=argparse.SUPPRESS)  # the old default
    _normaliser_option(e, "score the distance scorer as the app's 1:1 and 1:K decisions do (through the "
                       "model's score_norm.npz when it has one)")
    _cohort_options(e)
    e.set_defaults(func=_evaluate)

    c = sub.add_parser(
        "calibrate-model",
        help="measure the model's thresholds on pairs of training identities (>= 1e5 impostor pairs) "
        "and write its calibration.json",
    )
    _model_options(c, data=True)
    c.add_argument("--people", required=True, help="people*.txt: the identities (e.g. peopleDevTrain.txt)")
    c.add_argument("--impostor-pairs", type=int, default=200_000,
                   help="random pairs of different people (>= 1000000 also measures FAR 1e-5, the 1:K "
                   "point for galleries of 101-1000 people)")
    c.add_argument(
        "--genuine-per-person", type=int, default=50, help="at most this many same-person pairs each"
    )
    c.add_argument("--scorer", default="all", help="distance, head_l1, head_chi2, all")
    c.add_argument("--seed", type=int, default=0)
    _normaliser_option(c, "measure τ on the scores the app decides on (the distance scorer through the "
                       "model's score_norm.npz when it has one)")
    c.set_defaults(func=_calibrate)

    i = sub.add_parser("evaluate-identification", help="closed/open-set identification: rank-1/5, DIR@FPIR")
    _model_options(i, data=True)
    i.add_argument("--people", help="people*.txt: the identities to use")
    i.add_argument("--distractor-fraction", type=float, default=0.5, help="share of identities kept out")
    i.add_argument("--seed", type=int, default=0)
    i.add_argument(
        "--gallery-images", type=int, default=1, help="images enrolled per gallery identity (default 1)"
    )
    i.add_argument(
        "--aggregate",
        choices=("max", "mean"),
        default="max",
        help="score a person by the best of their templates (max) or by their normalised mean (mean)",
    )
    _cohort_options(i)
    i.add_argument(
        "--snorm-scope",
        choices=("all", "accept"),
        default="all",
        help="with --cohort: rank and accept by the normalised score (all), or rank by cosine and "
        "accept the top-1 by its normalised score (accept)",
    )
    i.add_argument(
        "--normaliser",
        choices=("app", "none"),
        default="app",
        help="app (default): score as the app's 1:K search does (cosine shortlist re-scored by the "
        "model's score_norm.npz when it has one); none: raw cosine similarity (needed with --cohort "
        "for a model with a normaliser)",
    )
    i.set_defaults(func=_evaluate_identification)

    k = sub.add_parser(
        "make-cohort", help="embed other people's faces as a model's s-norm cohort file (.npz)"
    )
    _model_options(k, data=True)
    k.add_argument("--people", required=True, help="people*.txt of the cohort identities")
    k.add_argument("--out", required=True, help="cohort file to write, e.g. models/cohort.npz")
    k.add_argument("--top-k", type=int, default=50, help="cohort scores per face for s-norm")
    k.set_defaults(func=_make_cohort)

    n = sub.add_parser(
        "make-normaliser",
        help="learn the model's open-set score normaliser from other people's faces (score_norm.npz; "
        "no face or template is stored in it)",
    )
    _model_options(n, data=True)
    n.add_argument("--people", required=True, help="people*.txt of the cohort identities (never test people)")
    n.add_argument("--out", help="file to write (default: score_norm.npz beside the model)")
    n.add_argument("--top-k", type=int, default=50, help="cohort scores per face the network learns")
    n.add_argument("--epochs", type=int, default=300)
    n.add_argument("--seed", type=int, default=0)
    n.add_argument("--impostor-pairs", type=int, default=200_000,
                   help="pairs of different cohort people the map to the cosine scale is anchored on")
    n.set_defaults(func=_make_normaliser)

    m = sub.add_parser(
        "import-pretrained",
        help="make a checkpoint of published weights: dlib's face ResNet (offline, from the "
        "face_recognition_models package) or facenet-pytorch's InceptionResnetV1",
    )
    m.add_argument(
        "source", help="dlib | vggface2 | casia-webface (download) | a local InceptionResnetV1 weights file"
    )
    m.add_argument("--out", help="checkpoint to write (dlib: default models/default.pt)")
    m.add_argument("--dat", help="dlib: the .dat file (default: the one of face_recognition_models)")
    m.add_argument("--flip-tta", action="store_true", help="embed crop + mirror at inference")
    m.add_argument("--json", action="store_true")
    m.set_defaults(func=_import_pretrained)


def _model_options(p: argparse.ArgumentParser, *, data: bool = False) -> None:
    """Options shared by the commands that run a trained model on a dataset."""
    p.add_argument("--model", default=str(default_model_path()))
    if data:
        p.add_argument("--data", required=True, help="image root (e.g. lfw-deepfunneled)")
    p.add_argument("--cache-dir", default="cache", help="aligned-crop cache folder")
    p.add_argument("--json", action="store_true")


def _print(obj: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(obj, indent=2))
    else:
        for k, v in obj.items():
            print(f"{k:>22}: {v:.4f}" if isinstance(v, float) else f"{k:>22}: {v}")


def _train(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from faceapp.nn.encoder import EncoderConfig
    from faceapp.training.trainer import TrainConfig, train

    enc = EncoderConfig(
        backbone=args.backbone,
        input_size=args.input_size if args.backbone == "resnet" else 160,
        embedding_dim=args.dim,
        width=args.width,
        layers=tuple(int(v) for v in args.layers.split(",")),  # type: ignore[arg-type]
        flip_tta=args.flip_tta,
    )
    cfg = TrainConfig(
        data=args.data,
        people=args.people,
        out=args.out,
        encoder=enc,
        miner=args.miner,
        warmup_miner=args.warmup_miner,
        warmup_epochs=args.warmup_epochs,
        margin=args.margin,
        soft_margin=args.soft_margin,
        metric=args.metric,
        epochs=args.epochs,
        max_minutes=args.max_minutes,
        max_steps=args.max_steps,
        p=args.p,
        k=args.k,
        lr=args.lr,
        aux_weight=args.aux_weight,
        val_identities=args.val_identities,
        seed=args.seed,
        threads=args.threads,
        cache_dir=args.cache_dir,
    )
    bar = None if args.no_progress else tqdm(unit="step", dynamic_ncols=True, file=sys.stderr)

    def progress(d: dict[str, Any]) -> None:
        if bar is None:
            return
        bar.set_description(f"epoch {d['epoch']} [{d['miner']}]")
        bar.set_postfix(
            loss=f"{d['loss']:.3f}", active=f"{d['active']:.2f}", img_s=f"{d['images_per_s']:.0f}"
        )
        bar.update(1)

    row = train(cfg, resume=args.resume, progress=progress)
    if bar is not None:
        bar.close()
    print(json.dumps({"out": args.out, **row}))
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from faceapp.training.finetune import FinetuneConfig, finetune

    cfg = FinetuneConfig(
        base=args.base, data=args.data, people=args.people, out=args.out, train_blocks=args.train_blocks,
        epochs=args.epochs, lr=args.lr, margin=args.margin, miner=args.miner, p=args.p, k=args.k,
        val_identities=args.val_identities, max_minutes=args.max_minutes, max_steps=args.max_steps,
        seed=args.seed, cache_dir=args.cache_dir,
    )

    def progress(row: dict[str, Any]) -> None:
        if not args.json:
            print(json.dumps(row), file=sys.stderr, flush=True)

    result = finetune(cfg, resume=args.resume, progress=progress)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        best = max(result["history"], key=lambda r: r["val_auc"])
        print(f"best epoch {best['epoch']} (0 = the base model): val AUC {best['val_auc']:.4f}, "
              f"accuracy {best['val_accuracy']:.4f}; wrote {result['out']}")
    return 0


def _train_head(args: argparse.Namespace) -> int:
    from faceapp.training.head_training import train_head_cli

    report = train_head_cli(
        Path(args.model),
        args.data,
        args.people,
        args.mode,
        n_pairs=args.pairs,
        seed=args.seed,
        cache_dir=args.cache_dir,
    )
    _print(report, args.json)
    return 0


def _normaliser_option(p: argparse.ArgumentParser, app_help: str) -> None:
    p.add_argument("--normaliser", choices=("app", "none"), default="app",
                   help=f"app (default): {app_help}; none: raw cosine similarity")


def _cohort_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--cohort",
        metavar="PEOPLE",
        help="people*.txt of other identities (e.g. peopleDevTrain.txt): normalise cosine scores by "
        "adaptive s-norm against their faces (faceapp.nn.score_norm)",
    )
    p.add_argument("--cohort-top-k", type=int, default=50, help="cohort scores per face for s-norm")


def _evaluate(args: argparse.Namespace) -> int:
    from faceapp.training.evaluation import evaluate_pairs_cli

    reports = evaluate_pairs_cli(
        Path(args.model),
        args.data,
        args.pairs,
        scorer=args.scorer,
        plots=args.plots,
        write_calibration=args.write_calibration and not args.no_calibration,
        cache_dir=args.cache_dir,
        cohort_people=args.cohort,
        cohort_top_k=args.cohort_top_k,
        normaliser=args.normaliser,
    )
    if args.json:
        print(json.dumps(reports[0] if len(reports) == 1 else reports, indent=2))
    else:
        for r in reports:
            _print(r, False)
            print()
    return 0


def _evaluate_identification(args: argparse.Namespace) -> int:
    from faceapp.cli.identification_scoring import AppScoring
    from faceapp.training.identification import evaluate_identification_cli

    report = evaluate_identification_cli(
        Path(args.model),
        args.data,
        args.people,
        distractor_fraction=args.distractor_fraction,
        seed=args.seed,
        cache_dir=args.cache_dir,
        cohort_people=args.cohort,
        cohort_top_k=args.cohort_top_k,
        gallery_images=args.gallery_images,
        aggregate=args.aggregate,
        snorm_scope=args.snorm_scope,
        scoring=AppScoring.for_model if args.normaliser == "app" else None,
    )
    _print(report, args.json)
    return 0


def _make_cohort(args: argparse.Namespace) -> int:
    from faceapp.training.evaluation import make_cohort_cli

    report = make_cohort_cli(
        Path(args.model), args.data, args.people, out=args.out, top_k=args.top_k, cache_dir=args.cache_dir
    )
    _print(report, args.json)
    return 0


def _make_normaliser(args: argparse.Namespace) -> int:
    from faceapp.training.open_set import NormaliserConfig, make_normaliser_cli

    config = NormaliserConfig(top_k=args.top_k, epochs=args.epochs, seed=args.seed)
    report = make_normaliser_cli(Path(args.model), args.data, args.people, out=args.out,
                                 cache_dir=args.cache_dir, config=config,
                                 impostor_pairs=args.impostor_pairs)
    _print(report, args.json)
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from faceapp.training.evaluation import calibrate_cli

    report = calibrate_cli(
        Path(args.model),
        args.data,
        args.people,
        scorer=args.scorer,
        impostor_pairs=args.impostor_pairs,
        genuine_per_person=args.genuine_per_person,
        seed=args.seed,
        cache_dir=args.cache_dir,
        normaliser=args.normaliser,
    )
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        src = report["source"]
        print(
            f"calibration written to {report['calibration']} ({src['impostor_pairs']} impostor, "
            f"{src['genuine_pairs']} genuine pairs)"
        )
        for name, entry in report["scorers"].items():
            points = ", ".join(f"{k} {v:.4f}" for k, v in entry.items() if isinstance(v, float))
            print(f"{name:>10}: {points}")
    return 0


def _import_pretrained(args: argparse.Namespace) -> int:
    from faceapp.errors import FaceappError
    from faceapp.nn.checkpoint import save_checkpoint
    from faceapp.nn.encoder import Encoder, EncoderConfig, load_pretrained_inception

    if args.source == "dlib":
        from faceapp.nn.pretrained import import_pretrained

        out = args.out or default_model_path()
        summary = import_pretrained("dlib", out, dat=args.dat, flip_tta=args.flip_tta)
        _print(summary, args.json)
        return 0
    if not args.out:
        raise FaceappError("--out is required for InceptionResnetV1 weights")
    enc = Encoder(
        EncoderConfig(backbone="inception_resnet_v1", input_size=160, embedding_dim=512, mean=0.5, std=0.5)
    )
    load_pretrained_inception(enc, args.source)
    model_id = save_checkpoint(args.out, enc.eval(), training={"pretrained": args.source})
    print(json.dumps({"out": args.out, "model_id": model_id}))
    return 0
