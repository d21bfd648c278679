"""The gallery on a real PostgreSQL server: schema, several processes at once, faults.

Every test here talks to the throwaway server of ``postgres.py`` (a real PostgreSQL with
pgvector, started once per run); the service tests of ``test_services.py`` also run on it
(their ``db_url`` fixture is parametrised over SQLite and PostgreSQL).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from fakes import img, make_service
from sqlalchemy import create_engine, text

from faceapp.errors import GalleryError
from faceapp.gallery import (
    SCHEMA_VERSION,
    GalleryRepository,
    NewTemplate,
    open_database,
    read_session,
    write_session,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX signals")

CHILD_PRELUDE = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from fakes import img, make_service
    from faceapp.errors import DuplicatePerson
    url = sys.argv[1]
    """
)


@pytest.fixture(params=["pg18-pgvector", "pg15-debian"])
def server(request: pytest.FixtureRequest):
    """Each test runs on both servers: PostgreSQL 18 with pgvector, Debian's 15 without."""
    return request.getfixturevalue("pg_server" if request.param == "pg18-pgvector"
                                   else "pg15_server")


@pytest.fixture
def pg_url(server) -> str:
    return server.new_database()


def run_child(body: str, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT), str(TESTS)]))
    return subprocess.Popen(
        [sys.executable, "-c", CHILD_PRELUDE + textwrap.dedent(body), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT,
    )


def raw(url: str, sql: str) -> list[tuple]:
    """Rows of ``sql`` read with a plain engine (no faceapp code in the way)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql)).fetchall()]
    finally:
        engine.dispose()


def people_and_templates(url: str) -> tuple[dict[str, int], int, int]:
    per = dict(raw(url, "SELECT p.name, count(t.id) FROM person p LEFT JOIN face_template t "
                        "ON t.person_id = p.id GROUP BY p.id"))
    n_t = raw(url, "SELECT count(*) FROM face_template")[0][0]
    n_c = raw(url, "SELECT count(*) FROM face_crop")[0][0]
    return per, n_t, n_c


def test_schema_is_created_on_the_server(pg_url):
    open_database(pg_url).dispose()
    tables = {r[0] for r in raw(pg_url, "SELECT tablename FROM pg_tables WHERE schemaname='public'")}
    assert {"person", "face_template", "face_crop", "event", "setting", "schema_info"} <= tables
    assert raw(pg_url, "SELECT version FROM schema_info") == [(SCHEMA_VERSION,)]
    # a second open finds its own schema and changes nothing
    before = raw(pg_url, "SELECT gallery_uuid, generation FROM schema_info")
    open_database(pg_url).dispose()
    assert raw(pg_url, "SELECT gallery_uuid, generation FROM schema_info") == before


def test_embeddings_round_trip_byte_exact(pg_url):
    engine = open_database(pg_url)
    rng = np.random.default_rng(3)
    embs = [rng.standard_normal(128).astype(np.float32) for _ in range(3)]
    try:
        with write_session(engine) as s:
            repo = GalleryRepository(s)
            person = repo.add_person("Ann")
            repo.add_templates(person, [NewTemplate("m", e, b"\x89PNG x", "a.jpg") for e in embs])
        with read_session(engine) as s:
            got = [t.embedding for t in GalleryRepository(s).get_person("Ann").templates]
    finally:
        engine.dispose()
    assert len(got) == 3
    for a, b in zip(embs, got, strict=True):
        assert a.tobytes() == np.asarray(b, dtype=np.float32).tobytes()


def test_newer_schema_on_the_server_is_refused_untouched(pg_url):
    open_database(pg_url).dispose()
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE schema_info SET version = :v"), {"v": SCHEMA_VERSION + 1})
    engine.dispose()
    with pytest.raises(GalleryError, match="newer faceapp"):
        open_database(pg_url)
    assert raw(pg_url, "SELECT version FROM schema_info") == [(SCHEMA_VERSION + 1,)]


def test_a_foreign_database_is_refused_untouched(pg_url):
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE invoices (id int)"))
    engine.dispose()
    with pytest.raises(GalleryError, match="not a faceapp gallery"):
        open_database(pg_url)
    tables = {r[0] for r in raw(pg_url, "SELECT tablename FROM pg_tables WHERE schemaname='public'")}
    assert tables == {"invoices"}


def test_unreachable_server_gives_one_clear_error(tmp_path):
    url = f"postgresql+psycopg://nobody@/nodb?host={tmp_path}"
    with pytest.raises(GalleryError, match="cannot reach the database server"):
        open_database(url)


def test_the_same_name_from_three_desktops_gives_one_person(pg_url):
    """The unique constraint decides, not a read-then-write race: one process creates the
    person, the others' enrolments are added to that same person."""
    make_service(pg_url).close()  # schema in place before the race
    body = """
        start_at = float(sys.argv[2])
        svc = make_service(url)
        time.sleep(max(0.0, start_at - time.time()))
        try:
            svc.enroll("Ann", [img((1, int(sys.argv[3])))])
            print("ENROLLED", flush=True)
        except DuplicatePerson as err:
            print("DUPLICATE", flush=True)
        finally:
            svc.close()
        """
    start_at = str(time.time() + 2.0)
    children = [run_child(body, pg_url, start_at, str(v)) for v in (0, 1, 2)]
    outs = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        outs.append(out.strip())
    assert outs == ["ENROLLED"] * 3
    per, n_t, _ = people_and_templates(pg_url)
    assert per == {"Ann": 3} and n_t == 3


def test_two_writers_and_a_reader_on_one_server(pg_url):
    """Two desktops enrol, rename and delete while a third recognizes; nothing is lost,
    and each process sees the others' changes on its next call."""
    make_service(pg_url).close()
    writer = """
        tag, person_base, start_at = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
        svc = make_service(url)
        time.sleep(max(0.0, start_at - time.time()))
        for i in range(8):
            svc.enroll(f"{tag}{i}", [img((person_base + i, 0)), img((person_base + i, 1))])
        svc.rename_person(f"{tag}0", f"{tag}-renamed")
        svc.delete_person(f"{tag}7")
        svc.close()
        print("DONE", flush=True)
        """
    reader = """
        start_at = float(sys.argv[2])
        svc = make_service(url)
        time.sleep(max(0.0, start_at - time.time()))
        seen = set()
        deadline = time.time() + 60
        while time.time() < deadline and not {"a3", "b3"} <= seen:
            for face in svc.recognize(img((13, 5))) + svc.recognize(img((23, 5))):
                if face.person:
                    seen.add(face.person)
            time.sleep(0.05)
        svc.close()
        print(",".join(sorted(seen)), flush=True)
        """
    start_at = str(time.time() + 2.5)
    kids = [run_child(writer, pg_url, "a", "10", start_at),
            run_child(writer, pg_url, "b", "20", start_at),
            run_child(reader, pg_url, start_at)]
    outs = []
    for child in kids:
        out, err = child.communicate(timeout=180)
        assert child.returncode == 0, err
        outs.append(out.strip())
    assert outs[:2] == ["DONE", "DONE"]
    assert {"a3", "b3"} <= set(outs[2].split(","))  # the reader saw both writers' people
    per, n_t, n_c = people_and_templates(pg_url)
    expected = {f"{t}{i}" for t in "ab" for i in range(1, 7)} | {"a-renamed", "b-renamed"}
    assert set(per) == expected and set(per.values()) == {2}
    assert n_t == n_c == 2 * len(expected)
    # a fresh desktop agrees, including the deletions and renames
    svc = make_service(pg_url)
    try:
        assert svc.recognize(img((10, 3)))[0].person == "a-renamed"
        assert svc.recognize(img((17, 3)))[0].person is None  # a7 was deleted
        assert svc.recognize(img((27, 3)))[0].person is None  # b7 was deleted
    finally:
        svc.close()


def test_deletion_reaches_another_desktop_before_its_next_recognize(pg_url):
    a, b = make_service(pg_url), make_service(pg_url)
    try:
        a.enroll("Ann", [img((1, 0))])
        assert b.recognize(img((1, 1)))[0].person == "Ann"  # b has Ann in its index now
        a.delete_person("Ann")
        assert b.recognize(img((1, 1)))[0].person is None
    finally:
        a.close()
        b.close()


def test_a_killed_enrolment_leaves_no_half_written_person(pg_url):
    make_service(pg_url).close()
    child = run_child(
        """
        from faceapp.gallery import GalleryRepository, NewTemplate, open_database, write_session
        engine = open_database(url)
        with write_session(engine) as s:
            repo = GalleryRepository(s)
            person = repo.add_person("Victim")
            repo.add_templates(person, [NewTemplate("m", np.ones(128), b"x" * 1000)])
            s.flush()
            print("MID", flush=True)
            time.sleep(60)
        """,
        pg_url,
    )
    try:
        assert child.stdout.readline().strip() == "MID", child.stderr.read()
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    # the server notices the dead client and rolls its transaction back
    deadline = time.time() + 20
    while time.time() < deadline and raw(pg_url, "SELECT count(*) FROM pg_stat_activity "
                                                 "WHERE state LIKE 'idle in transaction%'")[0][0]:
        time.sleep(0.1)
    assert people_and_templates(pg_url) == ({}, 0, 0)


def test_a_transaction_cut_by_the_server_leaves_nothing(server, pg_url):
    """The server kills the enrolling backend half way: the caller gets a GalleryError,
    the gallery holds no trace of the person, and the next enrolment works."""
    svc = make_service(pg_url)
    try:
        engine = svc.engine
        with pytest.raises(GalleryError), write_session(engine) as s:
            repo = GalleryRepository(s)
            person = repo.add_person("Half")
            repo.add_templates(person, [NewTemplate("m", np.ones(128), b"x")])
            s.flush()
            pid = s.execute(text("SELECT pg_backend_pid()")).scalar()
            server.psql(f"SELECT pg_terminate_backend({pid});")
            try:
                s.execute(text("SELECT 1"))
            except Exception as err:  # the driver's error, turned into GalleryError below
                from faceapp.gallery.database import translate_errors

                with translate_errors("enrol"):
                    raise err
        assert people_and_templates(pg_url) == ({}, 0, 0)
        svc.enroll("Whole", [img((2, 0))])
        assert svc.recognize(img((2, 1)))[0].person == "Whole"
    finally:
        svc.close()


def test_recognize_carries_on_after_a_server_restart(server, pg_url):
    svc = make_service(pg_url)
    try:
        svc.enroll("Ann", [img((1, 0))])
        assert svc.recognize(img((1, 1)))[0].person == "Ann"
        server.restart()
        # stale pooled connections are replaced (pre-ping): the next call just works
        assert svc.recognize(img((1, 1)))[0].person == "Ann"
        svc.enroll("Bob", [img((2, 0))])
        assert svc.recognize(img((2, 1)))[0].person == "Bob"
    finally:
        svc.close()


def test_a_read_unit_is_one_snapshot_on_the_server(pg_url):
    """Counts and rows of one read unit agree even while another desktop commits."""
    engine = open_database(pg_url)
    other = open_database(pg_url)
    try:
        with read_session(engine) as s:
            level = s.execute(text("SHOW transaction_isolation")).scalar()
            before = s.execute(text("SELECT count(*) FROM person")).scalar()
            with write_session(other) as w:
                GalleryRepository(w).add_person("Newcomer")
            after = s.execute(text("SELECT count(*) FROM person")).scalar()
        assert level == "repeatable read"
        assert before == after == 0
        with read_session(engine) as s:
            assert s.execute(text("SELECT count(*) FROM person")).scalar() == 1
    finally:
        engine.dispose()
        other.dispose()


def test_live_matching_answers_from_memory_while_the_server_is_down(server, pg_url):
    """The live loop's matcher does no database round trip per batch: while the server is
    down it keeps answering from the in-memory index; its background generation check
    reports the outage (one clear reason), and once the server is back a person enrolled
    from another desktop is recognised without restarting the loop."""
    import time

    from fakes import FakePipeline

    from faceapp.services.live import CacheMatcher

    def poll(check, what: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.05)

    pipeline = FakePipeline()
    svc = make_service(pg_url, pipeline)
    other = make_service(pg_url, FakePipeline())
    matcher = CacheMatcher(svc, refresh_s=0.0)
    try:
        svc.enroll("Ann", [img((1, 0))])
        ann = pipeline.analyze(img((1, 2)))
        bob = pipeline.analyze(img((2, 2)))
        assert matcher.match(ann)[0].person == "Ann"
        server.stop()
        try:
            for _ in range(3):  # every batch while it is down: answered from memory
                assert matcher.match(ann)[0].person == "Ann"
            poll(lambda: matcher.match(ann)[0].person == "Ann"
                 and "cannot reach the database server" in matcher.problem, "the outage report")
        finally:
            server.start()
        other.enroll("Bob", [img((2, 0))])  # another desktop, after the restart
        poll(lambda: matcher.match(bob)[0].person == "Bob", "Bob from the other desktop")
        assert matcher.problem == ""
        assert matcher.take_changes()  # the recognizer then decides its tracks again
    finally:
        matcher.close()
        other.close()
        svc.close()
