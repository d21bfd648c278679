"""A liveness session fed with the live loop's tracked faces (the GUI's Verify page: one
face follower for the page), on real frames of the Hamilton clip."""

from __future__ import annotations

import pytest

from faceapp.liveness.model import PassiveModel
from faceapp.liveness.session import LivenessSession
from faceapp.nn.checkpoint import load_checkpoint
from faceapp.nn.pipeline import FacePipeline
from faceapp.services.live import LandmarkRefiner, LiveConfig, LiveRecognizer
from faceapp.services.liveness import tracked_faces
from faceapp.vision.liveness import Action
from faceapp.vision.video import read_video_frames


@pytest.fixture(scope="module")
def frames(hamilton_clip):
    return read_video_frames(hamilton_clip, max_frames=40)


def test_the_session_takes_the_live_loops_faces(frames, detector, small_model_path) -> None:
    pipeline = FacePipeline(detector, load_checkpoint(small_model_path))
    loop = LiveRecognizer(pipeline, None, LiveConfig(detect_every=5, async_detect=False),
                          refiner=LandmarkRefiner.create())
    model = PassiveModel.load()
    session = LivenessSession(model, None, (Action.TURN_LEFT,))
    with pytest.raises(ValueError, match="tracked faces"):
        session.process(frames[0], 0.0)  # no follower of its own: the caller's faces are needed
    assert session.frames == 0
    subjects = []
    for i, frame in enumerate(frames):
        live = loop.process(frame)
        faces = tracked_faces(live)
        assert [t for t, _ in faces] == [f.track_id for f in live.faces]
        step = session.process(frame, i / 30.0, faces)
        assert step.index == i + 1 and step.challenge is not None
        if live.faces:
            assert step.box == live.faces[0].box  # the largest tracked face is the subject
            subjects.append(live.faces[0].track_id)
        else:
            assert step.box is None
    assert len(subjects) >= 0.8 * len(frames)
    # cues sampled on the subject's frames, under the loop's track ids
    assert len(session.collector) >= len(subjects) // model.cue_every - 1
    assert set(session.collector.tracks) <= set(subjects)
    assert session.window_scores()  # at least one window of the subject
    loop.close()
