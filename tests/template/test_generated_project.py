"""The generated projects pass their own ruff, mypy and pytest (in this environment)."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from onex_scaffold import RenderedNode

from .conftest import MAIN_VARIANTS, VARIANTS, assert_ruff_clean, project_env, run

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_ruff(rendered: dict[str, RenderedNode], variant: str) -> None:
    assert_ruff_clean(rendered[variant].path)


@pytest.mark.parametrize("variant", MAIN_VARIANTS)
def test_mypy(rendered: dict[str, RenderedNode], variant: str, mypy_cache: Path) -> None:
    path = rendered[variant].path
    run(["python", "-m", "mypy", "--cache-dir", str(mypy_cache)], path, project_env())


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_pytest(rendered: dict[str, RenderedNode], variant: str) -> None:
    """Out of the box, with no services: business-logic and lifecycle tests pass;
    integration tests run only when KAFKA_BOOTSTRAP_SERVERS is set."""
    path = rendered[variant].path
    output = run(
        ["python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly"],
        path,
        project_env(),
    )
    assert " passed" in output, output
    assert " failed" not in output and " error" not in output, output


@pytest.mark.parametrize("variant", MAIN_VARIANTS)
def test_wheel_builds(rendered: dict[str, RenderedNode], variant: str, tmp_path: Path) -> None:
    """What the Dockerfile's `pip install .` does: the package (and only it) is built."""
    node = rendered[variant]
    run(
        [
            "python",
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(node.path),
        ],
        tmp_path,
        project_env(),
    )
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    pkg = node.answers["service_name"].replace("-", "_")
    assert f"{pkg}/node.py" in names and f"{pkg}/runtime/naming.py" in names
    assert not [n for n in names if n.startswith("tests/")]


def test_start_node_logs_node_and_instance_id(
    rendered: dict[str, RenderedNode], tmp_path: Path
) -> None:
    """`python start_node.py` says, once up, which node_id and instance_id it runs as
    (the design's start-up lines), then stops on SIGTERM with exit code 0."""
    node = rendered["effect"]
    env = project_env()
    env.update(
        KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1",  # absent broker: refused at once
        KAFKA_CONNECT_WAIT_S="0.2",
        SERVICE_PORT="0",
        SERVICE_BIND_HOST="127.0.0.1",
        SERVICE_HOST="127.0.0.1",
        INSTANCE_ID="start-node-test",
        PYTHONPATH=str(node.path),
    )
    process = subprocess.Popen(
        [sys.executable, str(node.path / "start_node.py")],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stderr.readline()
            if not line:
                break
            lines.append(line)
            if " running: " in line:
                break
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    running = [line for line in lines if " running: " in line]
    assert running, "".join(lines)
    assert re.search(r"node_id [0-9a-f-]{36}, instance_id start-node-test,", running[0])
    assert process.returncode == 0, "".join(lines) + (rest or "")


def test_requires_postgres_without_postgres_says_what_to_regenerate(
    rendered: dict[str, RenderedNode],
) -> None:
    """`requires_postgres = True` in a node generated without PostgreSQL: a clear error
    naming the answer to regenerate with, not ModuleNotFoundError."""
    node = rendered["effect"]
    code = (
        "from pg_writer import handlers\n"
        "from pg_writer.node import ANSWERS\n"
        "from pg_writer.runtime.effect import EffectNode, PostgresNotGeneratedError\n"
        "class Wants(handlers.Handlers):\n"
        "    requires_postgres = True\n"
        "try:\n"
        "    EffectNode(ANSWERS, Wants())\n"
        "except PostgresNotGeneratedError as error:\n"
        "    print(error)\n"
    )
    env = project_env()
    env["PYTHONPATH"] = str(node.path)
    out = run([sys.executable, "-c", code], node.path, env)
    assert "requires_postgres is True" in out
    assert "use_postgres=true" in out
    assert "ModuleNotFoundError" not in out
