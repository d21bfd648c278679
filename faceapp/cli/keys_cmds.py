"""``faceapp keys status|rotate|migrate``: the encryption keys of a SQLite gallery.

* ``status``: is the gallery encrypted, and where its key-encryption key comes from (OS
  keyring or passphrase, KDF parameters); never prints a secret.
* ``rotate``: re-wraps the data key with a new passphrase (``$FACEAPP_NEW_PASSPHRASE`` or a
  prompt) or a new keyring secret (``--to keyring|passphrase`` switches). The current
  passphrase is checked first: a wrong one changes nothing.
* ``migrate``: encrypts a plaintext gallery in place, atomically (close the app first).
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
    from sqlalchemy.engine import Engine

    from faceapp.gallery.keys import KeyConfig


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
                        help="encrypt a plaintext gallery in place (atomically; close the app first)")
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


def _status(args: argparse.Namespace) -> int:
    from faceapp.gallery.database import classify_gallery_file
    from faceapp.gallery.keys import key_status

    path = _db_file(args)
    state = classify_gallery_file(path, create=False)
    if state != "encrypted":
        _print(args, {"path": str(path), "encrypted": False},
               f"{path}: NOT encrypted (run `faceapp keys migrate --db {path}`)")
        return 0
    st = key_status(path)
    kdf = ", ".join(f"{k}={v}" for k, v in st.kdf.items())
    _print(args, {"path": str(path), "encrypted": True} | st.to_dict(),
           f"{path}: encrypted (SQLCipher 4, AES-256); key wrapped by the {st.source}"
           + (f" ({kdf})" if kdf else "") + f"; key file {st.key_file}"
           + (f"; last rotated {st.rotated}" if st.rotated else ""))
    return 0


def _remembering_config() -> KeyConfig:
    """Asks on the terminal for the current passphrase once (then reuses it), for a new
    one each time."""
    from faceapp.gallery.keys import KeyConfig, terminal_prompt

    remembered: dict[str, str] = {}

    def prompt(message: str, confirm: bool) -> str:
        if confirm:
            return terminal_prompt(message, True)
        if "current" not in remembered:
            remembered["current"] = terminal_prompt(message, False)
        return remembered["current"]

    return KeyConfig(prompt=prompt if sys.stdin is not None and sys.stdin.isatty() else None)


def _audit(engine: Engine, action: str, outcome: str, detail: dict[str, object]) -> None:
    from faceapp.gallery import audit
    from faceapp.gallery.database import write_session

    with write_session(engine) as s:
        audit.append(s, action, outcome, detail=json.dumps(detail, sort_keys=True))


def _rotate(args: argparse.Namespace) -> int:
    from faceapp.gallery.database import DatabaseConfig, open_database
    from faceapp.gallery.keys import rotate_key

    path = _db_file(args)
    config = _remembering_config()
    engine = open_database(str(path), DatabaseConfig(create=False, keys=config))
    try:
        st = rotate_key(path, config, to=args.to)
        _audit(engine, "keys", "rotated", {"source": st.source, "kdf": st.kdf})
    finally:
        engine.dispose()
    _print(args, {"path": str(path)} | st.to_dict(),
           f"{path}: key re-wrapped by the {st.source} ({st.rotated})")
    return 0


def _migrate(args: argparse.Namespace) -> int:
    from faceapp.gallery.migrate import encrypt_in_place

    report = encrypt_in_place(_db_file(args))
    total = sum(report.rows.values())
    _print(args, report.to_dict(),
           f"{report.path}: encrypted ({total} rows in {len(report.rows)} tables; key wrapped "
           f"by the {report.key_source}; {report.snapshots_removed} snapshot(s) removed)")
    return 0
