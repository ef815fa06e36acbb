"""PostgreSQL for the distributed-storage tests: a throwaway server per session, a database per test."""

from __future__ import annotations

import os

import pytest

from tests.pgserver import PgServer, fresh_database, server_bindir, throwaway_postgres


@pytest.fixture(scope="session")
def postgres_server():
    bindir = server_bindir()
    if bindir is None:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL server binaries (initdb, pg_ctl) not found: CI must run the PostgreSQL tests")
        pytest.skip("no PostgreSQL server binaries (initdb) on this machine; run scripts/ensure-package.sh (see the Makefile)")
    with throwaway_postgres(bindir) as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PgServer) -> str:
    """A fresh database on the throwaway server, so no test sees another's cache."""
    return fresh_database(postgres_server.url)
