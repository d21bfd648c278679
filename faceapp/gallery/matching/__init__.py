"""In-memory search index of one model's templates: 1:1 verification and 1:K identification.

Conventions (the same everywhere in faceapp):

* a **score is a similarity**: higher means more alike. The built-in scorer is the cosine
  similarity of L2-normalised embeddings (a plain dot product); any object with
  ``score_matrix(probes (P, D), gallery (M, D)) -> (P, M)`` (``faceapp.nn.scoring.Scorer``,
  e.g. the binary verification head's probability) can be passed instead.
* a comparison **matches when ``score >= threshold``**. The threshold τ always comes from
  the caller (the model's calibration file or the user), never from this module.
* a person's score is the **best (maximum) score over their templates** ("best template"
  aggregation), for both :meth:`GalleryIndex.verify` and :meth:`GalleryIndex.identify`.

Layout: the index holds an (N, D) float32 matrix of L2-normalised rows with, per row, the
template id and person id. Rows are kept grouped by person (sorted by person id, then
template id) so that the per-person maximum of a probe's N scores is one
``np.maximum.reduceat`` over the person segments: identification is one matrix product plus
one segmented reduction, no Python loop over templates or people. Adding templates appends
to a growable buffer (amortised O(new rows)); the grouping is restored lazily, once, at the
next search. Removing a person or templates compacts the buffer in place. No database access.

Large galleries (``len(index) >= quantize_min_rows``, cosine scorer) are identified in two
passes: a **compressed first pass** (int8 codes: a quarter of the memory traffic of float32,
which is what bounds a 1:K search; see :mod:`faceapp.gallery.quantized` for the backends and
their error bounds) proposes a short list of rows; then every person with a row in it is
**re-scored exactly in float32**. The short list grows until the first pass's error bound
proves that nobody outside it can enter the exact top-k, so the result (people and scores)
is the same as the exact search, ties aside (see :meth:`GalleryIndex.identify`). The
backend is chosen on first use for the gallery's width and size class
(:func:`faceapp.gallery.selfcheck.choose_backend`: a native one only after it passed a
self-check in a child process; else the exact search) and its copy of the rows is built on
the first search after a change.

Not thread-safe: one thread at a time (the services layer guarantees it).

Modules: :mod:`~faceapp.gallery.matching.results` (Candidate, Identification, Verification),
:mod:`~faceapp.gallery.matching.index` (:class:`GalleryIndex`),
:mod:`~faceapp.gallery.matching.two_pass` (the first pass + exact re-rank),
:mod:`~faceapp.gallery.matching.arrays` (unit rows, top-k). Every name is importable from
here, as from the former single module.
"""

from faceapp.gallery.matching.arrays import l2_normalize
from faceapp.gallery.matching.index import GalleryIndex
from faceapp.gallery.matching.results import (
    DEFAULT_AMBIGUITY_MARGIN,
    Candidate,
    Identification,
    PairScorer,
    Verification,
)
from faceapp.gallery.matching.two_pass import QUANTIZE_MIN_ROWS

__all__ = [
    "DEFAULT_AMBIGUITY_MARGIN",
    "QUANTIZE_MIN_ROWS",
    "Candidate",
    "GalleryIndex",
    "Identification",
    "PairScorer",
    "Verification",
    "l2_normalize",
]
