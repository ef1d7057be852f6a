"""Fixtures for the Copier template tests.

Renders are session-scoped (one per node type and main option) so the suite
stays within a few minutes on two cores. ``copier_template`` (pytest-copier) is
a git copy of the template's own paths tagged 99.99.99; ``two_tag_template`` is
ours: the template tagged 1.0.0 and, with a template-owned change, 1.1.0.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import git

from onex_scaffold import RenderedNode, render_node
from onex_scaffold._template import TEMPLATE_PARTS, copy_template

TEMPLATE_PATHS = list(TEMPLATE_PARTS)

#: (id, answers) of every node type x its main options.
VARIANTS: dict[str, dict[str, Any]] = {
    "effect": {"node_type": "effect", "node_name": "PostgresqlWriter", "service_name": "pg-writer"},
    "effect-postgres": {
        "node_type": "effect",
        "node_name": "PostgresqlWriter",
        "service_name": "pg-writer-db",
        "use_postgres": True,
    },
    "compute": {"node_type": "compute", "node_name": "PriceCalc", "service_name": "price-calc"},
    "compute-no-bus": {
        "node_type": "compute",
        "node_name": "PriceCalc",
        "service_name": "price-calc-local",
        "event_bus_enabled": False,
    },
    "reducer": {
        "node_type": "reducer",
        "node_name": "OrderTotals",
        "service_name": "order-totals",
        "input_events": ["order-placed", "order-cancelled"],
        "aggregation_window_s": 0.5,
    },
    "reducer-postgres": {
        "node_type": "reducer",
        "node_name": "OrderTotals",
        "service_name": "order-totals-pg",
        "state_backend": "postgres",
    },
    "orchestrator": {
        "node_type": "orchestrator",
        "node_name": "Checkout",
        "service_name": "checkout-flow",
        "workflow_steps": ["validate_order", "charge_card", "send_receipt"],
    },
}
#: One variant per node type: the ones whose generated project gets mypy and pytest.
MAIN_VARIANTS = ["effect-postgres", "compute", "reducer", "orchestrator"]

COMMON: dict[str, Any] = {
    "domain": "commerce",
    "description": "Test node for the template suite.",
    "tags": ["test", "template"],
}


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    """Run a command; on failure show its whole output in the assertion."""
    result = subprocess.run(
        cmd, cwd=cwd, capture_output=True, text=True, env=env, check=False, timeout=600
    )
    assert result.returncode == 0, (
        f"{' '.join(cmd)} failed in {cwd} (exit {result.returncode}):\n"
        f"{result.stdout}\n{result.stderr}"
    )
    return result.stdout + result.stderr


@pytest.fixture(scope="session")
def copier_template_paths() -> list[str]:
    """Only the template's own paths (not .git, .venv, .nox of the checkout)."""
    return TEMPLATE_PATHS


@pytest.fixture(scope="session")
def rendered(
    copier_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, RenderedNode]]:
    """Every variant rendered once from the tagged template copy."""
    out: dict[str, RenderedNode] = {}
    base = tmp_path_factory.mktemp("rendered")
    for name, answers in VARIANTS.items():
        out[name] = render_node(base / name, {**COMMON, **answers}, template=copier_template)
    yield out


@pytest.fixture(scope="session")
def mypy_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared across generated projects: third-party modules are analysed once."""
    return tmp_path_factory.mktemp("mypy-cache")


#: What the 1.1.0 tag changes in template-owned files.
NEW_README_LINE = "Release notes of the template 1.1.0: update test marker."
NEW_ENV_VARIABLE = "ONEX_TEMPLATE_TEST_SETTING"
NEW_HANDLERS_LINE = "template 1.1.0 handlers change that must not reach owners"


@pytest.fixture(scope="session")
def two_tag_template(
    copier_template_root: Path, tmp_path_factory: pytest.TempPathFactory, default_gitconfig: Any
) -> Path:
    """A git copy of the template tagged 1.0.0, then changed and tagged 1.1.0."""
    repo = tmp_path_factory.mktemp("two-tag-template")
    copy_template(repo, copier_template_root)
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "template 1.0.0")
    git(repo, "tag", "1.0.0")
    readme = repo / "template" / "README.md.jinja"
    readme.write_text(readme.read_text(encoding="utf-8") + f"\n{NEW_README_LINE}\n", "utf-8")
    env_template = repo / "template" / ".env.template.jinja"
    env_template.write_text(
        env_template.read_text(encoding="utf-8")
        + f"\n# A setting added in template 1.1.0\n# {NEW_ENV_VARIABLE}=on\n",
        "utf-8",
    )
    # A change to an owner-owned file: `_skip_if_exists` must keep it out of projects.
    handlers = repo / "template" / "{{package_name}}" / "handlers.py.jinja"
    handlers.write_text(
        handlers.read_text(encoding="utf-8") + f"\n# {NEW_HANDLERS_LINE}\n", "utf-8"
    )
    git(repo, "commit", "-q", "-am", "template 1.1.0: README note and a new setting")
    git(repo, "tag", "1.1.0")
    return repo


def project_env() -> dict[str, str]:
    """Environment for running a generated project's tools: this interpreter first."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONPATH", None)
    return env


def assert_ruff_clean(project: Path) -> None:
    """``ruff check`` and ``ruff format --check`` pass in a generated project."""
    env = project_env()
    run(["ruff", "check", "--no-cache", "."], project, env)
    run(["ruff", "format", "--check", "--no-cache", "."], project, env)
