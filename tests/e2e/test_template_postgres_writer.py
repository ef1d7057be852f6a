"""The effect node generated with PostgreSQL is a working writer out of the box.

Its own integration tests run against the real broker and PostgreSQL of the dev stack
(`onex-node dev up --postgres`): the start-up migration creates the table, a command becomes
exactly one row (a redelivered one too), and the reply names the row.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from onex_scaffold.devstack.testing import StackAddresses
from onex_scaffold.render import render_node

SERVICE = "e2e-pg-writer"
TABLE = "e2e_pg_writer_events"


@pytest.fixture(scope="module")
def writer(tmp_path_factory: pytest.TempPathFactory) -> Path:
    project = tmp_path_factory.mktemp("pg-writer") / SERVICE
    render_node(
        project,
        {
            "node_type": "effect",
            "node_name": "PostgresqlWriter",
            "service_name": SERVICE,
            "domain": "database",
            "use_postgres": True,
        },
        vcs_ref="HEAD",
    )
    return project


async def test_generated_writer_writes_one_row_per_command(
    writer: Path, stack: StackAddresses, database_url: str
) -> None:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["KAFKA_BOOTSTRAP_SERVERS"] = stack.kafka_bootstrap_servers
    env["DATABASE_URL"] = database_url
    command = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider"]
    result = await asyncio.to_thread(
        subprocess.run,
        [*command, "-p", "no:randomly"],
        cwd=writer,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "PASSED tests/test_integration.py::test_a_command_becomes_exactly_one_row" in output
    assert "SKIPPED" not in output, output

    # The table the start-up migration created: named after the service, unique per event id.
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        columns = await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = $1", TABLE
        )
        unique = await conn.fetchval(
            "SELECT count(*) FROM pg_indexes WHERE tablename = $1 AND indexdef LIKE $2",
            TABLE,
            "CREATE UNIQUE INDEX % (event_id)",
        )
    finally:
        await conn.close()
    assert {c["column_name"] for c in columns} == {
        "id",
        "event_id",
        "correlation_id",
        "action",
        "payload",
        "written_at",
    }
    assert unique == 1
