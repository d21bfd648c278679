"""``faceapp keys status|rotate|migrate``: the encryption keys of a gallery.

* ``status``: is the gallery encrypted, and where its key-encryption key comes from (OS
  keyring or passphrase, KDF parameters); never prints a secret. For a server gallery
  (``--db URL``): its field encryption, and the client-side key file to copy to another
  desktop.
* ``rotate``: re-wraps the data key with a new passphrase (``$FACEAPP_NEW_PASSPHRASE`` or a
  prompt) or a new keyring secret (``--to keyring|passphrase`` switches). The current
  passphrase is checked first: a wrong one changes nothing. For a server gallery: the key
  file on this desktop.
* ``migrate``: encrypts a plaintext gallery in place, atomically (close the app first), then
  gives its templates field-level encryption with per-person keys (one transaction); on a
  PostgreSQL gallery (``--db postgresql+psycopg://...``) only the latter.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from faceapp.config import resolve_paths
from faceapp.errors import GalleryError

if TYPE_CHECKING:
    from faceapp.gallery.keys import PromptFn


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    keys = sub.add_parser("keys", help="encryption keys of the gallery: status, rotate, migrate")
    ksub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", metavar="FILE",
                        help="gallery database file (default: $FACEAPP_DB or db/faceapp.sqlite)")
    common.add_argument("--json", action="store_true", help="print JSON")
    q = ksub.add_parser("status", parents=[common], help="is the gallery encrypted, and how")
    q.set_defaults(func=_status)
    q = ksub.add_parser("rotate", parents=[common],
                        help="re-wrap the gallery key with a new passphrase or keyring secret")
    q.add_argument("--to", choices=["keyring", "passphrase"],
                   help="switch where the key-encryption key comes from (default: the same)")
    q.set_defaults(func=_rotate)
    q = ksub.add_parser("migrate", parents=[common],
                        help="encrypt a plaintext gallery in place (atomically; close the app first) "
                        "and its templates with per-person keys; --db URL for a server gallery")
    q.set_defaults(func=_migrate)


def _db_file(args: argparse.Namespace) -> Path:
    from faceapp.gallery.database import sqlite_path

    url = resolve_paths(db=args.db).db_url
    path = sqlite_path(url)
    if path is None:
        raise GalleryError(f"{url}: key management applies to SQLite gallery files only")
    if not path.is_file():
        raise GalleryError(f"{path}: no gallery database at this path")
    return path


def _print(args: argparse.Namespace, data: dict[str, object], text: str) -> None:
    print(json.dumps(data, indent=2) if args.json else text)


def _server_status(args: argparse.Namespace, url: str) -> int:
    """A server gallery: its field encryption, and the client-side key file to copy to
    another desktop."""
    from sqlalchemy import text

    from faceapp.gallery.database import DatabaseConfig, open_database
    from faceapp.gallery.fieldcrypt import cipher_of
    from faceapp.gallery.keys import key_status

    engine = open_database(url, DatabaseConfig(create=False, field_encryption=False))
    try:
        cipher = cipher_of(engine)
        if cipher is None:
            _print(args, {"field_encryption": False},
                   "templates and crops are NOT field-encrypted on the server; run `faceapp keys "
                   "migrate --db URL` to encrypt them with per-person keys")
            return 0
        with engine.connect() as conn:
            epoch = int(conn.execute(text("SELECT epoch FROM gallery_key")).scalar() or 0)
        base = cipher.store.path.with_name(cipher.store.path.name.removesuffix(".keys"))
        status = key_status(base)
    finally:
        engine.dispose()
    _print(args, {"field_encryption": True, "epoch": epoch} | status.to_dict(),
           f"templates and crops field-encrypted with per-person keys (ratchet epoch {epoch}); "
           f"key file on this desktop: {status.key_file} (key-encryption key from the "
           f"{status.source}); copy it to every desktop that uses this gallery")
    return 0


def _status(args: argparse.Namespace) -> int:
    from faceapp.gallery.database import is_sqlite
    from faceapp.services.governance import key_report

    url = resolve_paths(db=args.db).db_url
    if not is_sqlite(url):
        return _server_status(args, url)
    report = key_report(_db_file(args))
    _print(args, report.to_dict(), report.text())
    return 0


def _remembering_prompt() -> PromptFn | None:
    """Asks on the terminal for the current passphrase once (then reuses it), for a new
    one each time; ``None`` without a terminal."""
    from faceapp.gallery.keys import terminal_prompt

    remembered: dict[str, str] = {}

    def prompt(message: str, confirm: bool) -> str:
        if confirm:
            return terminal_prompt(message, True)
        if "current" not in remembered:
            remembered["current"] = terminal_prompt(message, False)
        return remembered["current"]

    return prompt if sys.stdin is not None and sys.stdin.isatty() else None


def _rotate_server(args: argparse.Namespace, url: str) -> int:
    """A server gallery: re-wrap the data key of this desktop's key file (the server holds
    no key; another desktop's copy keeps its own wrap until it is rotated there too)."""
    from faceapp.gallery import audit
    from faceapp.gallery.database import DatabaseConfig, open_database, write_session
    from faceapp.gallery.fieldcrypt import cipher_of
    from faceapp.gallery.keys import KeyConfig, rotate_key

    prompt = _remembering_prompt()
    engine = open_database(url, DatabaseConfig(create=False, field_encryption=False,
                                               keys=KeyConfig(prompt=prompt)))
    try:
        cipher = cipher_of(engine)
        if cipher is None:
            raise GalleryError("the gallery's fields are not encrypted (run `faceapp keys migrate "
                               "--db URL`); nothing was changed")
        base = cipher.store.path.with_name(cipher.store.path.name.removesuffix(".keys"))
        st = rotate_key(base, KeyConfig(prompt=prompt), to=args.to)
        with write_session(engine) as s:
            audit.append(s, "keys", "rotated", detail=json.dumps(
                {"source": st.source, "kdf": st.kdf, "key_file": st.key_file}, sort_keys=True))
    finally:
        engine.dispose()
    _print(args, st.to_dict(), f"{st.key_file}: key re-wrapped by the {st.source} ({st.rotated})")
    return 0


def _rotate(args: argparse.Namespace) -> int:
    from faceapp.gallery.database import DatabaseConfig, is_sqlite, open_database
    from faceapp.gallery.keys import KeyConfig
    from faceapp.services.governance import Governance

    url = resolve_paths(db=args.db).db_url
    if not is_sqlite(url):
        return _rotate_server(args, url)
    path = _db_file(args)
    prompt = _remembering_prompt()
    engine = open_database(str(path), DatabaseConfig(create=False, keys=KeyConfig(prompt=prompt)))
    try:
        report = Governance(engine).rotate_keys(to=args.to, prompt=prompt)
    finally:
        engine.dispose()
    _print(args, {"path": str(path)} | report.to_dict(),
           f"{path}: key re-wrapped by the {report.source} ({report.rotated})")
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from faceapp.gallery.database import classify_gallery_file, is_sqlite
    from faceapp.gallery.migrate import encrypt_fields, encrypt_in_place

    url = resolve_paths(db=args.db).db_url
    data: dict[str, object] = {}
    lines: list[str] = []
    if is_sqlite(url):
        path = _db_file(args)
        url = f"sqlite:///{path}"
        if classify_gallery_file(path, create=False) != "encrypted":
            report = encrypt_in_place(path)
            total = sum(report.rows.values())
            data |= report.to_dict()
            lines.append(f"{report.path}: encrypted ({total} rows in {len(report.rows)} tables; key "
                         f"wrapped by the {report.key_source}; {report.snapshots_removed} "
                         "snapshot(s) removed)")
    fields = _encrypt_fields_once(url, encrypt_fields)
    if fields is not None:
        data["fields"] = fields.to_dict()
        lines.append(f"{fields.where}: {fields.templates} template(s) and {fields.crops} crop(s) of "
                     f"{fields.people} people encrypted with per-person keys"
                     + ("; the server's plaintext search vectors were dropped"
                        if fields.vectors_dropped else ""))
    elif not lines:
        lines.append("the gallery is already encrypted; nothing to do")
    _print(args, data, "\n".join(lines))
    return 0


def _encrypt_fields_once(url: str, encrypt_fields):  # type: ignore[no-untyped-def]
    """The field migration, or ``None`` when the gallery already has it."""
    try:
        return encrypt_fields(url)
    except GalleryError as err:
        if "already field-encrypted" in str(err):
            return None
        raise
