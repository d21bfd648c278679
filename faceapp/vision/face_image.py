"""Model-independent face pictures (:class:`~faceapp.types.FaceImage`) for gallery templates.

A template's stored picture must outlive the model that embedded it: each model aligns to
its own template and size (96-px ArcFace framing, dlib's 150-px chip, ...). So the gallery
stores a generous 256x256 crop, framed wider than any model's crop (eye distance 64 px, a
quarter of the side), with the detector's 5 landmarks mapped into it; a model's crop is
derived from it by the same least-squares similarity as from the original photo.

Storage: PNG bytes with the landmarks in a ``tEXt`` chunk (``faceapp-face``: JSON
``{"framing": ..., "landmarks": [[x, y], ...]}``). PNGs without it are aligned crops of older
versions: ArcFace-framed at their own size, their landmarks are that template's points.
"""

from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image
from PIL.PngImagePlugin import PngInfo

from faceapp.errors import InvalidImage
from faceapp.types import Detection, FaceImage
from faceapp.vision.alignment import AlignmentTemplate, apply_transform, estimate_alignment, warp
from faceapp.vision.images import load_image

FACE_IMAGE_SIZE = 256
FACE_IMAGE_EYE_DISTANCE = 64.0
PNG_KEY = "faceapp-face"


def face_image_template() -> AlignmentTemplate:
    """The framing of stored face pictures: ArcFace's point layout scaled about the crop centre
    so that the eyes are 64 px apart in a 256-px square (every model's crop fits inside)."""
    arc = AlignmentTemplate.for_size(112).array()
    eye_dist = float(np.linalg.norm(arc[1] - arc[0]))
    centre = 56.0
    half = FACE_IMAGE_SIZE / 2
    pts = (arc - centre) * (FACE_IMAGE_EYE_DISTANCE / eye_dist) + half
    return AlignmentTemplate(size=FACE_IMAGE_SIZE, points=tuple((float(x), float(y)) for x, y in pts),
                             name="face256")


def extract_face_image(image: np.ndarray, detection: Detection) -> FaceImage:
    """The stored picture of a detected face.

    Args:
        image: (H, W, 3) uint8 RGB, the image the detection was made on.
    Returns:
        :class:`FaceImage` 256x256 with the detection's landmarks mapped into it.
    """
    template = face_image_template()
    matrix = estimate_alignment(detection.landmarks_array(), template)
    crop = warp(image, matrix, template.size)
    return FaceImage(image=crop, landmarks=apply_transform(matrix, detection.landmarks_array()))


def chip_from_face_image(face: FaceImage, template: AlignmentTemplate) -> np.ndarray:
    """A model's aligned crop, (S, S, 3) uint8 with S = ``template.size``, from a stored picture."""
    matrix = estimate_alignment(face.landmarks, template)
    return warp(face.image, matrix, template.size)


def encode_face_image(face: FaceImage) -> bytes:
    """PNG bytes of the picture, its landmarks and framing in a ``tEXt`` chunk."""
    info = PngInfo()
    meta = {"framing": face.framing, "landmarks": np.round(face.landmarks, 3).tolist()}
    info.add_text(PNG_KEY, json.dumps(meta))
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(face.image, dtype=np.uint8), "RGB").save(buf, format="PNG",
                                                                                   pnginfo=info)
    return buf.getvalue()


def decode_face_image(data: bytes) -> FaceImage:
    """Stored PNG -> :class:`FaceImage`; a PNG without landmarks (an aligned crop of an older
    faceapp) gets the ArcFace template of its size, ``framing="arcface<S>"``.

    Raises:
        InvalidImage: not a decodable image, or malformed landmarks.
    """
    image = load_image(data)
    try:
        text = Image.open(io.BytesIO(data)).info.get(PNG_KEY)  # type: ignore[union-attr]
    except OSError as err:  # load_image accepted it, so this is unexpected
        raise InvalidImage("stored face", f"unreadable PNG metadata ({err})") from None
    if text is None:
        h, w = image.shape[:2]
        if h != w:
            raise InvalidImage("stored face", f"an old aligned crop must be square, got {w}x{h}")
        return FaceImage(image=image, landmarks=AlignmentTemplate.for_size(h).array(), framing=f"arcface{h}")
    try:
        meta = json.loads(text)
        landmarks = np.asarray(meta["landmarks"], dtype=np.float64)
        framing = str(meta.get("framing", "face256"))
    except (ValueError, KeyError, TypeError) as err:
        raise InvalidImage("stored face", f"malformed landmarks ({err})") from None
    if landmarks.shape != (5, 2) or not np.isfinite(landmarks).all():
        raise InvalidImage("stored face", f"landmarks of shape {landmarks.shape}, expected (5, 2)")
    return FaceImage(image=image, landmarks=landmarks, framing=framing)


def is_old_crop(face: FaceImage) -> bool:
    """True for the aligned crops stored by older versions (no model-independent picture)."""
    return face.framing.startswith("arcface")
