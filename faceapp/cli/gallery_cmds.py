"""Gallery commands: enroll, verify, recognize, people list|show|rename|delete|export|import|
events, reembed.

Every command takes ``--db URL`` (a SQLAlchemy URL or a file path; default ``FACEAPP_DB`` or
``db/faceapp.sqlite``) and ``--json``; those that compare faces also take ``--model CKPT``
(default ``FACEAPP_MODEL`` or ``models/default.pt``) and ``--device``.

Exit codes: 0 success; ``verify`` exits 1 when the face does not match; 2 for an error
(printed as one ``error: ...`` line by :func:`faceapp.cli.main`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from faceapp.errors import FaceappError, GalleryError
from faceapp.gallery.repository import normalize_name
from faceapp.services import FaceService
from faceapp.vision.images import IMAGE_SUFFIXES


def _open_service(args: argparse.Namespace, *, load_model: bool = True) -> FaceService:
    """Open the service for a command (``FaceService.open``; tests may patch it)."""
    if load_model:
        return FaceService.open(args.db, args.model, device=args.device)
    return FaceService.open(args.db, None, load_model=False)


def _common(*, model: bool) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--db", metavar="URL",
                        help="gallery database: SQLAlchemy URL or file path "
                             "(default: $FACEAPP_DB or db/faceapp.sqlite)")
    parent.add_argument("--json", action="store_true", help="print JSON")
    if model:
        parent.add_argument("--model", metavar="CKPT",
                            help="model checkpoint (default: $FACEAPP_MODEL or models/default.pt)")
        parent.add_argument("--device", default="cpu", help="torch device (default cpu)")
    return parent


def _decision_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scorer", default="distance",
                   help="distance (cosine similarity) or a head of the model, e.g. head_l1")
    p.add_argument("--threshold", type=float,
                   help="decision threshold τ on the scorer's similarity (default: the "
                        "gallery's stored τ, else the model's calibration.json)")


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    with_model = _common(model=True)
    db_only = _common(model=False)

    p = sub.add_parser("enroll", parents=[with_model],
                       help="add a person (or more faces of them) from images")
    p.add_argument("name")
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="image files, or folders whose images are all used")
    p.add_argument("--largest", action="store_true",
                   help="use the largest face of images that hold several")
    p.add_argument("--no-create", dest="create", action="store_false",
                   help="fail unless the person already exists")
    p.set_defaults(func=_enroll)

    p = sub.add_parser("verify", parents=[with_model],
                       help="1:1: is the (largest) face in IMAGE this person?")
    p.add_argument("name")
    p.add_argument("image")
    _decision_options(p)
    p.set_defaults(func=_verify)

    p = sub.add_parser("recognize", parents=[with_model],
                       help="1:K: who are the faces in IMAGE?")
    p.add_argument("image")
    p.add_argument("--top-k", type=int, default=5, help="candidates per face (default 5)")
    _decision_options(p)
    p.set_defaults(func=_recognize)

    people = sub.add_parser("people", help="list and manage enrolled people")
    psub = people.add_subparsers(dest="people_command", metavar="ACTION", required=True)
    q = psub.add_parser("list", parents=[db_only], help="everyone in the gallery")
    q.set_defaults(func=_people_list)
    q = psub.add_parser("show", parents=[db_only], help="a person's templates")
    q.add_argument("name")
    q.add_argument("--crops", metavar="DIR", help="also write the stored face crops as PNG here")
    q.set_defaults(func=_people_show)
    q = psub.add_parser("rename", parents=[db_only], help="rename a person")
    q.add_argument("old")
    q.add_argument("new")
    q.set_defaults(func=_people_rename)
    q = psub.add_parser("delete", parents=[db_only],
                        help="delete a person with all their templates and crops")
    q.add_argument("name")
    q.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    q.set_defaults(func=_people_delete)
    q = psub.add_parser("export", parents=[db_only],
                        help="write the gallery to a JSON file (mode 0600: biometric data)")
    q.add_argument("path")
    q.set_defaults(func=_people_export)
    q = psub.add_parser("import", parents=[db_only], help="add the people of an exported file")
    q.add_argument("path")
    q.add_argument("--on-conflict", choices=["error", "skip", "merge"], default="error",
                   help="for names already present (default: error, nothing imported)")
    q.set_defaults(func=_people_import)
    q = psub.add_parser("events", parents=[db_only], help="the latest logged operations")
    q.add_argument("--limit", type=int, default=20)
    q.add_argument("--kind", choices=["enroll", "verify", "recognize", "rename", "delete",
                                      "import", "export", "reembed", "calibrate"])
    q.set_defaults(func=_people_events)

    p = sub.add_parser("reembed", parents=[with_model],
                       help="recompute templates of other models from their stored crops")
    p.add_argument("--batch-size", type=int, default=32)
    p.set_defaults(func=_reembed)


# ---------------------------------------------------------------------- helpers
def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    if args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False, allow_nan=False))
    else:
        print(text)


def _expand_images(items: list[str]) -> list[str]:
    """Image paths; a folder stands for its image files in name order."""
    out: list[str] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            files = sorted(f for f in path.iterdir()
                           if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                raise GalleryError(f"{path}: folder holds no image files")
            out.extend(str(f) for f in files)
        else:
            out.append(item)
    return out


def _fmt(x: float) -> str:
    return f"{x:.4f}" if math.isfinite(x) else "n/a"


# ---------------------------------------------------------------------- commands
def _enroll(args: argparse.Namespace) -> int:
    images = _expand_images(args.images)
    with _open_service(args) as svc:
        report = svc.enroll(args.name, images, largest=args.largest, create=args.create)
    lines = [f"enrolled {report.person}: {report.templates_added} template(s) added"]
    lines += [f"  accepted  {s}" for s in report.accepted]
    lines += [f"  rejected  {s}: {r}" for s, r in report.rejected]
    _emit(args, report.to_dict(), "\n".join(lines))
    return 0


def _verify(args: argparse.Namespace) -> int:
    with _open_service(args) as svc:
        res = svc.verify(args.name, args.image, scorer=args.scorer, threshold=args.threshold)
    verdict = "MATCH" if res.match else "NO MATCH"
    _emit(args, res.to_dict(),
          f"{verdict}: {args.image} vs {res.person} — score {_fmt(res.score)} "
          f"{'>=' if res.match else '<'} threshold {_fmt(res.threshold)} ({res.scorer})")
    return 0 if res.match else 1


def _recognize(args: argparse.Namespace) -> int:
    with _open_service(args) as svc:
        faces = svc.recognize(args.image, top_k=args.top_k, scorer=args.scorer,
                              threshold=args.threshold)
    lines = [f"{args.image}: {len(faces)} face(s)"]
    for i, f in enumerate(faces, 1):
        box = ", ".join(f"{v:.0f}" for v in f.box)
        who = f.person if f.person is not None else "Unknown"
        flag = "  (ambiguous)" if f.ambiguous else ""
        lines.append(f"  face {i} [{box}]: {who}  score {_fmt(f.score)} "
                     f"threshold {_fmt(f.threshold)}{flag}")
        for name, score in f.candidates:
            lines.append(f"      {name:<30} {_fmt(score)}")
    _emit(args, [f.to_dict() for f in faces], "\n".join(lines))
    return 0


def _people_list(args: argparse.Namespace) -> int:
    with _open_service(args, load_model=False) as svc:
        people = svc.list_people()
    lines = [f"{p.name:<40} {p.n_templates:>4} template(s)  since {p.created:%Y-%m-%d}"
             for p in people] or ["(the gallery is empty)"]
    _emit(args, [p.to_dict() for p in people], "\n".join(lines))
    return 0


def _people_show(args: argparse.Namespace) -> int:
    with _open_service(args, load_model=False) as svc:
        templates = svc.person_templates(args.name)
    name = normalize_name(args.name)
    if args.crops:
        folder = Path(args.crops)
        folder.mkdir(parents=True, exist_ok=True)
        for t in templates:
            if t.crop_png:
                (folder / f"template_{t.id}.png").write_bytes(t.crop_png)
    lines = [f"{name}: {len(templates)} template(s)"]
    for t in templates:
        ok = t.quality.get("ok", "?")
        lines.append(f"  #{t.id:<6} model {t.model_id}  quality ok={ok}  {t.source}")
    _emit(args, {"person": name, "templates": [t.to_dict() for t in templates]},
          "\n".join(lines))
    return 0


def _people_rename(args: argparse.Namespace) -> int:
    with _open_service(args, load_model=False) as svc:
        new = svc.rename_person(args.old, args.new)
    _emit(args, {"old": args.old, "new": new}, f"renamed {args.old} -> {new}")
    return 0


def _people_delete(args: argparse.Namespace) -> int:
    if not args.yes:
        if not sys.stdin.isatty():
            raise FaceappError("refusing to delete without confirmation: add --yes")
        answer = input(f"delete {args.name} and all their templates? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("cancelled")
            return 1
    with _open_service(args, load_model=False) as svc:
        n = svc.delete_person(args.name)
    _emit(args, {"person": args.name, "templates_deleted": n},
          f"deleted {args.name} ({n} template(s))")
    return 0


def _people_export(args: argparse.Namespace) -> int:
    with _open_service(args, load_model=False) as svc:
        t = svc.export_gallery(args.path)
    _emit(args, t.to_dict() | {"path": args.path},
          f"exported {t.people} people, {t.templates} template(s) to {args.path}")
    return 0


def _people_import(args: argparse.Namespace) -> int:
    with _open_service(args, load_model=False) as svc:
        t = svc.import_gallery(args.path, on_conflict=args.on_conflict)
    text = f"imported {t.people} new people, {t.templates} template(s) from {args.path}"
    if t.skipped:
        text += f"; skipped {', '.join(t.skipped)}"
    _emit(args, t.to_dict() | {"path": args.path}, text)
    return 0


def _people_events(args: argparse.Namespace) -> int:
    with _open_service(args, load_model=False) as svc:
        events = svc.events(args.limit, args.kind)
    lines = []
    for e in events:
        score = "" if e["score"] is None else f" score {e['score']:.4f}"
        tau = "" if e["threshold"] is None else f" τ {e['threshold']:.4f}"
        lines.append(f"{e['time']}  {e['kind']:<9} {e['outcome']:<14} "
                     f"{e['person'] or '-'}{score}{tau}")
    _emit(args, events, "\n".join(lines) or "(no events)")
    return 0


def _reembed(args: argparse.Namespace) -> int:
    def progress(done: int, total: int) -> None:
        if not args.json and total:
            print(f"\rre-embedding {done}/{total}", end="", file=sys.stderr, flush=True)

    with _open_service(args) as svc:
        report = svc.reembed(progress=progress, batch_size=args.batch_size)
    if not args.json:
        print(file=sys.stderr)
    text = f"recomputed {report.recomputed} template(s) for model {report.model_id}"
    if report.from_old_crops:
        text += (f"; {report.from_old_crops} of them re-derived from the small aligned crops of an older "
                 "version (upsampled, possibly black at the edges: re-enrol those people for full accuracy)")
    _emit(args, report.to_dict(), text)
    return 0
