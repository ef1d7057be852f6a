"""The longest names the rules allow still give a lint- and format-clean project.

`ruff format` joins lines that fit and splits lines that do not, so every
template line that contains an answer must format the same for a 1-character
and a 64-character name.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from onex_scaffold import RenderedNode, render_node

from .conftest import assert_ruff_clean, project_env, run

pytestmark = pytest.mark.slow

LONGEST: dict[str, object] = {
    "node_name": "Ab" * 32,  # 64 characters
    "service_name": "s" + "-x" * 30 + "z",  # 63 characters
    "domain": "d" * 63,
    "version": "10.20.30-rc.1+build.5",
    "actions": ["a" * 63, "b" * 63],
    "tags": ["T" * 63],
    "kafka_environment": "e" * 32,
    "http_port": 65535,
    "description": "word " * 300,
}
TYPE_OPTIONS: dict[str, dict[str, object]] = {
    "effect": {"use_postgres": True},
    "compute": {},
    "reducer": {"input_events": ["i" * 63, "j" * 63], "state_backend": "postgres"},
    "orchestrator": {"workflow_steps": ["w" * 63, "v" * 63]},
}


@pytest.fixture(scope="module")
def longest(
    copier_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, RenderedNode]:
    base = tmp_path_factory.mktemp("longest")
    return {
        kind: render_node(
            base / kind, {**LONGEST, **options, "node_type": kind}, template=copier_template
        )
        for kind, options in TYPE_OPTIONS.items()
    }


@pytest.mark.parametrize("kind", list(TYPE_OPTIONS))
def test_longest_names_ruff_clean(longest: dict[str, RenderedNode], kind: str) -> None:
    assert_ruff_clean(longest[kind].path)
