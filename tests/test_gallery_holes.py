"""The gallery's validation holes found on a throwaway DB (issue 10), one test each: import
validates every template and refuses the whole file, naming the person and template, with
nothing written; import is size-capped; reembed names a template it must skip and goes on;
an adopted empty --db file and the crops that `people show --crops` writes are private;
a read-only gallery can be listed and searched; verify on a photo with several faces needs
a choice; concurrent big imports all succeed."""

from __future__ import annotations

import base64
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from fakes import DIM, FakePipeline, calibration_for, enroll_three, img, make_service

from faceapp.cli import main
from faceapp.errors import GalleryError, MultipleFaces
from faceapp.gallery import GalleryRepository, NewTemplate, database, open_database, write_session
from faceapp.gallery.bundle import seal_bundle
from faceapp.gallery.database import (
    DatabaseConfig,
    classify_gallery_file,
    gallery_key,
    key_literal,
    sqlcipher_dbapi,
)
from faceapp.gallery.keys import KdfParams
from faceapp.nn.scoring import CosineScorer
from faceapp.services import EXPORT_FORMAT, EXPORT_VERSION, FaceService
from faceapp.vision.images import encode_png

PASSPHRASE = os.environ.get("FACEAPP_EXPORT_PASSPHRASE", "export bundle passphrase (tests)")

MODEL = FakePipeline().model_id  # "fake-model-1", D = 16


def unit(d: int, seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(d)
    return (v / np.linalg.norm(v)).astype("<f4")


def png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A PNG that claims 30000 x 30000 pixels in a few dozen bytes (header + one IDAT)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def good_crop() -> bytes:
    return encode_png(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8))


def template(seed: int = 0, **override) -> dict:
    t = {"model_id": MODEL, "dim": DIM,
         "embedding": base64.b64encode(unit(DIM, seed).tobytes()).decode("ascii"),
         "crop_png": base64.b64encode(good_crop()).decode("ascii"),
         "source": f"photo_{seed}.jpg", "quality": {"ok": True, "sharpness": 80.0},
         "created": "2024-01-02T03:04:05"}
    t.update(override)
    return t


def export(tmp_path: Path, people: list[dict], name: str = "g.json") -> Path:
    path = tmp_path / name
    doc = json.dumps({"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "people": people})
    # sealed as `people export` seals it: the validation below runs on the opened bundle
    path.write_bytes(seal_bundle(doc.encode("utf-8"), PASSPHRASE, KdfParams.from_env()))
    return path


def b64(x: bytes) -> str:
    return base64.b64encode(x).decode("ascii")


@pytest.fixture
def svc(tmp_path):
    s = make_service(f"sqlite:///{tmp_path / 'g.sqlite'}")
    yield s
    s.close()


def counts(svc: FaceService) -> tuple[list[str], int]:
    people = svc.list_people()
    return [p.name for p in people], sum(p.n_templates for p in people)


BAD = {
    "dimension of the model": (dict(dim=8, embedding=b64(unit(8, 1).tobytes())),
                               "8-dimensional embedding, but templates of model 'fake-model-1' have 16"),
    "not finite": (dict(embedding=b64(np.full(DIM, np.nan, "<f4").tobytes())), "non-finite"),
    "not unit norm": (dict(embedding=b64((2 * unit(DIM, 2)).astype("<f4").tobytes())), "norm is 2"),
    "model id too long": (dict(model_id="m" * 65), "is not 1-64 letters"),
    "model id with a path": (dict(model_id="../../etc"), "is not 1-64 letters"),
    "bytes vs dim": (dict(dim=17), "expected 68 for dimension 17"),
    "1 MB quality": (dict(quality={"x": "q" * 1_000_000}), "quality is larger than 4096 bytes"),
    "quality not an object": (dict(quality=[1, 2]), "quality must be an object"),
    "long source": (dict(source="s" * 10_000), "source must be text of at most 500"),
    "PNG bomb crop": (dict(crop_png=b64(png_bomb())), "image is too large"),
    "crop not decodable": (dict(crop_png=b64(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)), "crop cannot be used"),
    "crop not a PNG": (dict(crop_png=b64(b"GIF89a....")), "crop is not a PNG"),
    "bad created": (dict(created="yesterday"), "is not an ISO date-time"),
    "embedding not base64": (dict(embedding="@@@"), "embedding is not valid base64"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_import_refuses_the_whole_file_naming_person_and_template(svc, tmp_path, case):
    enroll_three(svc)
    before = counts(svc)
    override, reason = BAD[case]
    path = export(tmp_path, [
        {"name": "Dee", "templates": [template(10)]},
        {"name": "Eve", "templates": [template(11), template(12, **override)]},
    ])
    with pytest.raises(GalleryError) as info:
        svc.import_gallery(path, passphrase=PASSPHRASE)
    msg = str(info.value)
    assert "person 'Eve', template 2" in msg and reason in msg, msg
    assert "nothing was imported" in msg
    assert counts(svc) == before  # nothing written, not even Dee


def test_import_refuses_a_person_without_templates(svc, tmp_path):
    path = export(tmp_path, [{"name": "Dee", "templates": [template(1)]},
                             {"name": "Eve", "templates": []}])
    with pytest.raises(GalleryError, match="person 'Eve' has no templates"):
        svc.import_gallery(path, passphrase=PASSPHRASE)
    assert counts(svc) == ([], 0)


def test_a_refused_import_leaves_recognition_working(svc, tmp_path):
    """The probe: a 16-d model's gallery took an 8-d template tagged with its model id, and
    every recognize then failed with 'templates of model ... have several dimensions'."""
    enroll_three(svc)
    path = export(tmp_path, [{"name": "Mallory", "templates": [
        template(1, dim=8, embedding=b64(unit(8, 1).tobytes()))]}])
    with pytest.raises(GalleryError, match="person 'Mallory', template 1"):
        svc.import_gallery(path, passphrase=PASSPHRASE)
    (face,) = svc.recognize(img((2, 7)))
    assert face.person == "Bob"


def test_import_checks_dimensions_against_the_gallery_without_a_model(tmp_path):
    url = f"sqlite:///{tmp_path / 'g.sqlite'}"
    with make_service(url) as s:
        enroll_three(s)  # 16-d templates of fake-model-1
    with FaceService(open_database(url), owns_engine=True) as gallery_only:
        path = export(tmp_path, [{"name": "Zed", "templates": [
            template(1, dim=8, embedding=b64(unit(8, 1).tobytes()))]}])
        with pytest.raises(GalleryError, match="have 16 dimensions"):
            gallery_only.import_gallery(path, passphrase=PASSPHRASE)
        mixed = export(tmp_path, [{"name": "Zed", "templates": [
            template(1, model_id="other"),
            template(2, model_id="other", dim=8, embedding=b64(unit(8, 2).tobytes()))]}], "m.json")
        with pytest.raises(GalleryError, match=r"person 'Zed', template 2.*'other' have 16"):
            gallery_only.import_gallery(mixed, passphrase=PASSPHRASE)
        ok = export(tmp_path, [{"name": "Zed", "templates": [template(3, model_id="other")]}], "ok.json")
        assert gallery_only.import_gallery(ok, passphrase=PASSPHRASE).templates == 1


def test_import_is_size_capped(svc, tmp_path):
    path = export(tmp_path, [{"name": "Dee", "templates": [template(1)]}])
    with pytest.raises(GalleryError, match=r"above the import limit of 0 MiB"):
        svc.import_gallery(path, passphrase=PASSPHRASE, max_bytes=100)
    assert counts(svc) == ([], 0)
    # the default limit (512 MiB) takes it
    assert svc.import_gallery(path, passphrase=PASSPHRASE).templates == 1


def test_reembed_names_the_template_it_skips_and_carries_on(svc):
    with write_session(svc.engine) as s:
        repo = GalleryRepository(s)
        ann = repo.add_person("Ann")
        bad, good = repo.add_templates(ann, [
            NewTemplate("old-model", unit(8, 1), crop_png=png_bomb(), source="bomb.png"),
            NewTemplate("old-model", unit(8, 2), crop_png=good_crop(), source="fine.png"),
        ])
    with pytest.raises(GalleryError) as info:
        svc.reembed()
    msg = str(info.value)
    assert f"template {bad} of 'Ann'" in msg and "image is too large" in msg, msg
    assert "recomputed 1 of 2" in msg
    (t_bad, t_good) = sorted(svc.person_templates("Ann"), key=lambda t: t.id)
    assert (t_bad.id, t_bad.model_id) == (bad, "old-model")
    assert (t_good.id, t_good.model_id) == (good, MODEL)  # the rest went on


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_an_adopted_empty_db_file_and_its_journal_become_private(tmp_path):
    path = tmp_path / "empty.sqlite"
    path.write_bytes(b"")
    os.chmod(path, 0o644)
    engine = open_database(str(path))
    try:
        with write_session(engine) as s:
            GalleryRepository(s).add_person("Ann")
        with engine.connect() as conn:  # keep a connection: -wal and -shm exist meanwhile
            conn.exec_driver_sql("SELECT count(*) FROM person").scalar()
            journal = [p for p in (Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]
            assert journal
            assert {p.name: _mode(p) for p in journal} == {p.name: 0o600 for p in journal}
    finally:
        engine.dispose()
    assert _mode(path) == 0o600


def test_people_show_crops_are_written_private(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'g.sqlite'}"
    with make_service(url) as s:
        enroll_three(s)
    old = os.umask(0o022)
    try:
        out = tmp_path / "new" / "crops"
        assert main(["people", "show", "Ann", "--db", url, "--crops", str(out)]) == 0
    finally:
        os.umask(old)
    files = sorted(out.glob("*.png"))
    assert len(files) == 2 and {_mode(f) for f in files} == {0o600}
    assert _mode(out) == 0o700


# ---------------------------------------------------------------------- read-only


def _gallery_with_three(path: Path) -> str:
    url = f"sqlite:///{path}"
    with make_service(url) as s:
        enroll_three(s)
    return url


def test_a_read_only_gallery_can_be_listed_recognized_and_verified(tmp_path):
    url = _gallery_with_three(tmp_path / "g.sqlite")
    pipeline = FakePipeline()
    engine = open_database(url, DatabaseConfig(read_only=True))
    assert database.is_read_only(engine)
    with FaceService(engine, pipeline, calibration_for(pipeline),
                     scorers={"distance": CosineScorer()}, owns_engine=True) as ro:
        assert [p.name for p in ro.list_people()] == ["Ann", "Bob", "Cid"]
        (face,) = ro.recognize(img((3, 9)))
        assert face.person == "Cid"
        assert ro.verify("Ann", img((1, 9))).match
        with pytest.raises(GalleryError, match="read-only"):
            ro.rename_person("Ann", "Anna")
        with pytest.raises(GalleryError, match="read-only"):
            ro.enroll("Dee", [img((4, 0))])
    with make_service(url) as rw:  # nothing was written: no events of the read-only use
        assert [e["kind"] for e in rw.events(limit=100)].count("recognize") == 0
        assert [p.name for p in rw.list_people()] == ["Ann", "Bob", "Cid"]


def _as_nobody() -> list[str] | None:
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        return None
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def test_a_gallery_in_a_read_only_folder_can_be_listed(tmp_path):
    """A real read-only folder (as an unprivileged user when the tests run as root): SQLite
    cannot make the -shm file there; listing works, a write says read-only."""
    prefix = _as_nobody()
    if prefix is None:
        pytest.skip("running as root without setpriv: no unprivileged user to try")
    top = Path(tempfile.mkdtemp(prefix="faceapp-ro-"))
    try:
        os.chmod(top, 0o755)
        folder = top / "ro"
        folder.mkdir()
        db = folder / "g.sqlite"
        _gallery_with_three(db)
        assert not Path(f"{db}-wal").exists()
        os.chmod(db, 0o444)
        keys = Path(f"{db}.keys")  # the encrypted gallery's wrapped key, readable by that user
        os.chmod(keys, 0o444)
        os.chmod(folder, 0o555)
        # that user unlocks the gallery with the same passphrase (no keyring, cheap KDF)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FACEAPP_")
               or k in ("FACEAPP_PASSPHRASE", "FACEAPP_KDF", "FACEAPP_KEYRING")}
        env["HOME"] = str(top)
        if prefix:  # can the unprivileged user run this checkout's Python at all?
            probe = subprocess.run([*prefix, sys.executable, "-c", "import faceapp.cli"],
                                   capture_output=True, text=True, env=env, timeout=120)
            if probe.returncode != 0:
                pytest.skip(f"the unprivileged user cannot run this checkout: {probe.stderr[-200:]}")
        base = [*prefix, sys.executable, "-m", "faceapp"]
        listed = subprocess.run([*base, "people", "list", "--db", str(db), "--json"],
                                capture_output=True, text=True, env=env, timeout=120)
        assert listed.returncode == 0, listed.stderr
        assert [p["name"] for p in json.loads(listed.stdout)] == ["Ann", "Bob", "Cid"]
        renamed = subprocess.run([*base, "people", "rename", "Ann", "Anna", "--db", str(db)],
                                 capture_output=True, text=True, env=env, timeout=120)
        assert renamed.returncode == 2 and "read-only" in renamed.stderr, renamed.stderr
        # nothing made there
        assert sorted(p.name for p in folder.iterdir()) == ["g.sqlite", "g.sqlite.keys"]
    finally:
        os.chmod(top / "ro", 0o755)
        shutil.rmtree(top)


# ---------------------------------------------------------------------- verify, CLI




def test_cli_verify_with_several_faces_needs_largest_or_face(fake_cli, capsys):
    db, save = fake_cli
    assert main(["enroll", "Bob", save("b0", (2, 0)), "--db", db]) == 0
    two = save("two", (1, 3, 0, 40), (2, 3, 0, 120))  # a small Ann, a large Bob
    capsys.readouterr()
    assert main(["verify", "Ann", two, "--db", db]) == 2
    err = capsys.readouterr().err
    assert "2 faces found" in err and "--largest or --face N" in err
    assert main(["verify", "Bob", two, "--db", db, "--largest", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["match"] is True and (out["faces_found"], out["face"]) == (2, 2)
    assert main(["verify", "Bob", two, "--db", db, "--face", "1"]) == 1
    text = capsys.readouterr().out
    assert text.startswith("NO MATCH") and "(face 1 of 2)" in text
    with pytest.raises(SystemExit):
        main(["verify", "Bob", two, "--db", db, "--face", "0"])
    with pytest.raises(SystemExit):
        main(["verify", "Bob", two, "--db", db, "--face", "1", "--largest"])


def test_service_verify_raises_multiple_faces(svc):
    enroll_three(svc)
    with pytest.raises(MultipleFaces):
        svc.verify("Ann", img((1, 3), (2, 3)))


# ---------------------------------------------------------------------- concurrent imports


def _big_export(tmp_path: Path, tag: str, people: int, per_person: int) -> Path:
    out = []
    for i in range(people):
        out.append({"name": f"{tag} {i:04d}", "templates": [
            template(i * per_person + j, crop_png=None) for j in range(per_person)]})
    return export(tmp_path, out, f"{tag}.json")


def test_import_waits_for_a_writer_that_holds_the_lock(tmp_path):
    """Another process holds the write lock longer than the busy timeout: the import
    retries with back-off instead of failing with 'locked ... try again'."""
    db = tmp_path / "g.sqlite"
    open_database(str(db)).dispose()
    path = _big_export(tmp_path, "late", 5, 2)
    # another program holding the key, through SQLCipher's SQLite (one SQLite library per
    # process: the stdlib's would not see SQLCipher's locks)
    key = gallery_key(db) if classify_gallery_file(db, create=False) == "encrypted" else b""
    holder = sqlcipher_dbapi().connect(str(db), isolation_level=None, check_same_thread=False)
    if key:
        holder.execute(f"PRAGMA key = {key_literal(key)}")
    holder.execute("BEGIN IMMEDIATE")
    released: list[float] = []

    def release() -> None:
        released.append(time.monotonic())  # before COMMIT: no import can finish earlier
        holder.execute("COMMIT")

    timer = threading.Timer(1.0, release)
    timer.start()
    try:
        with FaceService(open_database(str(db), DatabaseConfig(busy_timeout_s=0.1)),
                         owns_engine=True) as s:
            done = s.import_gallery(path, passphrase=PASSPHRASE)
            finished = time.monotonic()
            assert released and finished > released[0]  # it waited for the other writer
            assert (done.people, done.templates) == (5, 10)
    finally:
        timer.join()
        holder.close()


def test_three_concurrent_big_imports_all_succeed(tmp_path):
    db = tmp_path / "g.sqlite"
    open_database(str(db)).dispose()
    files = [_big_export(tmp_path, tag, 250, 4) for tag in ("a", "b", "c")]
    results: dict[str, object] = {}

    def run(path: Path) -> None:
        try:
            with FaceService(open_database(str(db), DatabaseConfig(busy_timeout_s=0.05)),
                             owns_engine=True) as s:
                results[path.stem] = s.import_gallery(path, passphrase=PASSPHRASE)
        except Exception as err:  # recorded, asserted below
            results[path.stem] = err

    threads = [threading.Thread(target=run, args=(f,)) for f in files]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert all(not isinstance(r, Exception) for r in results.values()), results
    with FaceService(open_database(str(db)), owns_engine=True) as s:
        people = s.list_people()
    assert len(people) == 750 and sum(p.n_templates for p in people) == 3000


@pytest.mark.parametrize("bad", ["0", "-3", "1", "8193", "12.5", "many"])
def test_train_refuses_an_unusable_dim(bad, capsys, tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["train", str(tmp_path), "--out", str(tmp_path / "m.pt"), "--dim", bad])
    assert info.value.code == 2 and "--dim" in capsys.readouterr().err
