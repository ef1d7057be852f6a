"""Fixtures for every end-to-end test: the addresses of the real local stack.

`stack` reads KAFKA_BOOTSTRAP_SERVERS, CONSUL_HTTP_ADDR and DATABASE_URL from the environment or
else from `.onex-dev/env` written by `onex-node dev up` (in $ONEX_DEV_ROOT or the repository
root), and probes each for real. With ONEX_E2E_REQUIRED=1 (set by `nox -s e2e` and CI) a missing
or silent service FAILS the test; otherwise the test is skipped with the reason.

Every test collected under tests/e2e/ is marked `e2e`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import dev_root, unavailable

from onex_scaffold.devstack.testing import StackAddresses, StackUnavailable, read_stack_addresses

E2E_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def stack() -> StackAddresses:
    """The live stack (Kafka metadata and Consul leader checked once per session)."""
    try:
        return read_stack_addresses(dev_root())
    except StackUnavailable as error:
        unavailable(str(error))


@pytest.fixture(scope="session")
def database_url(stack: StackAddresses) -> str:
    """DATABASE_URL of the live PostgreSQL (`onex-node dev up --postgres`), answering SELECT 1."""
    if stack.database_url is None:
        unavailable(f"no answering DATABASE_URL in the environment or {stack.source}")
    return stack.database_url
