"""Authenticated encryption of biometric data at rest (AES-256-GCM, memory-hard KDFs).

Built on ``cryptography`` (its AES-GCM, Argon2id, scrypt and HKDF), never on hand-made
primitives. Nothing here runs at import.

* :func:`seal` / :func:`unseal`: ``MAGIC | nonce (12 B) | ciphertext+tag`` with a fresh random
  nonce per call and *associated data* that binds a blob to its place (an index snapshot to
  its gallery and model, a bundle to its format): a blob moved elsewhere fails to open.
* :class:`KdfParams` / :func:`derive_key`: a 256-bit key from a passphrase, Argon2id
  (RFC 9106) by default, scrypt as an alternative; the parameters are stored beside the salt
  so that a file written with other parameters still opens.
* :class:`AtRest`: the sealing used by one gallery for the files written beside its database
  (index snapshots); a plaintext (legacy) gallery gets a pass-through one.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from faceapp.errors import GalleryError

KEY_BYTES = 32
NONCE_BYTES = 12
SALT_BYTES = 16
MAGIC = b"FACEAPP-SEALED\x01"
"""First bytes of every sealed blob (format version 1)."""

ENV_KDF = "FACEAPP_KDF"
"""Overrides the KDF parameters of *new* wraps, e.g. ``argon2id:m=65536,t=3,p=4`` or
``scrypt:n=131072,r=8,p=1`` (the test-suite uses cheap ones)."""


class IntegrityError(GalleryError):
    """A sealed blob does not open: wrong key/passphrase, or the bytes were modified."""


@dataclass(frozen=True)
class KdfParams:
    """Passphrase KDF settings.

    argon2id: ``memory_kib`` KiB of memory, ``iterations`` passes, ``lanes`` parallelism
    (default 64 MiB, 3, 4: OWASP's second recommended set, ~0.1-0.3 s on a desktop).
    scrypt: ``n`` (power of two), ``r``, ``p``.
    """

    name: str = "argon2id"
    memory_kib: int = 65_536
    iterations: int = 3
    lanes: int = 4
    n: int = 131_072
    r: int = 8
    p: int = 1

    def __post_init__(self) -> None:
        if self.name not in ("argon2id", "scrypt"):
            raise GalleryError(f"unknown KDF {self.name!r} (argon2id or scrypt)")
        if self.name == "argon2id" and (
            self.lanes < 1 or self.iterations < 1 or self.memory_kib < 8 * self.lanes
        ):
            raise GalleryError("argon2id needs t >= 1, p >= 1 and m >= 8·p KiB")
        if self.name == "scrypt" and (self.n < 2 or self.n & (self.n - 1) or self.r < 1 or self.p < 1):
            raise GalleryError("scrypt needs n a power of two >= 2, r >= 1, p >= 1")

    def to_dict(self) -> dict[str, object]:
        if self.name == "argon2id":
            return {"name": self.name, "memory_kib": self.memory_kib,
                    "iterations": self.iterations, "lanes": self.lanes}
        return {"name": self.name, "n": self.n, "r": self.r, "p": self.p}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> KdfParams:
        try:
            name = str(data["name"])
            if name == "argon2id":
                return cls(name, memory_kib=int(data["memory_kib"]),  # type: ignore[arg-type]
                           iterations=int(data["iterations"]),  # type: ignore[arg-type]
                           lanes=int(data["lanes"]))  # type: ignore[arg-type]
            return cls(name, n=int(data["n"]), r=int(data["r"]), p=int(data["p"]))  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError) as err:
            raise GalleryError(f"malformed KDF parameters ({err})") from None

    @classmethod
    def parse(cls, text: str) -> KdfParams:
        """``argon2id:m=65536,t=3,p=4`` or ``scrypt:n=131072,r=8,p=1`` (missing = default)."""
        m = re.fullmatch(r"\s*(argon2id|scrypt)\s*(?::(.*))?", text)
        if m is None:
            raise GalleryError(f"{ENV_KDF}={text!r}: expected argon2id:m=..,t=..,p=.. or "
                               "scrypt:n=..,r=..,p=..")
        values: dict[str, int] = {}
        for part in filter(None, (m.group(2) or "").split(",")):
            k, _, v = part.partition("=")
            try:
                values[k.strip()] = int(v)
            except ValueError:
                raise GalleryError(f"{ENV_KDF}={text!r}: {part!r} is not key=integer") from None
        if m.group(1) == "argon2id":
            unknown = set(values) - {"m", "t", "p"}
            base = cls()
            params = cls("argon2id", memory_kib=values.get("m", base.memory_kib),
                         iterations=values.get("t", base.iterations),
                         lanes=values.get("p", base.lanes))
        else:
            unknown = set(values) - {"n", "r", "p"}
            base = cls()
            params = cls("scrypt", n=values.get("n", base.n), r=values.get("r", base.r),
                         p=values.get("p", base.p))
        if unknown:
            raise GalleryError(f"{ENV_KDF}={text!r}: unknown parameter(s) {sorted(unknown)}")
        return params

    @classmethod
    def from_env(cls) -> KdfParams:
        """``$FACEAPP_KDF`` when set, else the defaults (read when called)."""
        text = os.environ.get(ENV_KDF, "").strip()
        return cls.parse(text) if text else cls()


def derive_key(passphrase: str, salt: bytes, params: KdfParams) -> bytes:
    """A 32-byte key from ``passphrase`` (UTF-8) and ``salt`` with ``params``."""
    secret = passphrase.encode("utf-8")
    if params.name == "argon2id":
        kdf = Argon2id(salt=salt, length=KEY_BYTES, iterations=params.iterations,
                       lanes=params.lanes, memory_cost=params.memory_kib)
        return kdf.derive(secret)
    return Scrypt(salt=salt, length=KEY_BYTES, n=params.n, r=params.r, p=params.p).derive(secret)


def subkey(key: bytes, purpose: str) -> bytes:
    """A key for one purpose derived from ``key`` (HKDF-SHA256), so that one secret is
    never used by two algorithms (the SQLCipher page key and the snapshot sealing key)."""
    return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None,
                info=f"faceapp/{purpose}".encode()).derive(key)


def random_key() -> bytes:
    return os.urandom(KEY_BYTES)


def seal(key: bytes, data: bytes, aad: bytes) -> bytes:
    """AES-256-GCM: ``MAGIC | nonce | ciphertext | tag`` (a fresh random nonce)."""
    nonce = os.urandom(NONCE_BYTES)
    return MAGIC + nonce + AESGCM(key).encrypt(nonce, data, aad)


def is_sealed(blob: bytes) -> bool:
    return blob[: len(MAGIC)] == MAGIC


def unseal(key: bytes, blob: bytes, aad: bytes) -> bytes:
    """The plaintext of a :func:`seal` blob; :class:`IntegrityError` when the key is wrong,
    the associated data differs or any byte was changed."""
    if not is_sealed(blob) or len(blob) < len(MAGIC) + NONCE_BYTES + 16:
        raise IntegrityError("not an encrypted faceapp file")
    nonce = blob[len(MAGIC) : len(MAGIC) + NONCE_BYTES]
    try:
        return AESGCM(key).decrypt(nonce, blob[len(MAGIC) + NONCE_BYTES :], aad)
    except InvalidTag:
        raise IntegrityError("wrong key or modified data (authentication failed)") from None


@dataclass(frozen=True)
class AtRest:
    """How one gallery seals the files it writes beside its database.

    ``key``: the gallery's snapshot key (32 bytes), or empty for a plaintext gallery
    (in-memory, another back end, or a legacy file not yet encrypted).
    """

    key: bytes = field(default=b"", repr=False)

    @property
    def encrypted(self) -> bool:
        return bool(self.key)

    def seal(self, data: bytes, aad: bytes) -> bytes:
        return seal(self.key, data, aad) if self.key else data

    def unseal(self, blob: bytes, aad: bytes) -> bytes:
        """Open a blob written by :meth:`seal`. An encrypted gallery refuses a plaintext
        blob (a planted file), a plaintext gallery refuses a sealed one."""
        if self.key:
            return unseal(self.key, blob, aad)
        if is_sealed(blob):
            raise IntegrityError("an encrypted file beside a plaintext gallery")
        return blob
