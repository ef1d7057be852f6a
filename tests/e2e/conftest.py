"""Fixtures for every end-to-end test: the addresses of the real local stack.

`stack` reads KAFKA_BOOTSTRAP_SERVERS, CONSUL_HTTP_ADDR and DATABASE_URL from the environment or
else from `.onex-dev/env` written by `onex-node dev up` (in $ONEX_DEV_ROOT or the repository
root), and probes each for real. With ONEX_E2E_REQUIRED=1 (set by `nox -s e2e` and CI) a missing
or silent service FAILS the test; otherwise the test is skipped with the reason.

Every test collected under tests/e2e/ is marked `e2e`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

from onex_scaffold.devstack.testing import StackAddresses, StackUnavailable, read_stack_addresses

REPO_ROOT = Path(__file__).resolve().parents[2]
E2E_DIR = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if E2E_DIR in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.e2e)


def e2e_required() -> bool:
    return os.environ.get("ONEX_E2E_REQUIRED") == "1"


def unavailable(reason: str) -> NoReturn:
    """Fail (ONEX_E2E_REQUIRED=1) or skip, with the reason and how to get the stack."""
    message = f"{reason}; start it with `onex-node dev up --postgres`"
    if e2e_required():
        pytest.fail(f"ONEX_E2E_REQUIRED=1 but {message}", pytrace=False)
    pytest.skip(message)


def dev_root() -> Path:
    return Path(os.environ.get("ONEX_DEV_ROOT", str(REPO_ROOT))).resolve()


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
