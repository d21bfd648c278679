"""The live loop on real frames of the Hamilton clip (one singer, sometimes a pianist)."""

from __future__ import annotations

import itertools
from concurrent.futures import Executor, Future

import numpy as np
import pytest

from faceapp.errors import InvalidImage, ModelMismatch
from faceapp.gallery.matching import GalleryIndex
from faceapp.nn.checkpoint import load_checkpoint
from faceapp.nn.pipeline import FacePipeline
from faceapp.services.live import IndexMatcher, LandmarkRefiner, LiveConfig, LiveRecognizer
from faceapp.vision.tracking import box_iou
from faceapp.vision.video import read_video_frames

N_FRAMES = 30


@pytest.fixture(scope="module")
def frames(hamilton_clip):
    return read_video_frames(hamilton_clip, max_frames=N_FRAMES)


@pytest.fixture(scope="module")
def model(small_model_path):
    return load_checkpoint(small_model_path)


@pytest.fixture(scope="module")
def refiner():
    return LandmarkRefiner.create()


class CountingPipeline(FacePipeline):
    """The real pipeline, counting the faces that go through the encoder."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.embedded: list[int] = []
        self.detect_calls = 0

    def embed_crops(self, crops):
        self.embedded.append(len(crops))
        return super().embed_crops(crops)

    def detect(self, image):
        self.detect_calls += 1
        return super().detect(image)


@pytest.fixture
def pipeline(detector, model):
    return CountingPipeline(detector, model)


@pytest.fixture(scope="module")
def singer_gallery(detector, model, frames):
    """The singer (largest face of frame 0) and a random distractor, as an index."""
    faces = FacePipeline(detector, model).analyze(frames[0])
    assert faces, "the clip's first frame has a face"
    singer = max(faces, key=lambda f: f.detection.area)
    rng = np.random.default_rng(0)
    other = rng.standard_normal(model.embedding_dim).astype(np.float32)
    emb = np.stack([singer.embedding, other / np.linalg.norm(other)])
    return GalleryIndex.from_arrays(model.model_id, np.array([1, 2]), np.array([10, 20]), emb)


def matcher_for(index: GalleryIndex, threshold: float) -> IndexMatcher:
    return IndexMatcher(index, {10: "singer", 20: "someone else"}, threshold=threshold, top_k=2)


def test_tracks_are_stable_and_the_embedder_runs_rarely(pipeline, singer_gallery, frames, refiner):
    config = LiveConfig(detect_every=5, async_detect=False)
    live = LiveRecognizer(pipeline, matcher_for(singer_gallery, threshold=0.0), config, refiner=refiner)
    results = [live.process(f) for f in frames]

    assert [r.index for r in results] == list(range(1, N_FRAMES + 1))
    with_faces = [r for r in results if r.faces]
    assert len(with_faces) >= 0.9 * N_FRAMES
    # the largest face keeps its track id from frame to frame
    largest = [r.faces[0] for r in with_faces]
    switches = sum(a.track_id != b.track_id for a, b in itertools.pairwise(largest))
    assert switches <= 1
    assert all(f.candidates[0][0] == "singer" for f in largest)
    # detection every 5 frames (plus at most a few re-detections after a lost track)
    assert pipeline.detect_calls == sum(r.detected for r in results)
    assert N_FRAMES / 5 <= pipeline.detect_calls <= N_FRAMES / 5 + 4
    # embeddings only for new or changed faces, far fewer than frames x faces
    n_faces = sum(len(r.faces) for r in results)
    assert sum(pipeline.embedded) == sum(r.n_embedded for r in results) == live.stats.embedded_faces
    assert sum(pipeline.embedded) <= n_faces / 3
    assert len(pipeline.embedded) < N_FRAMES / 2
    for r in results:
        assert r.n_embedded == sum(f.fresh for f in r.faces)
        assert r.timings.total_ms >= r.timings.detect_ms + r.timings.embed_ms
        assert (r.timings.detect_ms > 0) == r.detected
        for f in r.faces:
            assert f.embedded_frame <= r.index and f.fresh == (f.embedded_frame == r.index)


def test_tracked_boxes_agree_with_fresh_detections(pipeline, singer_gallery, frames, refiner, detector):
    live = LiveRecognizer(
        pipeline,
        matcher_for(singer_gallery, 0.0),
        LiveConfig(detect_every=10, async_detect=False),
        refiner=refiner,
    )
    checked = 0
    for i, frame in enumerate(frames[:16]):
        r = live.process(frame)
        if r.detected or not r.faces or i % 3:
            continue
        truth = max(detector.detect(frame), key=lambda d: d.area)
        face = r.faces[0]
        assert box_iou(face.box, truth.box) > 0.6
        eye = np.hypot(*np.subtract(truth.landmarks[1], truth.landmarks[0]))
        err = np.linalg.norm(np.subtract(face.landmarks, truth.landmarks), axis=1).max()
        assert err < 0.35 * eye
        checked += 1
    assert checked >= 3


def test_naive_config_detects_and_embeds_everything(pipeline, singer_gallery, frames):
    live = LiveRecognizer(pipeline, matcher_for(singer_gallery, 0.0), LiveConfig.naive())
    assert live.refiner is None
    results = [live.process(f) for f in frames[:4]]
    assert all(r.detected for r in results)
    assert pipeline.detect_calls == 4
    assert sum(pipeline.embedded) == sum(len(r.faces) for r in results) > 0
    assert all(f.fresh for r in results for f in r.faces)


def test_without_a_matcher_tracked_faces_carry_the_embedding_they_were_decided_on(
    pipeline, frames, refiner
):
    """No matcher (the Enroll and Verify pages): faces are tracked and embedded as usual,
    each with the ``FaceEmbedding`` of its last embedding, as the pipeline makes it."""
    live = LiveRecognizer(pipeline, None, LiveConfig(detect_every=5, async_detect=False), refiner=refiner)
    results = [live.process(f) for f in frames[:12]]
    faces = [f for r in results for f in r.faces]
    assert len(faces) >= 10
    assert sum(r.n_embedded for r in results) < len(faces)  # reuse, as with a matcher
    for r, frame in zip(results, frames[:12], strict=True):
        for f in r.faces:
            assert f.person is None and f.candidates == () and not f.ambiguous
            emb = f.face
            assert emb is not None and emb.model_id == pipeline.model_id
            assert emb.embedding.shape == (pipeline.embedding_dim,)
            assert emb.quality is not None and emb.face_image is not None
            assert emb.aligned.crop.shape[:2] == (pipeline.template.size,) * 2
            if f.fresh:  # measured on this frame: what the pipeline makes of this detection
                want = FacePipeline.faces_from_detections(pipeline, frame, [emb.detection])[0]
                np.testing.assert_allclose(emb.embedding, want.embedding, atol=1e-5)
                assert emb.quality.ok == want.quality.ok
    # the same embedding object until the face is embedded again
    by_track: dict[int, list] = {}
    for f in faces:
        by_track.setdefault(f.track_id, []).append(f)
    for seq in by_track.values():
        for a, b in itertools.pairwise(seq):
            if not b.fresh:
                assert b.face is a.face and b.embedded_frame == a.embedded_frame


def test_threshold_changes_apply_at_once_without_reembedding(pipeline, singer_gallery, frames, refiner):
    live = LiveRecognizer(
        pipeline,
        matcher_for(singer_gallery, 0.0),
        LiveConfig(detect_every=5, async_detect=False),
        refiner=refiner,
    )
    for f in frames[:3]:
        r = live.process(f)
    assert r.faces and r.faces[0].person == "singer" and r.faces[0].threshold == 0.0
    before = sum(pipeline.embedded)
    best = max(f.score for f in r.faces)
    live.set_threshold(best + 1e-3)
    r = live.process(frames[3])
    assert r.faces and all(f.person is None and f.label == "Unknown" for f in r.faces)
    assert all(f.threshold == pytest.approx(best + 1e-3) for f in r.faces)
    assert sum(pipeline.embedded) == before  # decided from the stored scores
    live.set_threshold(None)
    r = live.process(frames[4])
    assert r.faces[0].person == "singer"
    with pytest.raises(ValueError):
        live.set_threshold(float("nan"))


def test_forget_decisions_and_reset(pipeline, singer_gallery, frames, refiner):
    live = LiveRecognizer(
        pipeline,
        matcher_for(singer_gallery, 0.0),
        LiveConfig(detect_every=5, async_detect=False),
        refiner=refiner,
    )
    live.process(frames[0])
    r = live.process(frames[1])
    assert r.faces and r.n_embedded == 0
    live.forget_decisions()
    r = live.process(frames[2])
    assert r.n_embedded == len(r.faces) > 0
    live.reset()
    assert len(live.tracker) == 0 and live.stats.frames == 0
    r = live.process(frames[3])
    assert r.index == 1 and r.detected


def test_refiner_on_real_faces_and_background(frames, detector, refiner):
    frame = frames[5]
    dets = detector.detect(frame)
    assert dets
    refined = refiner.refine(frame, [d.box for d in dets])
    for d, r in zip(dets, refined, strict=True):
        assert r.score > 0.7
        assert box_iou(d.box, r.box) > 0.7
    grey = np.full((240, 320, 3), 128, dtype=np.uint8)
    (flat,) = refiner.refine(grey, [(100.0, 60.0, 180.0, 140.0)])
    assert flat.score < 0.5
    (outside,) = refiner.refine(frame, [(-500.0, -500.0, -400.0, -400.0)])
    assert outside.score == 0.0
    assert refiner.refine(frame, []) == []


def test_bad_frames_and_foreign_models(pipeline, singer_gallery, frames, refiner):
    live = LiveRecognizer(
        pipeline, matcher_for(singer_gallery, 0.0), LiveConfig(async_detect=False), refiner=refiner
    )
    with pytest.raises(InvalidImage):
        live.process(frames[0].astype(np.float32))
    with pytest.raises(InvalidImage):
        live.process(frames[0][:, :, 0])
    other = GalleryIndex.from_arrays(
        "another-model", np.array([1]), np.array([1]), np.ones((1, singer_gallery.dim), np.float32)
    )
    foreign = LiveRecognizer(
        pipeline,
        IndexMatcher(other, {1: "x"}, threshold=0.0),
        LiveConfig(async_detect=False),
        refiner=refiner,
    )
    with pytest.raises(ModelMismatch):
        foreign.process(frames[0])


def test_through_the_face_service(tmp_path, detector, model, frames, refiner):
    from faceapp.gallery.database import open_database
    from faceapp.services import FaceService

    pipeline = CountingPipeline(detector, model)
    service = FaceService(open_database(f"sqlite:///{tmp_path / 'g.sqlite'}"), pipeline, owns_engine=True)
    try:
        report = service.enroll("Lin-Manuel", [frames[0], frames[10]], largest=True)
        d = report.to_dict()
        assert set(d) == {"person", "accepted", "rejected", "templates_added"}
        assert d["person"] == "Lin-Manuel" and d["rejected"] == []
        assert len(d["accepted"]) == d["templates_added"] == 2
        n_events = len(service.events())
        # one person, no calibration file: an explicit τ below every cosine keeps him known
        live = LiveRecognizer.from_service(
            service, LiveConfig(threshold=-1.0, top_k=2, async_detect=False), refiner=refiner
        )
        results = [live.process(f) for f in frames[12:20]]
        assert all(r.faces and r.faces[0].person == "Lin-Manuel" for r in results)
        assert len(service.events()) == n_events  # live decisions write no event rows
        d = results[0].to_dict()
        assert d["faces"][0]["person"] == results[0].faces[0].person and "timings" in d
    finally:
        service.close()


class StepExecutor(Executor):
    """Runs each submitted job only when the test says so: a detection that takes as long as
    the test wants, with no thread and no clock (the same on a fast or a busy machine)."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Future, object, tuple]] = []
        self.submitted = 0
        self.shut = False

    def submit(self, fn, /, *args, **kwargs):
        future: Future = Future()
        self.jobs.append((future, fn, args))
        self.submitted += 1
        return future

    def run_pending(self) -> int:
        jobs, self.jobs = self.jobs, []
        for future, fn, args in jobs:
            future.set_result(fn(*args))
        return len(jobs)

    def shutdown(self, wait=True, *, cancel_futures=False) -> None:
        self.shut = True


@pytest.mark.parametrize("frames_per_detection", [1, 3])
def test_background_detection_never_blocks_a_frame(pipeline, singer_gallery, frames, refiner,
                                                     frames_per_detection):
    """A detection that takes one or three frame periods: every frame is processed while it
    is still running (process never waits for it, never detects itself), and its result is
    taken on the first frame after it finished."""
    shot = frames[:20]  # the first shot (a cut to a close-up follows)
    executor = StepExecutor()
    with LiveRecognizer(
        pipeline, matcher_for(singer_gallery, 0.0), LiveConfig(detect_every=5), refiner=refiner,
        executor=executor,
    ) as live:
        results = []
        finished_before: list[int] = []
        for i, f in enumerate(shot):
            detect_calls = pipeline.detect_calls
            results.append(live.process(f))
            assert pipeline.detect_calls == detect_calls  # the detector never ran inside process
            assert all(not fut.done() for fut, _, _ in executor.jobs)  # returned without waiting
            finished_before.append(0)
            if (i + 1) % frames_per_detection == 0:
                finished_before[-1] = executor.run_pending()  # "the detection finished"
        assert all(r.timings.detect_ms == 0.0 for r in results)
        # a result is used exactly on the frame after its detection finished
        for i in range(1, len(results)):
            assert results[i].detected == bool(finished_before[i - 1]), i
        assert executor.submitted >= 3 and pipeline.detect_calls == sum(finished_before)
        with_faces = [r for r in results if r.faces]
        assert len(with_faces) >= 5
        first = results.index(with_faces[0])
        assert first == next(i for i, r in enumerate(results) if r.detected)  # found at once
        assert all(r.faces for r in results[first:])  # once found, the singer stays tracked
        largest = [r.faces[0].track_id for r in with_faces]
        assert sum(a != b for a, b in itertools.pairwise(largest)) == 0
        assert sum(pipeline.embedded) < sum(len(r.faces) for r in results) / 3
        assert live.stats.new_face_latency_ms and min(live.stats.new_face_latency_ms) > 0
    assert live._pending is None and not executor.shut  # the caller's executor is left alone
