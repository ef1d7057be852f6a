"""Fixtures for Stage 4.5: a committed, tagged copy of this repository's template.

The tests render from a git copy of ``copier.yml``, ``template/`` and ``extensions/``
rather than the working checkout, so they see one committed template version (updates
need the old commit to exist) and can add a second version to update to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers.stage import copy_template


@pytest.fixture(scope="session")
def template_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git template at tag 1.0.0 (shared: tests must not change it)."""
    return copy_template(tmp_path_factory.mktemp("tpl") / "template")


@pytest.fixture
def own_template_repo(tmp_path: Path) -> Path:
    """A git template at tag 1.0.0 that the test may commit new versions to."""
    return copy_template(tmp_path / "own-template")


@pytest.fixture
def parsed_data() -> dict[str, Any]:
    return {
        "node_type": "effect",
        "service_name": "postgres-writer",
        "domain": "database",
        "description": "Writes validated rows to PostgreSQL.",
        "operations": ["Insert rows into PostgreSQL tables", "Validate row schema"],
        "features": ["connection pooling", "retries"],
        "confidence": 0.92,
    }
