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

from faceapp.cli.liveness_cmds import add_verify_liveness_options, verify_live
from faceapp.errors import FaceappError, GalleryError
from faceapp.gallery.audit import EVENT_KINDS
from faceapp.gallery.repository import normalize_name
from faceapp.gallery.validation import private_file, private_folder
from faceapp.services import Consent, FaceService
from faceapp.vision.images import IMAGE_SUFFIXES


def _open_service(args: argparse.Namespace, *, load_model: bool = True) -> FaceService:
    """Open the service for a command (``FaceService.open``; tests may patch it)."""
    search = getattr(args, "search", None)
    if load_model:
        return FaceService.open(args.db, args.model, device=args.device, search=search)
    return FaceService.open(args.db, None, load_model=False, search=search)


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
        parent.add_argument("--search", choices=["auto", "client", "server"],
                            help="where 1:K search runs: in memory (client), inside a "
                                 "PostgreSQL server with pgvector (server), or auto "
                                 "(default: $FACEAPP_SEARCH or auto)")
    return parent


def _decision_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scorer", default="distance",
                   help="distance (cosine similarity; through the model's score normaliser when it has one) "
                   "or a head of the model, e.g. head_l1")
    p.add_argument("--threshold", type=float,
                   help="decision threshold τ on the scorer's similarity (default: the "
                        "gallery's stored τ, else the model's calibration.json: FAR 1e-2 "
                        "for verify; for recognize the point that holds about 1%% of "
                        "strangers for the gallery's size, e.g. FAR 1e-3 up to 10 people)")


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
    p.add_argument("--consent-purpose", metavar="TEXT",
                   help="record the person's consent: what the gallery is for (required with "
                        "--consent-basis for a new person in an organisation's gallery)")
    p.add_argument("--consent-basis", metavar="TEXT",
                   help="how consent was obtained (free text, e.g. 'signed form 2024-031')")
    p.add_argument("--consent-given-by", metavar="NAME", default="",
                   help="who gave consent (default: the person)")
    p.set_defaults(func=_enroll)

    p = sub.add_parser("verify", parents=[with_model],
                       help="1:1: is the face in IMAGE this person?")
    p.add_argument("name")
    p.add_argument("image", nargs="?", help="the photo (or use --camera SOURCE --liveness)")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--largest", action="store_true",
                       help="an image with several faces: compare its largest face")
    which.add_argument("--face", type=_positive_int, metavar="N",
                       help="an image with several faces: compare face N (1-based, as "
                            "`faceapp recognize` numbers them)")
    _decision_options(p)
    add_verify_liveness_options(p)
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
    q.add_argument("--receipt", metavar="FILE",
                   help="write a deletion receipt (JSON, 0600): what was removed, when, "
                        "counts, a hash of the removed record ids")
    q.set_defaults(func=_people_delete)
    q = psub.add_parser("export", parents=[db_only],
                        help="write the gallery to an encrypted bundle (passphrase: "
                             "$FACEAPP_EXPORT_PASSPHRASE or a prompt; mode 0600)")
    q.add_argument("path")
    q.set_defaults(func=_people_export)
    q = psub.add_parser("import", parents=[db_only],
                        help="add the people of an export bundle (its integrity is checked "
                             "first; passphrase: $FACEAPP_EXPORT_PASSPHRASE or a prompt)")
    q.add_argument("path")
    q.add_argument("--on-conflict", choices=["error", "skip", "merge"], default="error",
                   help="for names already present (default: error, nothing imported)")
    q.add_argument("--allow-plaintext", action="store_true",
                   help="also accept an unencrypted JSON export of an older faceapp")
    q.set_defaults(func=_people_import)
    q = psub.add_parser("expire", parents=[db_only],
                        help="delete everyone whose retention period is over (faceapp policy)")
    q.add_argument("--dry-run", action="store_true", help="only list who would be deleted")
    q.set_defaults(func=_people_expire)
    q = psub.add_parser("events", parents=[db_only], help="the latest logged operations")
    q.add_argument("--limit", type=int, default=20)
    q.add_argument("--kind", choices=EVENT_KINDS, metavar="KIND",
                   help=f"only this kind: {', '.join(EVENT_KINDS)}")
    q.set_defaults(func=_people_events)

    p = sub.add_parser("policy", parents=[db_only],
                       help="the gallery's privacy policy: use (personal/organisation: consent "
                            "required), purpose and retention; shown, or changed by the options")
    p.add_argument("--use", choices=["personal", "organisation"],
                   help="organisation: enrolling a new person needs recorded consent")
    p.add_argument("--retention-days", type=int, metavar="N",
                   help="delete people N days after enrolment / last match (0: keep)")
    p.add_argument("--retention-from", choices=["enrolment", "last_match"],
                   help="what the retention period counts from")
    p.add_argument("--purpose", metavar="TEXT",
                   help='what the gallery is for, e.g. "door access of the lab" ("" clears it)')
    p.set_defaults(func=_policy)

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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def _fmt(x: float) -> str:
    return f"{x:.4f}" if math.isfinite(x) else "n/a"


# ---------------------------------------------------------------------- commands
def _consent(args: argparse.Namespace) -> Consent | None:
    if args.consent_purpose is None and args.consent_basis is None:
        return None
    return Consent(args.consent_purpose or "", args.consent_basis or "", args.consent_given_by)


def _enroll(args: argparse.Namespace) -> int:
    images = _expand_images(args.images)
    consent = _consent(args)
    with _open_service(args) as svc:
        report = svc.enroll(args.name, images, largest=args.largest, create=args.create,
                            consent=consent)
    lines = [f"enrolled {report.person}: {report.templates_added} template(s) added"]
    lines += [f"  accepted  {s}" for s in report.accepted]
    lines += [f"  rejected  {s}: {r}" for s, r in report.rejected]
    _emit(args, report.to_dict(), "\n".join(lines))
    return 0


def _verify(args: argparse.Namespace) -> int:
    if args.camera is not None or args.liveness:
        return verify_live(args, _open_service)
    if args.image is None:
        raise FaceappError("verify needs an IMAGE (or --camera SOURCE --liveness)")
    with _open_service(args) as svc:
        res = svc.verify(args.name, args.image, scorer=args.scorer, threshold=args.threshold,
                         face=args.face, largest=args.largest)
    verdict = "MATCH" if res.match else "NO MATCH"
    which = f" (face {res.face} of {res.faces_found})" if res.faces_found > 1 else ""
    _emit(args, res.to_dict(),
          f"{verdict}: {args.image}{which} vs {res.person} — score {_fmt(res.score)} "
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
             + (f"  expires {p.expires:%Y-%m-%d}" if p.expires is not None else "")
             for p in people] or ["(the gallery is empty)"]
    _emit(args, [p.to_dict() for p in people], "\n".join(lines))
    return 0


def _people_show(args: argparse.Namespace) -> int:
    with _open_service(args, load_model=False) as svc:
        templates = svc.person_templates(args.name)
    name = normalize_name(args.name)
    if args.crops:  # face crops are biometric data: 0600 files, a new folder 0700
        folder = Path(args.crops)
        private_folder(folder)
        for t in templates:
            if t.crop_png:
                private_file(folder / f"template_{t.id}.png", t.crop_png)
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
        receipt = svc.erase_person(args.name, args.receipt)
    n = receipt.templates
    text = f"deleted {receipt.person} ({n} template(s), {receipt.crops} crop(s))"
    if args.receipt:
        text += f"; receipt written to {args.receipt}"
    _emit(args, {"person": args.name, "templates_deleted": n, "receipt": receipt.to_dict()},
          text)
    return 0


def _bundle_passphrase(path: str, *, new: bool) -> str:
    from faceapp.gallery.keys import ENV_EXPORT_PASSPHRASE, KeyConfig, ask_passphrase

    what = "new passphrase for the export bundle" if new else "passphrase of the export bundle"
    return ask_passphrase(KeyConfig(), f"{what} {path}", confirm=new, env=ENV_EXPORT_PASSPHRASE)


def _people_export(args: argparse.Namespace) -> int:
    passphrase = _bundle_passphrase(args.path, new=True)
    with _open_service(args, load_model=False) as svc:
        t = svc.export_gallery(args.path, passphrase=passphrase)
    _emit(args, t.to_dict() | {"path": args.path},
          f"exported {t.people} people, {t.templates} template(s) to {args.path}")
    return 0


def _people_import(args: argparse.Namespace) -> int:
    passphrase = _bundle_passphrase(args.path, new=False)
    with _open_service(args, load_model=False) as svc:
        t = svc.import_gallery(args.path, passphrase=passphrase, on_conflict=args.on_conflict,
                               allow_plaintext=args.allow_plaintext)
    text = f"imported {t.people} new people, {t.templates} template(s) from {args.path}"
    if t.skipped:
        text += f"; skipped {', '.join(t.skipped)}"
    _emit(args, t.to_dict() | {"path": args.path}, text)
    return 0


def _people_expire(args: argparse.Namespace) -> int:
    with _open_service(args, load_model=False) as svc:
        gone = svc.expire_people(dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleted"
    lines = [f"{verb} {g.name} (expired {g.expired:%Y-%m-%d %H:%M} UTC)" for g in gone]
    _emit(args, [g.to_dict() for g in gone], "\n".join(lines) or "nobody has expired")
    return 0


def _policy(args: argparse.Namespace) -> int:
    from faceapp.services.governance import Governance, describe_policy

    with _open_service(args, load_model=False) as svc:
        policy = Governance.of(svc).update_policy(
            use=args.use, retention_days=args.retention_days, retention_from=args.retention_from,
            purpose=args.purpose)
    _emit(args, policy.to_dict(), describe_policy(policy))
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
