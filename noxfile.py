"""Checks and tests. `nox` runs lint, typecheck, docs, tests and e2e; `nox -s bench` benchmarks.

`e2e` starts the real local stack itself (`onex-node dev up --postgres`: Apache Kafka, Consul,
PostgreSQL and the registry on 127.0.0.1), runs the tests marked `e2e` with
ONEX_E2E_REQUIRED=1 (a missing service fails them instead of skipping), and always stops the
stack again, unless a stack was already running in this folder before the session began.
"""

from __future__ import annotations

import glob
import itertools
import json
import shlex
import shutil
import subprocess
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["lint", "typecheck", "docs", "tests", "e2e", "chaos"]
nox.options.reuse_venv = "yes"
nox.options.error_on_missing_interpreters = True

ROOT = Path(__file__).resolve().parent
LINT_PATHS = ["src", "tests", "extensions", "benchmarks", "scripts", "noxfile.py"]
DEV = ".[dev]"
# uv's virtualenvs have no pip; tests that build generated projects run `python -m pip`.
TEST_DEPS = ("-e", DEV, "pip")


def _existing(paths: list[str]) -> list[str]:
    # An empty folder is not in a fresh clone; ruff would fail on a missing path.
    return [p for p in paths if (ROOT / p).exists()]


def _refuse_nested_repositories(session: nox.Session) -> None:
    """Stop early when an untracked git repository sits inside this checkout.

    The tests render the template from the checkout as it is: Copier commits the work tree
    into a draft commit and clones that, and a nested repository (a node generated into
    ./my-node and then `git init`-ed) becomes a submodule without a URL, so every render fails.
    """
    out = session.run(
        "git", "-C", str(ROOT), "ls-files", "--others", "--exclude-standard", "--directory",
        silent=True, external=True, success_codes=[0, 128],
    )  # fmt: skip
    nested = [
        line.rstrip("/")
        for line in (out if isinstance(out, str) else "").splitlines()
        if line.endswith("/") and (ROOT / line / ".git").exists()
    ]
    if nested:
        session.error(
            f"{', '.join(nested)}: a git repository inside this checkout; Copier cannot render "
            "the template from a work tree holding one. Move it out (e.g. to ../) and rerun"
        )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check."""
    session.install("ruff>=0.6")
    paths = _existing(LINT_PATHS)
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on src/, benchmarks/, the unit and runtime tests and this file.

    The paths are `[tool.mypy] files` in pyproject.toml, so a plain `mypy` checks the same.
    The `bench` extra is installed too: benchmarks/ imports the peers it measures.
    """
    session.install("-e", ".[dev,bench]")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site (mkdocs.yml, docs/) into site/; any warning fails.

    `strict: true` and the `validation` settings in mkdocs.yml turn a link to a missing page
    or a missing anchor into an error. `nox -s docs -- serve` serves the site locally instead.
    """
    session.install("mkdocs>=1.6", "mkdocs-material>=9.5")
    # Material prints a banner about its successor on every build; it is not a warning.
    env = {"NO_MKDOCS_2_WARNING": "1"}
    if session.posargs[:1] == ["serve"]:
        session.run("mkdocs", "serve", *session.posargs[1:], env=env)
    else:
        session.run("mkdocs", "build", "--strict", *session.posargs, env=env)


@nox.session
def tests(session: nox.Session) -> None:
    """Every test not marked e2e. No test collected (pytest exit 5) fails the session."""
    _refuse_nested_repositories(session)
    session.install(*TEST_DEPS)
    session.run("pytest", "-m", "not e2e and not chaos", *session.posargs)


def _stack_running(session: nox.Session) -> bool:
    out = session.run(
        "onex-node", "dev", "--root", str(ROOT), "status", "--json",
        silent=True, success_codes=[0, 1],
    )  # fmt: skip
    items = json.loads(out) if isinstance(out, str) and out.strip().startswith("[") else []
    return any(item.get("running") for item in items)


def _stack_env(root: Path = ROOT) -> dict[str, str]:
    env: dict[str, str] = {}
    env_file = root / ".onex-dev" / "env"
    for line in env_file.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            env[key] = shlex.split(value)[0] if value else ""
    return env


#: omnibase-core (PyPI, Python >= 3.12), for the e2e test of the registry reading its events.
OMNIBASE_REQUIREMENTS = ("omnibase-core>=0.47,<0.48", "confluent-kafka>=2.6")


def _python312() -> str | None:
    """A working Python 3.12: on PATH (a pyenv shim that fails does not count), else pyenv's."""
    candidates = [shutil.which("python3.12")]
    candidates += sorted(glob.glob(str(Path.home() / ".pyenv/versions/3.12*/bin/python3.12")))
    for candidate in candidates:
        if candidate and subprocess.run(
            [candidate, "-c", "import sys; assert sys.version_info[:2] == (3, 12)"],
            capture_output=True, check=False,
        ).returncode == 0:  # fmt: skip
            return candidate
    return None


def _omnibase_python(session: nox.Session) -> str:
    """The interpreter of a Python 3.12 environment with omnibase-core (made once, reused)."""
    python = _python312()
    if python is None:
        session.error(
            "the omnibase_core e2e test needs Python 3.12 (python3.12 on PATH or under "
            "~/.pyenv/versions/3.12*); install it, e.g. `pyenv install 3.12`"
        )
    venv = ROOT / ".nox" / "omnibase-core-py312"
    interpreter = venv / "bin" / "python"
    if not interpreter.exists():
        session.run(python, "-m", "venv", str(venv), external=True)
    session.run(
        str(interpreter), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        *OMNIBASE_REQUIREMENTS, external=True,
    )  # fmt: skip
    return str(interpreter)


@nox.session
def e2e(session: nox.Session) -> None:
    """Start the real stack, run the e2e tests against it, then `onex-node pipeline
    regenerate-self --check` (our nodes are what the live pipeline makes from their PRD.md),
    stop it again."""
    _refuse_nested_repositories(session)
    session.install(*TEST_DEPS)
    omnibase_python = _omnibase_python(session)
    was_running = _stack_running(session)
    try:
        session.run("onex-node", "dev", "--root", str(ROOT), "up", "--postgres")
        env = _stack_env()
        env.update(
            ONEX_E2E_REQUIRED="1", ONEX_DEV_ROOT=str(ROOT), ONEX_OMNIBASE_PYTHON=omnibase_python
        )
        session.run("pytest", "-m", "e2e", *session.posargs, env=env)
        if not session.posargs:
            # Our own nodes are exactly what the running pipeline makes from their PRD.md.
            session.run(
                "onex-node", "pipeline", "regenerate-self", "--check", "--root", str(ROOT),
                env=env,
            )  # fmt: skip
    finally:
        if was_running:
            session.log("the stack was running before this session: left running")
        else:
            session.run("onex-node", "dev", "--root", str(ROOT), "down")


@nox.session
def rerender(session: nox.Session) -> None:
    """Re-render the nodes under nodes/ from the committed template (owner files kept).

    `nox -s rerender -- --check` writes nothing and fails on drift; `-- registry` limits it
    to nodes/registry. Same as `python scripts/rerender_nodes.py`.
    """
    session.install("-e", DEV)
    session.run("python", str(ROOT / "scripts" / "rerender_nodes.py"), *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """benchmarks/run.py against the real stack (not in the default run: it measures speed).

    Arguments after `--` go to run.py, e.g. `nox -s bench -- --quick --json bench.json`.
    The `bench` extra brings the peers it compares with (FastStream, aiokafka) and uvloop.
    """
    session.install("-e", ".[dev,bench]")
    args = list(session.posargs)
    # The pipeline's stage nodes only when its part runs (--quick leaves it out).
    skips = {b for a, b in itertools.pairwise(args) if a == "--skip"}
    pipeline = "--quick" not in args and "pipeline" not in skips
    was_running = _stack_running(session)
    try:
        up = ["onex-node", "dev", "--root", str(ROOT), "up"]
        session.run(*up, *([] if pipeline else ["--no-pipeline"]))
        env = _stack_env()
        env.update(ONEX_DEV_ROOT=str(ROOT))
        session.run("python", str(ROOT / "benchmarks" / "run.py"), *session.posargs, env=env)
    finally:
        if not was_running:
            session.run("onex-node", "dev", "--root", str(ROOT), "down")


@nox.session
def chaos(session: nox.Session) -> None:
    """Kill and restart members of a cluster of its own while nodes work (tests/chaos).

    Starts three Kafka brokers, three Consul servers plus a client agent and two registries in a
    temporary folder, runs the tests marked `chaos` against them, prints the chaos report
    (figures) and always stops and deletes that cluster.
    """
    import tempfile
    import time

    _refuse_nested_repositories(session)
    session.install(*TEST_DEPS)
    root = Path(tempfile.mkdtemp(prefix="onex-chaos-"))
    dev = ["onex-node", "dev", "--root", str(root)]
    began = time.monotonic()
    passed = False
    try:
        session.run(
            *dev, "up", "--ignore-env",
            "--kafka-brokers", "3", "--consul-servers", "3", "--registries", "2",
        )  # fmt: skip
        session.log(f"cluster up after {time.monotonic() - began:.0f} s")
        env = _stack_env(root)
        env.update(ONEX_CHAOS_ROOT=str(root), ONEX_CHAOS_REQUIRED="1", ONEX_DEV_ROOT=str(root))
        session.run("pytest", "-m", "chaos", "tests/chaos", *session.posargs, env=env)
        passed = True
    finally:
        session.run(*dev, "down", "--purge", success_codes=[0, 1, 2])
        if passed:
            shutil.rmtree(root, ignore_errors=True)
        else:
            session.log(f"logs of the cluster kept in {root / '.onex-dev' / 'logs'}")
        session.log(f"chaos session took {time.monotonic() - began:.0f} s")
