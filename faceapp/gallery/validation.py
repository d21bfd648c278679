"""Checks on what enters the gallery from outside (``faceapp people import``): every field of
every template is bounded and validated before anything is written, so that one bad file
can neither break recognition for everyone (a template whose dimension differs from its
model's) nor plant a decompression bomb that stops ``reembed`` later.

A failure raises :class:`~faceapp.errors.GalleryError` naming the file, the person and the
template (1-based, in file order, with its source); the caller writes nothing then.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from faceapp.errors import GalleryError, InvalidImage
from faceapp.gallery.orm import FaceTemplate
from faceapp.gallery.repository import NewTemplate
from faceapp.gallery.types import MAX_EMBEDDING_DIM
from faceapp.vision.images import load_image

MAX_IMPORT_BYTES = 512 * 2**20
"""Largest export file ``import`` reads (it is parsed in memory): 512 MiB."""
MAX_TEMPLATES_PER_PERSON = 10_000
MAX_PEOPLE = 1_000_000
MODEL_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]{0,63}")
"""A model id: 1 to 64 characters (the database column), letters, digits and ``._:+-``."""
MAX_SOURCE_LEN = 500
MAX_QUALITY_BYTES = 4096
MAX_CROP_BYTES = 4 * 2**20
MAX_CREATED_LEN = 40
UNIT_NORM_TOLERANCE = 1e-3
"""Stored templates are L2-normalised: ``| ||e|| - 1 |`` above this is refused."""
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def read_bounded(path: Path, max_bytes: int = MAX_IMPORT_BYTES) -> bytes:
    """The bytes of ``path``, refusing (before reading) a file above ``max_bytes``."""
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise GalleryError(
                f"{path}: the file is {size / 2**20:.1f} MiB, above the import limit of "
                f"{max_bytes / 2**20:.0f} MiB (export fewer people per file)")
        with path.open("rb") as fh:
            data = fh.read(max_bytes + 1)
    except FileNotFoundError:
        raise GalleryError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise GalleryError(f"{path}: is a directory, not a gallery export") from None
    except OSError as err:
        raise GalleryError(f"{path}: cannot read the file ({err})") from None
    if len(data) > max_bytes:  # grew while being read
        raise GalleryError(f"{path}: the file is above the import limit of "
                           f"{max_bytes / 2**20:.0f} MiB")
    return data


class _Where:
    """'<file>: person 'X', template 3 (source 'a.jpg')' for messages."""

    def __init__(self, path: Path, person: str, number: int, source: object) -> None:
        self.text = f"{path}: person {person!r}, template {number}"
        if isinstance(source, str) and source:
            self.text += f" (source {source[:80]!r})"

    def fail(self, why: str) -> GalleryError:
        return GalleryError(f"{self.text}: {why}; nothing was imported")


def _b64(value: object, where: _Where, field: str, max_bytes: int) -> bytes:
    if not isinstance(value, str):
        raise where.fail(f"{field} must be base64 text")
    if len(value) > (max_bytes * 4) // 3 + 4:
        raise where.fail(f"{field} is larger than {max_bytes} bytes")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as err:
        raise where.fail(f"{field} is not valid base64 ({err})") from None


def validate_template(path: Path, person: str, number: int, t: object) -> NewTemplate:
    """One template of an export file -> :class:`NewTemplate`, every field checked."""
    if not isinstance(t, Mapping):
        raise GalleryError(f"{path}: person {person!r}, template {number}: not an object; "
                           "nothing was imported")
    where = _Where(path, person, number, t.get("source"))
    model_id = t.get("model_id")
    if not isinstance(model_id, str) or not MODEL_ID_RE.fullmatch(model_id):
        shown = model_id[:40] + "..." if isinstance(model_id, str) and len(model_id) > 40 else model_id
        raise where.fail(f"model id {shown!r} is not 1-64 letters, digits or ._:+-")
    dim = t.get("dim")
    if not isinstance(dim, int) or isinstance(dim, bool) or not 0 < dim <= MAX_EMBEDDING_DIM:
        raise where.fail(f"dimension {dim!r} is not an integer in 1..{MAX_EMBEDDING_DIM}")
    raw = _b64(t.get("embedding"), where, "embedding", MAX_EMBEDDING_DIM * 4)
    if len(raw) != dim * 4:
        raise where.fail(f"embedding has {len(raw)} bytes, expected {dim * 4} for dimension {dim}")
    emb = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    if not np.all(np.isfinite(emb)):
        raise where.fail("embedding has non-finite values")
    norm = float(np.linalg.norm(emb.astype(np.float64)))
    if not abs(norm - 1.0) <= UNIT_NORM_TOLERANCE:
        raise where.fail(f"embedding norm is {norm:.6g}, not 1 (templates are unit vectors)")
    crop = None
    if t.get("crop_png") is not None:
        crop = _b64(t["crop_png"], where, "crop", MAX_CROP_BYTES)
        if len(crop) > MAX_CROP_BYTES:
            raise where.fail(f"crop is larger than {MAX_CROP_BYTES} bytes")
        if not crop.startswith(PNG_SIGNATURE):
            raise where.fail("crop is not a PNG")
        try:
            load_image(crop)  # decoded under the same pixel caps as any image
        except InvalidImage as err:
            raise where.fail(f"crop cannot be used ({err.reason})") from None
    source = t.get("source", "")
    if not isinstance(source, str) or len(source) > MAX_SOURCE_LEN:
        raise where.fail(f"source must be text of at most {MAX_SOURCE_LEN} characters")
    quality = t.get("quality") or {}
    if not isinstance(quality, Mapping):
        raise where.fail("quality must be an object")
    try:
        quality_text = json.dumps(quality, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise where.fail(f"quality is not plain JSON ({err})") from None
    if len(quality_text.encode("utf-8")) > MAX_QUALITY_BYTES:
        raise where.fail(f"quality is larger than {MAX_QUALITY_BYTES} bytes")
    created = None
    if t.get("created"):
        text = t["created"]
        if not isinstance(text, str) or len(text) > MAX_CREATED_LEN:
            raise where.fail("created must be an ISO date-time")
        try:
            created = datetime.fromisoformat(text)
        except ValueError:
            raise where.fail(f"created {text!r} is not an ISO date-time") from None
    return NewTemplate(model_id=model_id, embedding=emb, crop_png=crop, source=source,
                       quality=json.loads(quality_text), created=created)


def check_people_list(path: Path, people: object) -> Sequence[Any]:
    if not isinstance(people, list):
        raise GalleryError(f"{path}: 'people' must be a list")
    if len(people) > MAX_PEOPLE:
        raise GalleryError(f"{path}: more than {MAX_PEOPLE} people in one file")
    return people


def check_templates_list(path: Path, person: str, templates: object) -> Sequence[Any]:
    if not isinstance(templates, list) or not templates:
        raise GalleryError(f"{path}: person {person!r} has no templates; nothing was imported")
    if len(templates) > MAX_TEMPLATES_PER_PERSON:
        raise GalleryError(f"{path}: person {person!r} has more than {MAX_TEMPLATES_PER_PERSON} "
                           "templates; nothing was imported")
    return templates


def gallery_dims(session: Session) -> dict[str, set[int]]:
    """The dimensions of the templates of each model already in the gallery."""
    out: dict[str, set[int]] = {}
    for model_id, dim in session.execute(select(FaceTemplate.model_id, FaceTemplate.dim).distinct()):
        out.setdefault(str(model_id), set()).add(int(dim))
    return out


def check_dimensions(path: Path, people: Sequence[tuple[str, Sequence[NewTemplate]]],
                     known: Mapping[str, set[int] | int]) -> None:
    """Every template of a model has that model's dimension: the one already in the gallery
    (or of the loaded model, in ``known``), else the first one in the file."""
    dims: dict[str, int] = {}
    for model_id, d in known.items():
        values = {d} if isinstance(d, int) else set(d)
        if len(values) == 1:
            dims[model_id] = next(iter(values))
    for name, templates in people:
        for number, t in enumerate(templates, 1):
            d = int(np.asarray(t.embedding).shape[0])
            expected = dims.setdefault(t.model_id, d)
            if d != expected:
                where = _Where(path, name, number, t.source)
                raise where.fail(f"{d}-dimensional embedding, but templates of model "
                                 f"{t.model_id!r} have {expected} dimensions")


def private_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 (also when it existed with another mode)."""
    fd = os.open(path, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o600)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fd = -1
            fh.write(data)
    finally:
        if fd >= 0:
            os.close(fd)


def private_folder(path: Path) -> None:
    """Create ``path`` with mode 0700 when it does not exist (parents as needed)."""
    if not path.exists():
        path.mkdir(parents=True, mode=0o700)
        os.chmod(path, 0o700)  # not lowered by the umask
    elif not path.is_dir():
        raise GalleryError(f"{path}: exists and is not a folder")
