"""Image commands: ``detect`` (faces, boxes, landmarks, aligned crops) and ``embed`` (one embedding
per face).

Both take several images and keep going past bad ones: an unreadable file gives one
``error: FILE: reason`` line on stderr (an ``{"file", "error"}`` entry with ``--json``) and the
other files are still processed. The exit code is 1 only when no file could be read at all;
a model that cannot be loaded stops ``embed`` at once (exit code 2, one ``error:`` line).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from faceapp.config import ENV_MODEL, DetectorConfig, resolve_paths
from faceapp.errors import FaceappError, InvalidImage, ModelError
from faceapp.vision.images import IMAGE_SUFFIXES, load_image

_DEFAULT_DETECTOR = DetectorConfig()


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    d = sub.add_parser(
        "detect",
        help="find faces (box, score, 5 landmarks) in images",
        description="Find the faces of each image: box (x1, y1, x2, y2), detector score and the 5 "
        "landmarks (eyes, nose, mouth corners), sorted by score. Bad files are reported and skipped; "
        "the exit code is 1 only when no file could be read.",
    )
    d.add_argument("images", nargs="+", metavar="IMAGE", help="image files (any format Pillow reads)")
    d.add_argument("--json", action="store_true", help="print a JSON list, one entry per file")
    d.add_argument(
        "--save-crops",
        metavar="DIR",
        help="write each face's aligned crop as DIR/<stem>_<i>.png (i = rank by score)",
    )
    d.add_argument("--crop-size", type=int, default=112, help="side of the aligned crops in pixels")
    _add_detector_args(d)
    d.set_defaults(func=_detect)

    e = sub.add_parser(
        "embed",
        help="one embedding per face of each image",
        description="Detect, align and embed every face of each image with an encoder checkpoint. "
        "Bad files are reported and skipped; the exit code is 1 only when no file could be read.",
    )
    e.add_argument("images", nargs="+", metavar="IMAGE")
    e.add_argument(
        "--model",
        metavar="CKPT",
        help=f"encoder checkpoint (default: ${ENV_MODEL}, else models/default.pt)",
    )
    e.add_argument("--json", action="store_true", help="print a JSON list, one entry per face")
    _add_detector_args(e)
    e.set_defaults(func=_embed)


def _add_detector_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--min-face-size",
        type=int,
        default=_DEFAULT_DETECTOR.min_face_size,
        metavar="N",
        help=f"smallest face searched, in pixels (default {_DEFAULT_DETECTOR.min_face_size})",
    )
    p.add_argument("--device", default="cpu", help="torch device for the networks (default cpu)")


def _detector_config(args: argparse.Namespace) -> DetectorConfig:
    if args.min_face_size < 1:
        raise FaceappError(f"--min-face-size must be >= 1, got {args.min_face_size}")
    return DetectorConfig(min_face_size=args.min_face_size, device=args.device)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _iter_images(files: list[str]) -> Iterator[tuple[str, Any]]:
    """Yield (file, (H, W, 3) uint8 image) or (file, InvalidImage) in argument order."""
    for f in files:
        try:
            yield f, load_image(f)
        except InvalidImage as err:
            yield f, err


def _report_error(err: InvalidImage, as_json: bool, out: list[dict[str, Any]]) -> None:
    if as_json:
        out.append({"file": err.source, "error": _one_line(err.reason)})
    else:
        print(f"error: {_one_line(str(err))}", file=sys.stderr)


def _crop_stem(path: Path, used: dict[str, int]) -> str:
    """A file stem for the crops of ``path``, unique within one run.

    Files without a real image ending (Yale's ``subject01.happy``) keep their whole name so
    that ``subject01.happy`` and ``subject01.sad`` do not collide; a repeated stem gets ``-2``,
    ``-3``...
    """
    stem = path.stem if path.suffix.lower() in IMAGE_SUFFIXES else path.name
    n = used.get(stem, 0) + 1
    used[stem] = n
    return stem if n == 1 else f"{stem}-{n}"


def _detect(args: argparse.Namespace) -> int:
    from faceapp.vision.alignment import AlignmentTemplate, align_face
    from faceapp.vision.detection import FaceDetector
    from faceapp.vision.images import encode_png

    config = _detector_config(args)
    template = AlignmentTemplate.for_size(args.crop_size) if args.save_crops else None
    crop_dir = Path(args.save_crops) if args.save_crops else None
    if crop_dir is not None:
        try:
            crop_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise FaceappError(f"{crop_dir}: cannot create the crop folder ({err.strerror or err})") from None
    detector: FaceDetector | None = None  # built on the first readable image
    used_stems: dict[str, int] = {}
    results: list[dict[str, Any]] = []
    n_read = 0
    for file, image in _iter_images(args.images):
        if isinstance(image, InvalidImage):
            _report_error(image, args.json, results)
            continue
        n_read += 1
        if detector is None:
            detector = FaceDetector(config)
        detections = detector.detect(image)
        faces = [d.to_dict() for d in detections]
        if crop_dir is not None and template is not None and detections:
            stem = _crop_stem(Path(file), used_stems)
            for i, (det, face) in enumerate(zip(detections, faces, strict=True)):
                target = crop_dir / f"{stem}_{i}.png"
                try:
                    target.write_bytes(encode_png(align_face(image, det, template).crop))
                except OSError as err:
                    raise FaceappError(f"{target}: cannot write the crop ({err.strerror or err})") from None
                face["crop"] = str(target)
        h, w = image.shape[:2]
        if args.json:
            results.append({"file": file, "width": w, "height": h, "faces": faces})
        else:
            noun = "face" if len(faces) == 1 else "faces"
            print(f"{file}: {len(faces)} {noun} ({w}x{h})")
            for i, face in enumerate(faces):
                marks = " ".join(f"({x:.1f},{y:.1f})" for x, y in face["landmarks"])  # type: ignore[attr-defined]
                box = ", ".join(f"{v:.1f}" for v in face["box"])  # type: ignore[attr-defined]
                line = f"  face {i}: score {face['score']:.4f}  box [{box}]  landmarks {marks}"
                if "crop" in face:
                    line += f"  crop {face['crop']}"
                print(line)
    if args.json:
        print(json.dumps(results, indent=2))
    return 0 if n_read else 1


def _embed(args: argparse.Namespace) -> int:
    from faceapp.nn.pipeline import FacePipeline

    config = _detector_config(args)
    model_path = resolve_paths(model=args.model).model_path
    if not model_path.is_file():
        raise ModelError(
            f"{model_path}: model file not found (train one with `faceapp train`, "
            f"or pass --model CKPT / set ${ENV_MODEL})"
        )
    pipeline = FacePipeline.from_paths(model_path, device=args.device, detector_config=config)
    results: list[dict[str, Any]] = []
    n_read = 0
    for file, image in _iter_images(args.images):
        if isinstance(image, InvalidImage):
            _report_error(image, args.json, results)
            continue
        n_read += 1
        faces = pipeline.analyze(image)
        if not faces:
            print(f"warning: {file}: no face found", file=sys.stderr)
        for i, face in enumerate(faces):
            det = face.detection.to_dict()
            record = {
                "file": file,
                "face": i,
                "box": det["box"],
                "score": det["score"],
                "embedding": [float(v) for v in face.embedding],
                "model_id": face.model_id,
            }
            if args.json:
                results.append(record)
            else:
                box = ", ".join(f"{v:.1f}" for v in det["box"])  # type: ignore[attr-defined]
                values = " ".join(f"{v:.5f}" for v in face.embedding)
                print(
                    f"{file}  face {i}  box [{box}]  score {face.detection.score:.4f}  "
                    f"model {face.model_id}  D={face.embedding.shape[0]}: {values}"
                )
    if args.json:
        print(json.dumps(results, indent=2))
    return 0 if n_read else 1
