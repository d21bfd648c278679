"""Real-time recognition of a frame stream (camera, video), Qt-free.

:class:`LiveRecognizer` turns one RGB frame at a time into a :class:`FrameResult`: every
face with its box, its identity (name or Unknown), score and candidates, plus per-stage
timings. It is fast on a CPU because it does as little as possible per frame:

1. **detect on a downscaled frame** (``LiveConfig.detect_max_side``), and only every
   ``detect_every`` frames, or at once when a track was lost;
2. **track** faces in between: each track's box is moved by its velocity and refreshed by
   MTCNN's last stage (O-Net on one 48×48 crop per face: new box, 5 landmarks, face
   probability; see :class:`LandmarkRefiner`); tracks are continued across detections by
   optimal box-IoU assignment (:mod:`faceapp.vision.tracking`);
3. **embed only faces that are new or changed** (the box moved away from where the face was
   last embedded, the landmark shape changed, i.e. the head turned, or the decision is
   older than ``refresh_every`` frames), all of them **in one batch**, under
   ``torch.inference_mode`` (inside the encoder);
4. **match** the new embeddings 1:K through a :class:`Matcher`: the service's in-memory
   index and τ, with no database round trip per frame (:class:`CacheMatcher`), or a given
   :class:`~faceapp.gallery.matching.GalleryIndex` (:class:`IndexMatcher`). A tracked face
   keeps its decision between embeddings; the decision against τ is re-derived from the
   stored scores every frame, so a new τ (:meth:`LiveRecognizer.set_threshold`, or the
   service's τ changed anywhere) applies at once.

Every tracked face also carries the :class:`~faceapp.nn.pipeline.FaceEmbedding` it was last
embedded with (``LiveFace.face``: aligned crop, embedding, quality, face image, as
``FacePipeline.faces_from_detections`` makes them), so that the other live pages decide on
it themselves (:mod:`faceapp.services.live_pages`): Enroll keeps fresh, good ones as
samples (``CaptureGuide``), Verify scores the largest one against the claimed person
(``TrackedVerifier``). Without a matcher (``matcher=None``) the loop only tracks and
embeds (no 1:K decision, no candidates).

``LiveConfig.naive()`` switches every speed-up off (full-resolution detection and embedding
of every face on every frame): the baseline of ``faceapp bench frame``.

Threads: a recognizer is used from one worker thread at a time (e.g. the GUI's camera
worker, which drops frames while :meth:`LiveRecognizer.process` runs); it holds per-stream
state, so use one recognizer per stream and :meth:`LiveRecognizer.reset` on a new source.

Modules: :mod:`~faceapp.services.live.config` (settings, results), :mod:`~faceapp.services.live.matchers`
(where decisions come from), :mod:`~faceapp.services.live.recognizer` (the loop); the O-Net
tracking step is :mod:`faceapp.vision.refine`.
"""

from faceapp.services.live.config import FrameResult, LiveConfig, LiveFace, LiveStats, StageTimes
from faceapp.services.live.matchers import CacheMatcher, IndexMatcher, Matcher, NoMatcher
from faceapp.services.live.recognizer import LiveRecognizer
from faceapp.vision.refine import LandmarkRefiner

__all__ = [
    "CacheMatcher",
    "FrameResult",
    "IndexMatcher",
    "LandmarkRefiner",
    "LiveConfig",
    "LiveFace",
    "LiveRecognizer",
    "LiveStats",
    "Matcher",
    "NoMatcher",
    "StageTimes",
]
