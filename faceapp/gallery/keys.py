"""Key management of an encrypted gallery.

Each SQLite gallery has its own random 256-bit **data key** (the SQLCipher page key of the
database; snapshot keys are derived from it). The data key is never stored in clear: the
*key file* ``<database>.keys`` (JSON, mode 0600, written atomically) holds it wrapped with
AES-256-GCM by a **key-encryption key** (KEK) that comes from

* the OS keyring (``keyring``: macOS Keychain, Windows Credential Locker, Secret Service /
  KWallet) where a real backend exists: a random KEK is kept there, nothing to type; or
* a passphrase through a memory-hard KDF (Argon2id by default, see
  :class:`~faceapp.gallery.crypto.KdfParams`): ``$FACEAPP_PASSPHRASE``, a prompt function
  given by the caller (GUI dialog) or a terminal prompt. The passphrase is never stored.

Losing the key file, or the keyring entry / passphrase, makes the gallery unreadable (that
is the point); :func:`rotate_key` re-wraps the data key (new passphrase, new keyring secret,
or a switch between the two) without touching the database. A wrong passphrase raises
:class:`~faceapp.errors.WrongPassphrase` and changes nothing.

Environment (read when called, never at import): ``FACEAPP_PASSPHRASE``;
``FACEAPP_NEW_PASSPHRASE`` (the new one for a rotation); ``FACEAPP_KEYRING`` = ``auto``
(default), ``on`` or ``off``; ``FACEAPP_KDF`` (KDF parameters of new wraps).
"""

from __future__ import annotations

import base64
import contextlib
import getpass
import json
import logging
import os
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from faceapp.errors import GalleryError, KeyUnavailable, WrongPassphrase
from faceapp.gallery.crypto import (
    KEY_BYTES,
    SALT_BYTES,
    IntegrityError,
    KdfParams,
    derive_key,
    random_key,
)

logger = logging.getLogger(__name__)

KEY_FILE_FORMAT = "faceapp-gallery-keys"
KEY_FILE_VERSION = 1
KEYRING_SERVICE = "faceapp-gallery"
ENV_PASSPHRASE = "FACEAPP_PASSPHRASE"
ENV_NEW_PASSPHRASE = "FACEAPP_NEW_PASSPHRASE"
ENV_KEYRING = "FACEAPP_KEYRING"
ENV_EXPORT_PASSPHRASE = "FACEAPP_EXPORT_PASSPHRASE"
"""The passphrase of export bundles (``people export`` / ``import``), else a prompt."""

KeySource = Literal["keyring", "passphrase"]
PromptFn = Callable[[str, bool], str]
"""``prompt(message, confirm)`` -> passphrase (``confirm``: a new one, ask twice)."""


@dataclass(frozen=True)
class KeyConfig:
    """Where key-encryption keys come from.

    ``keyring``: ``auto`` (the OS keyring when a real backend exists, else a passphrase),
    ``on`` (keyring required), ``off`` (passphrase only); ``None`` reads ``$FACEAPP_KEYRING``.
    ``kdf``: parameters of new passphrase wraps (``None``: ``$FACEAPP_KDF`` or the defaults).
    ``prompt``: asks the user for a passphrase when ``$FACEAPP_PASSPHRASE`` is not set
    (``None``: a terminal prompt when stdin is a terminal, else an error saying what to do).
    """

    keyring: Literal["auto", "on", "off"] | None = None
    kdf: KdfParams | None = None
    prompt: PromptFn | None = None

    def keyring_mode(self) -> str:
        mode = self.keyring or os.environ.get(ENV_KEYRING, "auto").strip().lower() or "auto"
        if mode not in ("auto", "on", "off"):
            raise GalleryError(f"{ENV_KEYRING}={mode!r}: expected auto, on or off")
        return mode

    def kdf_params(self) -> KdfParams:
        return self.kdf if self.kdf is not None else KdfParams.from_env()


@dataclass(frozen=True)
class KeyStatus:
    """What the key file of a gallery says (no secret in it)."""

    key_file: str
    key_id: str
    source: KeySource
    kdf: dict[str, object]
    created: str
    rotated: str

    def to_dict(self) -> dict[str, object]:
        return {"key_file": self.key_file, "key_id": self.key_id, "source": self.source,
                "kdf": self.kdf, "created": self.created, "rotated": self.rotated}


def key_file_path(db_path: Path) -> Path:
    """``<database>.keys`` beside the database file."""
    return db_path.with_name(db_path.name + ".keys")


# ---------------------------------------------------------------------- keyring
def _keyring_backend() -> object | None:
    """The OS keyring when a real (secure) backend is present, else ``None``."""
    try:
        import keyring
        from keyring.errors import KeyringError
    except ImportError:  # pragma: no cover - keyring is a dependency
        return None
    try:
        backend = keyring.get_keyring()
    except (KeyringError, RuntimeError) as err:  # pragma: no cover - platform specific
        logger.info("no OS keyring: %s", err)
        return None
    name = f"{type(backend).__module__}.{type(backend).__name__}".lower()
    priority = getattr(backend, "priority", 0)
    if priority <= 0 or "fail" in name or "null" in name or "plaintext" in name \
            or "keyrings.alt" in name:
        return None
    return backend


def keyring_available(config: KeyConfig = KeyConfig()) -> bool:
    """Would a new wrap use the OS keyring?"""
    mode = config.keyring_mode()
    return mode != "off" and _keyring_backend() is not None


def _keyring_get(account: str) -> bytes:
    backend = _keyring_backend()
    if backend is None:
        raise KeyUnavailable(
            "this gallery's key is protected by the OS keyring, and no keyring is available "
            "in this session (log in to the desktop session that holds it)"
        )
    value = backend.get_password(KEYRING_SERVICE, account)  # type: ignore[attr-defined]
    if not value:
        raise KeyUnavailable(
            f"the OS keyring holds no entry {KEYRING_SERVICE}/{account} for this gallery"
        )
    try:
        kek = base64.b64decode(value, validate=True)
    except ValueError:
        raise KeyUnavailable(f"the keyring entry {KEYRING_SERVICE}/{account} is malformed") from None
    if len(kek) != KEY_BYTES:
        raise KeyUnavailable(f"the keyring entry {KEYRING_SERVICE}/{account} is malformed")
    return kek


def _keyring_set(account: str, kek: bytes) -> None:
    backend = _keyring_backend()
    if backend is None:
        raise KeyUnavailable("no OS keyring is available in this session")
    backend.set_password(  # type: ignore[attr-defined]
        KEYRING_SERVICE, account, base64.b64encode(kek).decode("ascii"))


def _keyring_delete(account: str) -> None:
    backend = _keyring_backend()
    if backend is None:
        return
    with contextlib.suppress(Exception):  # the entry may already be gone
        backend.delete_password(KEYRING_SERVICE, account)  # type: ignore[attr-defined]


# ---------------------------------------------------------------------- passphrases
def terminal_prompt(message: str, confirm: bool) -> str:
    """Ask on the terminal without echo (twice when ``confirm``)."""
    value = getpass.getpass(f"{message}: ")
    if confirm and getpass.getpass("repeat it: ") != value:
        raise WrongPassphrase("the two passphrases differ; nothing was changed")
    return value


def ask_passphrase(config: KeyConfig, message: str, *, confirm: bool,
                   env: str = ENV_PASSPHRASE) -> str:
    """``$env`` when set, else ``config.prompt``, else a terminal prompt; never empty.

    Raises :class:`KeyUnavailable` (saying what to do) when none of them can answer.
    """
    value = os.environ.get(env)
    if value is None:
        if config.prompt is not None:
            value = config.prompt(message, confirm)
        elif sys.stdin is not None and sys.stdin.isatty():
            value = terminal_prompt(message, confirm)
        else:
            raise KeyUnavailable(
                f"{message}: no passphrase was given; set {env} (or run in a terminal to "
                "be asked)"
            )
    if not value:
        raise KeyUnavailable(f"{message}: the passphrase cannot be empty")
    return value


# ---------------------------------------------------------------------- key file
def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object) -> bytes:
    return base64.b64decode(str(text), validate=True)


def _aad(key_id: str) -> bytes:
    return f"{KEY_FILE_FORMAT}/{KEY_FILE_VERSION}/{key_id}".encode()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _wrap(data_key: bytes, key_id: str, config: KeyConfig, source: KeySource,
          *, message: str, env: str) -> dict[str, object]:
    """The ``kek`` part and the wrapped key for ``source``."""
    from faceapp.gallery.crypto import seal

    if source == "keyring":
        account = f"{key_id}/{uuid.uuid4()}"
        kek = random_key()
        _keyring_set(account, kek)
        kek_doc: dict[str, object] = {"source": "keyring", "service": KEYRING_SERVICE,
                                      "account": account}
    else:
        passphrase = ask_passphrase(config, message, confirm=True, env=env)
        params = config.kdf_params()
        salt = os.urandom(SALT_BYTES)
        kek = derive_key(passphrase, salt, params)
        kek_doc = {"source": "passphrase", "kdf": params.to_dict(), "salt": _b64(salt)}
    return {"kek": kek_doc, "wrapped": _b64(seal(kek, data_key, _aad(key_id)))}


def _choose_source(config: KeyConfig) -> KeySource:
    mode = config.keyring_mode()
    if mode == "off":
        return "passphrase"
    if _keyring_backend() is not None:
        return "keyring"
    if mode == "on":
        raise KeyUnavailable(f"{ENV_KEYRING}=on but no OS keyring is available in this session")
    return "passphrase"


def _write_key_file(path: Path, doc: dict[str, object], *, exclusive: bool) -> None:
    """Atomic 0600 write (temp file, fsync, rename); ``exclusive``: fail if it exists."""
    data = json.dumps(doc, indent=1).encode("utf-8")
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if exclusive:
            os.link(tmp, path)  # fails if another process made one meanwhile
            tmp.unlink()
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    except FileExistsError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    except OSError as err:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise GalleryError(f"{path}: cannot write the key file ({err})") from err


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _read_key_file(path: Path) -> dict[str, object]:
    try:
        doc = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise KeyUnavailable(f"{path}: the key file of this encrypted gallery is missing") from None
    except (OSError, ValueError) as err:
        raise GalleryError(f"{path}: unreadable key file ({err})") from None
    if not isinstance(doc, dict) or doc.get("format") != KEY_FILE_FORMAT:
        raise GalleryError(f"{path}: not a faceapp key file")
    if doc.get("version") != KEY_FILE_VERSION:
        raise GalleryError(f"{path}: key file version {doc.get('version')} is not supported")
    return doc


def create_key_file(db_path: Path, config: KeyConfig = KeyConfig()) -> bytes:
    """Make a new data key for the gallery at ``db_path``, wrap it and write the key file
    (exclusively: an existing key file is unlocked and reused instead). Returns the key."""
    path = key_file_path(db_path)
    if path.exists():
        return unlock(db_path, config)
    key_id = str(uuid.uuid4())
    data_key = random_key()
    source = _choose_source(config)
    doc: dict[str, object] = {
        "format": KEY_FILE_FORMAT, "version": KEY_FILE_VERSION, "key_id": key_id,
        "cipher": "sqlcipher4", "created": _now(), "rotated": "",
    }
    doc |= _wrap(data_key, key_id, config, source,
                 message=f"the new encrypted gallery {db_path} needs a passphrase (no OS keyring "
                 "in this session)",
                 env=ENV_PASSPHRASE)
    try:
        _write_key_file(path, doc, exclusive=True)
    except FileExistsError:
        if source == "keyring":
            _keyring_delete(str(doc["kek"]["account"]))  # type: ignore[index]
        return unlock(db_path, config)
    logger.info("created the key file %s (key from the %s)", path, source)
    return data_key


def _unwrap(doc: dict[str, object], config: KeyConfig, where: Path) -> bytes:
    from faceapp.gallery.crypto import unseal

    try:
        key_id = str(doc["key_id"])
        kek_doc = doc["kek"]
        wrapped = _unb64(doc["wrapped"])
        if not isinstance(kek_doc, dict):
            raise TypeError("kek")
        source = kek_doc["source"]
        if source == "keyring":
            kek = _keyring_get(str(kek_doc["account"]))
        elif source == "passphrase":
            params = KdfParams.from_dict(kek_doc["kdf"])
            salt = _unb64(kek_doc["salt"])
            passphrase = ask_passphrase(config, f"passphrase of the gallery {where}", confirm=False)
            kek = derive_key(passphrase, salt, params)
        else:
            raise GalleryError(f"{where}: unknown key source {source!r} in the key file")
    except (KeyError, TypeError, ValueError) as err:
        raise GalleryError(f"{key_file_path(where)}: malformed key file ({err})") from None
    try:
        data_key = unseal(kek, wrapped, _aad(key_id))
    except IntegrityError:
        if source == "passphrase":
            raise WrongPassphrase(
                f"wrong passphrase for the gallery {where}; nothing was changed") from None
        raise GalleryError(f"{key_file_path(where)}: the key file does not match its keyring entry "
                           "(modified?)") from None
    if len(data_key) != KEY_BYTES:
        raise GalleryError(f"{key_file_path(where)}: malformed key file")
    return data_key


def unlock(db_path: Path, config: KeyConfig = KeyConfig()) -> bytes:
    """The data key of the gallery at ``db_path`` (asks for the passphrase if needed)."""
    return _unwrap(_read_key_file(key_file_path(db_path)), config, db_path)


def passphrase_needed(db_path: Path, config: KeyConfig = KeyConfig(), *,
                      encrypt_new: bool = True) -> Literal["none", "unlock", "new"]:
    """Would opening the gallery file at ``db_path`` ask for a passphrase (``$FACEAPP_PASSPHRASE``
    unset, no ``config.prompt``)? ``unlock``: an existing key file wrapped by a passphrase;
    ``new``: a gallery to be created without an OS keyring; ``none`` otherwise."""
    if os.environ.get(ENV_PASSPHRASE) is not None:
        return "none"
    path = key_file_path(db_path)
    if path.is_file():
        try:
            return "unlock" if key_status(db_path).source == "passphrase" else "none"
        except GalleryError:
            return "none"  # opening will report the problem
    exists = db_path.is_file() and db_path.stat().st_size > 0
    if exists or not encrypt_new:
        return "none"
    return "none" if _choose_source_quiet(config) == "keyring" else "new"


def _choose_source_quiet(config: KeyConfig) -> KeySource | None:
    try:
        return _choose_source(config)
    except GalleryError:
        return None


def key_status(db_path: Path) -> KeyStatus:
    path = key_file_path(db_path)
    doc = _read_key_file(path)
    kek = doc.get("kek") if isinstance(doc.get("kek"), dict) else {}
    return KeyStatus(str(path), str(doc.get("key_id", "")),
                     "keyring" if kek.get("source") == "keyring" else "passphrase",  # type: ignore[union-attr]
                     dict(kek.get("kdf") or {}), str(doc.get("created", "")),  # type: ignore[union-attr]
                     str(doc.get("rotated", "")))


def rotate_key(db_path: Path, config: KeyConfig = KeyConfig(),
               to: KeySource | None = None) -> KeyStatus:
    """Re-wrap the data key with a new KEK: a new passphrase (``$FACEAPP_NEW_PASSPHRASE``
    or a prompt), or a new keyring secret; ``to`` switches the source (default: the same).

    The current KEK is checked first: a wrong passphrase raises :class:`WrongPassphrase`
    and changes nothing. The key file is replaced atomically; the old keyring entry is
    deleted only after the new file is in place. The database is not rewritten.
    """
    path = key_file_path(db_path)
    doc = _read_key_file(path)
    data_key = _unwrap(doc, config, db_path)
    old_kek = doc["kek"] if isinstance(doc["kek"], dict) else {}
    source: KeySource = to or ("keyring" if old_kek.get("source") == "keyring" else "passphrase")
    if source == "keyring" and _keyring_backend() is None:
        raise KeyUnavailable("no OS keyring is available in this session; nothing was changed")
    new = dict(doc)
    new |= _wrap(data_key, str(doc["key_id"]), config, source,
                 message=f"new passphrase for the gallery {db_path}", env=ENV_NEW_PASSPHRASE)
    new["rotated"] = _now()
    _write_key_file(path, new, exclusive=False)
    if old_kek.get("source") == "keyring":
        _keyring_delete(str(old_kek.get("account", "")))
    logger.info("rotated the key-encryption key of %s (%s)", db_path, source)
    return key_status(db_path)


__all__ = [
    "ENV_EXPORT_PASSPHRASE",
    "ENV_KEYRING",
    "ENV_NEW_PASSPHRASE",
    "ENV_PASSPHRASE",
    "KeyConfig",
    "KeyStatus",
    "ask_passphrase",
    "create_key_file",
    "key_file_path",
    "key_status",
    "keyring_available",
    "passphrase_needed",
    "rotate_key",
    "terminal_prompt",
    "unlock",
]
