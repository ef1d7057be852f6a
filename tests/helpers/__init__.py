"""Helpers shared by every test folder: git, free loopback ports, e2e skip-or-fail.

Importable as ``helpers`` because ``[tool.pytest.ini_options] pythonpath`` lists ``tests``
(no ``sys.path`` edits in test modules). Keep it small and free of fixtures: fixtures
live in the ``conftest.py`` of the folder that uses them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, NoReturn

import pytest

from onex_scaffold._git import run_git
from onex_scaffold.devstack.ports import free_port

__all__ = [
    "REPO_ROOT",
    "dev_root",
    "e2e_required",
    "free_port",
    "git",
    "run_python",
    "unavailable",
]

#: The checkout this test suite belongs to.
REPO_ROOT = Path(__file__).resolve().parents[2]


def git(cwd: Path, *args: str) -> str:
    """Run git in ``cwd`` (fixed identity, no hooks or signing); its stdout, or an
    AssertionError carrying the whole output when git fails."""
    result = run_git(cwd, *args)
    assert result.returncode == 0, (
        f"git {' '.join(args)} failed in {cwd} (exit {result.returncode}):\n"
        f"{result.stdout}\n{result.stderr}"
    )
    return result.stdout


def run_python(
    *args: str | os.PathLike[str], timeout: float = 300, **options: Any
) -> subprocess.CompletedProcess[str]:
    """``python ARGS`` with this interpreter (``-m copier ...``, ``-m onex_scaffold.cli ...``),
    as a user runs it: its output captured as text, its exit code left to the caller."""
    return subprocess.run(
        [sys.executable, *map(str, args)],
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        **options,
    )


def e2e_required() -> bool:
    """``ONEX_E2E_REQUIRED=1`` (set by ``nox -s e2e`` and CI): a missing service fails."""
    return os.environ.get("ONEX_E2E_REQUIRED") == "1"


def unavailable(reason: str) -> NoReturn:
    """Fail (``ONEX_E2E_REQUIRED=1``) or skip, with the reason and how to get the stack."""
    message = f"{reason}; start it with `onex-node dev up --postgres`"
    if e2e_required():
        pytest.fail(f"ONEX_E2E_REQUIRED=1 but {message}", pytrace=False)
    pytest.skip(message)


def dev_root() -> Path:
    """The folder whose ``.onex-dev/`` holds the running stack's state."""
    return Path(os.environ.get("ONEX_DEV_ROOT", str(REPO_ROOT))).resolve()
