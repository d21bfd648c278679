"""Shared fixtures: the real data folder, one MTCNN detector, small real models on disk."""

from __future__ import annotations

from pathlib import Path

import pytest

TEST_PASSPHRASE = "correct horse battery staple (tests)"
CHEAP_KDF = "argon2id:m=256,t=1,p=1"


def pytest_configure(config: pytest.Config) -> None:
    """One torch thread: on a 2-core CI machine, torch's default of one thread per core makes
    the many small forward passes of the suite several times slower (thread hand-offs).

    Galleries are encrypted by default: the suite gives them a passphrase through the
    environment (inherited by the subprocesses some tests start), never the developer's OS
    keyring, and cheap Argon2id parameters for new key wraps (the defaults cost ~0.2 s and
    64 MiB per gallery; the code path is the same)."""
    import os

    import torch

    torch.set_num_threads(1)
    os.environ["FACEAPP_PASSPHRASE"] = TEST_PASSPHRASE
    os.environ["FACEAPP_EXPORT_PASSPHRASE"] = "export bundle passphrase (tests)"
    os.environ["FACEAPP_KDF"] = CHEAP_KDF
    os.environ["FACEAPP_KEYRING"] = "off"
    # client-side key files of server galleries (field encryption): never the user's own
    import tempfile

    os.environ["FACEAPP_KEY_DIR"] = tempfile.mkdtemp(prefix="faceapp-keys-")
    os.environ.pop("FACEAPP_NEW_PASSPHRASE", None)


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory: pytest.TempPathFactory):
    """Per-machine caches (the search backends' self-check verdicts) go to a temporary
    folder: the suite neither reads nor writes the user's ~/.cache/faceapp."""
    mp = pytest.MonkeyPatch()
    mp.setenv("FACEAPP_CACHE_DIR", str(tmp_path_factory.mktemp("faceapp-cache")))
    mp.delenv("FACEAPP_SEARCH_BACKEND", raising=False)
    yield
    mp.undo()


@pytest.fixture(autouse=True)
def _gui_thread_gc(request: pytest.FixtureRequest):
    """Qt tests run as the app does (faceapp.gui.gc_guard): cycles are collected on the GUI
    thread only, never by a worker thread that happens to allocate (which crashed the suite)."""
    if not {"qtbot", "qapp"} & set(request.fixturenames):
        yield
        return
    request.getfixturevalue("qapp")
    from faceapp.gui.gc_guard import GuiThreadCollector

    collector = GuiThreadCollector()
    collector.start()
    yield
    collector.stop()


REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
LFW = DATA / "lfw" / "lfw-deepfunneled"
HAMILTON = DATA / "face_videos" / "face_recognition_examples" / "short_hamilton_clip.mp4"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """../shared/data next to the checkout (real LFW, ORL, Yale, videos). Never copied."""
    if not (DATA / "lfw").is_dir():
        pytest.fail(f"real test data missing: {DATA} (expected ../shared/data beside the repo)")
    return DATA


@pytest.fixture(scope="session")
def lfw_dir(data_dir: Path) -> Path:
    return data_dir / "lfw" / "lfw-deepfunneled"


@pytest.fixture(scope="session")
def hamilton_clip(data_dir: Path) -> Path:
    return data_dir / "face_videos" / "face_recognition_examples" / "short_hamilton_clip.mp4"


@pytest.fixture(scope="session")
def detector():
    """One real MTCNN detector for the whole run (weights from the facenet-pytorch wheel)."""
    from faceapp.vision.detection import FaceDetector

    return FaceDetector()


@pytest.fixture(scope="session")
def small_model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small, randomly initialised (seeded) encoder saved as a real checkpoint file.

    64x64 input, D=32: fast enough for pipeline/gallery/GUI tests. Same weights every run.
    """
    from faceapp.nn.checkpoint import create_untrained_model, save_checkpoint
    from faceapp.nn.encoder import EncoderConfig

    model = create_untrained_model(
        EncoderConfig(input_size=64, embedding_dim=32, width=8, layers=(1, 1, 1, 1))
    )
    path = tmp_path_factory.mktemp("models") / "small.pt"
    save_checkpoint(path, model.encoder)
    return path


@pytest.fixture(scope="module")
def lfw_tree(lfw_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 identities of symlinked LFW images (``fakes.PEOPLE``), plus one faceless image."""
    from fakes import make_lfw_tree

    return make_lfw_tree(lfw_dir, tmp_path_factory.mktemp("lfw-tiny"))


@pytest.fixture(scope="session")
def pg_server():
    """A real throwaway PostgreSQL server (with pgvector) for the whole run; see postgres.py."""
    from postgres import start_or_skip

    server = start_or_skip()
    yield server
    server.close()


@pytest.fixture
def pg_url(pg_server) -> str:
    """URL of a new, empty database on the test PostgreSQL server."""
    return pg_server.new_database()


@pytest.fixture(scope="session")
def pg15_server():
    """Debian's PostgreSQL 15 without pgvector (the "extension absent" configuration)."""
    from postgres import DebianServer, start_or_skip

    server = start_or_skip(DebianServer)
    yield server
    server.close()


@pytest.fixture
def pg15_url(pg15_server) -> str:
    """URL of a new, empty database on the Debian PostgreSQL 15 server (no pgvector)."""
    return pg15_server.new_database()


@pytest.fixture(params=["sqlite", "postgresql", "postgresql15"])
def gallery_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new gallery URL on each back end: a SQLite file, a PostgreSQL 18 database with
    pgvector, a Debian PostgreSQL 15 database without it."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'g.sqlite'}"
    if request.param == "postgresql15":
        return request.getfixturevalue("pg15_url")
    return request.getfixturevalue("pg_url")


@pytest.fixture
def fake_cli(monkeypatch, tmp_path):
    """Commands open a FaceService over the stand-in pipeline; images are .npy files."""
    import numpy as np
    from fakes import FakePipeline, calibration_for, img

    from faceapp.cli import gallery_cmds
    from faceapp.gallery import open_database
    from faceapp.nn.scoring import CosineScorer
    from faceapp.services import FaceService

    pipeline = FakePipeline()

    def open_service(args, *, load_model=True):
        engine = open_database(args.db)
        if not load_model:
            return FaceService(engine, owns_engine=True)
        return FaceService(engine, pipeline, calibration_for(pipeline),
                           scorers={"distance": CosineScorer()}, owns_engine=True)

    monkeypatch.setattr(gallery_cmds, "_open_service", open_service)
    from faceapp.services import core as service_core

    monkeypatch.setattr(service_core, "load_image", lambda src: np.load(src))

    def save(name: str, *faces) -> str:
        path = tmp_path / f"{name}.npy"
        np.save(path, img(*faces))
        return str(path)

    return str(tmp_path / "cli.sqlite"), save
