"""Encrypted export bundles: a gallery export sealed with a passphrase.

Layout (one file, written 0600 by the caller)::

    FACEAPP-BUNDLE\\x01\\n
    {"format": "faceapp-bundle", "version": 1, "kdf": {...}, "salt": "..."}\\n   (header)
    <sealed payload>                                 (faceapp.gallery.crypto.seal)

The payload (the export document, JSON) is encrypted with AES-256-GCM under a key derived
from the passphrase (Argon2id by default, parameters and salt in the header); the
associated data is the magic line plus the header, so that changing *any* byte of the
file (header, ciphertext or tag) makes :func:`open_bundle` fail. A wrong passphrase and a
modified bundle are indistinguishable by design: both are refused with one message.
"""

from __future__ import annotations

import base64
import json
import os

from faceapp.errors import GalleryError, WrongPassphrase
from faceapp.gallery.crypto import SALT_BYTES, IntegrityError, KdfParams, derive_key, seal, unseal

BUNDLE_MAGIC = b"FACEAPP-BUNDLE\x01\n"
BUNDLE_FORMAT = "faceapp-bundle"
BUNDLE_VERSION = 1
MAX_HEADER_BYTES = 4096
MAX_KDF_MEMORY_KIB = 4 * 2**20
"""A header asking the KDF for more memory than this (4 GiB) is refused unread."""


def is_bundle(data: bytes) -> bool:
    return data[: len(BUNDLE_MAGIC)] == BUNDLE_MAGIC


def seal_bundle(payload: bytes, passphrase: str, kdf: KdfParams) -> bytes:
    """The bundle bytes of ``payload`` sealed under ``passphrase``."""
    if not passphrase:
        raise GalleryError("an export bundle needs a passphrase (it cannot be empty)")
    salt = os.urandom(SALT_BYTES)
    header = json.dumps({"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION,
                         "kdf": kdf.to_dict(),
                         "salt": base64.b64encode(salt).decode("ascii")},
                        separators=(",", ":")).encode("utf-8") + b"\n"
    key = derive_key(passphrase, salt, kdf)
    return BUNDLE_MAGIC + header + seal(key, payload, BUNDLE_MAGIC + header)


def open_bundle(data: bytes, passphrase: str, where: str = "bundle") -> bytes:
    """The payload of a bundle. :class:`WrongPassphrase` when the passphrase is wrong or any
    byte was modified; :class:`GalleryError` when it is not a bundle at all."""
    if not is_bundle(data):
        raise GalleryError(f"{where}: not an encrypted faceapp export bundle")
    end = data.find(b"\n", len(BUNDLE_MAGIC), len(BUNDLE_MAGIC) + MAX_HEADER_BYTES)
    if end < 0:
        raise WrongPassphrase(f"{where}: the bundle is damaged or was modified (bad header); "
                              "nothing was imported")
    header = data[len(BUNDLE_MAGIC) : end + 1]
    try:
        meta = json.loads(header)
        if meta.get("format") != BUNDLE_FORMAT:
            raise ValueError("format")
        if meta.get("version") != BUNDLE_VERSION:
            raise GalleryError(f"{where}: bundle version {meta.get('version')} is not supported "
                               f"(this faceapp reads {BUNDLE_VERSION})")
        kdf = KdfParams.from_dict(meta["kdf"])
        salt = base64.b64decode(meta["salt"], validate=True)
        if kdf.memory_kib > MAX_KDF_MEMORY_KIB or kdf.iterations > 64 or kdf.n > 2**22:
            raise ValueError("KDF parameters beyond any faceapp default (a modified header)")
    except GalleryError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError):
        raise WrongPassphrase(f"{where}: the bundle is damaged or was modified (bad header); "
                              "nothing was imported") from None
    key = derive_key(passphrase, salt, kdf)
    try:
        return unseal(key, data[end + 1 :], BUNDLE_MAGIC + header)
    except IntegrityError:
        raise WrongPassphrase(
            f"{where}: wrong passphrase, or the bundle was modified (integrity check failed); "
            "nothing was imported") from None
