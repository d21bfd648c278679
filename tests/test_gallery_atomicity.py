"""Atomicity and concurrency of the SQLite gallery across real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from fakes import raw_connect

from faceapp.gallery import integrity_check, open_database

REPO_ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs POSIX signals")

CHILD_PRELUDE = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    from faceapp.gallery import GalleryRepository, NewTemplate, open_database, write_session
    engine = open_database(sys.argv[1])
    rng = np.random.default_rng(int(sys.argv[2]) if len(sys.argv) > 2 else 0)

    def enroll(name, n=3, pause=0.0):
        with write_session(engine) as s:
            repo = GalleryRepository(s)
            person = repo.add_person(name)
            for i in range(n):
                repo.add_templates(person, [NewTemplate(
                    "model-a", rng.standard_normal(128).astype(np.float32),
                    rng.bytes(20_000), f"{name}_{i}.jpg")])
                if pause:
                    time.sleep(pause)
    """
)


def run_child(body: str, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    return subprocess.Popen(
        [sys.executable, "-c", CHILD_PRELUDE + textwrap.dedent(body), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )


def counts(path: Path) -> tuple[dict[str, int], int, int]:
    """({name: n templates}, n templates, n crops) read with a plain DB-API connection."""
    con = raw_connect(path)
    try:
        per = dict(con.execute(
            "SELECT p.name, count(t.id) FROM person p LEFT JOIN face_template t "
            "ON t.person_id = p.id GROUP BY p.id").fetchall())
        n_t = con.execute("SELECT count(*) FROM face_template").fetchone()[0]
        n_c = con.execute("SELECT count(*) FROM face_crop").fetchone()[0]
        return per, n_t, n_c
    finally:
        con.close()


def check_integrity(path: Path) -> None:
    engine = open_database(str(path))
    try:
        assert integrity_check(engine) == "ok"
    finally:
        engine.dispose()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "gallery.sqlite"
    open_database(str(path)).dispose()
    return path


def test_sigkill_in_the_middle_of_an_enrolment_leaves_nothing(db_path):
    child = run_child(
        """
        enroll("Keeper")
        with write_session(engine) as s:
            repo = GalleryRepository(s)
            person = repo.add_person("Victim")
            repo.add_templates(person, [NewTemplate("model-a", np.ones(128), b"x" * 1000)])
            s.flush()
            print("MID", flush=True)
            time.sleep(60)
            repo.add_templates(person, [NewTemplate("model-a", np.ones(128), b"y")])
        """,
        str(db_path),
    )
    try:
        line = child.stdout.readline()
        assert line.strip() == "MID", child.stderr.read()
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    per, n_t, n_c = counts(db_path)
    assert per == {"Keeper": 3}
    assert (n_t, n_c) == (3, 3)
    check_integrity(db_path)


def test_sigkill_at_a_random_moment_is_all_or_nothing(db_path):
    child = run_child(
        """
        i = 0
        while True:
            enroll(f"p{i:05d}", n=4, pause=0.002)
            if i == 0:
                print("GO", flush=True)
            i += 1
        """,
        str(db_path),
    )
    try:
        assert child.stdout.readline().strip() == "GO", child.stderr.read()
        time.sleep(0.4)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    per, n_t, n_c = counts(db_path)
    assert len(per) >= 1
    assert set(per.values()) == {4}, per
    assert n_t == n_c == 4 * len(per)
    check_integrity(db_path)


def test_two_processes_enrolling_at_once_lose_nothing(db_path):
    body = """
        tag, start_at = sys.argv[3], float(sys.argv[4])
        time.sleep(max(0.0, start_at - time.time()))  # both start writing together
        for i in range(12):
            enroll(f"{tag}{i:03d}", n=3, pause=0.002)
        print("DONE", flush=True)
        """
    start_at = str(time.time() + 2.5)
    children = [run_child(body, str(db_path), str(seed), tag, start_at)
                for seed, tag in ((1, "a"), (2, "b"))]
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        assert out.strip() == "DONE"
    per, n_t, n_c = counts(db_path)
    assert sorted(per) == sorted([f"a{i:03d}" for i in range(12)] +
                                 [f"b{i:03d}" for i in range(12)])
    assert set(per.values()) == {3}
    assert n_t == n_c == 72
    check_integrity(db_path)
