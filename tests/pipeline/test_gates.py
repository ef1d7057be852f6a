"""The validator's gates still catch a broken node with the tools running side by side:
each kind of breakage fails its own gate, with the finding where the break is."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from onex_scaffold import generate_node
from onex_scaffold.pipeline import gates
from onex_scaffold.pipeline.archive import node_files
from onex_scaffold.pipeline.events import NodeGenerationRequested
from onex_scaffold.pipeline.recording import StageRecord
from onex_scaffold.pipeline.runner import make_request

PARSED = {
    "node_type": "effect",
    "service_name": "gate-probe",
    "domain": "billing",
    "description": "Writes confirmed orders.",
    "operations": ["Insert an order row"],
    "features": ["idempotent"],
    "confidence": 0.9,
}


@pytest.fixture(scope="module")
def clean_node(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("gates") / "node"
    stage, _ = generate_node(PARSED, folder)
    assert stage.status == "completed", stage.error
    return folder


@pytest.fixture
def node(clean_node: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ONEX_PIPELINE_CACHE", str(tmp_path.parent / "gate-cache"))
    copy = tmp_path / "node"
    shutil.copytree(clean_node, copy)
    return copy


def _failing(results: list[gates.GateResult]) -> dict[str, gates.GateResult]:
    return {r.name: r for r in results if not r.passed}


def test_a_clean_node_passes_every_gate(node: Path) -> None:
    results = gates.run_gates(node)
    assert [r.name for r in results] == list(gates.WEIGHTS)
    assert _failing(results) == {}
    assert gates.score(results) == 100.0


def test_a_type_error_fails_mypy_strict_only(node: Path) -> None:
    handlers = node / "gate_probe" / "handlers.py"
    handlers.write_text(handlers.read_text() + '\n\ndef broken() -> int:\n    return "no"\n')
    failing = _failing(gates.run_gates(node))
    assert set(failing) == {"mypy_strict"}
    finding = failing["mypy_strict"].findings[0]
    assert finding.file == "gate_probe/handlers.py" and finding.code == "return-value"


def test_an_untyped_function_fails_mypy_strict(node: Path) -> None:
    # Strictness of the node's own code is unchanged by the cache and the parallel runs.
    handlers = node / "gate_probe" / "handlers.py"
    handlers.write_text(handlers.read_text() + "\n\ndef untyped(value):\n    return value\n")
    failing = _failing(gates.run_gates(node))
    assert "mypy_strict" in failing
    assert any(f.code == "no-untyped-def" for f in failing["mypy_strict"].findings)


def test_a_failing_test_fails_unit_tests(node: Path) -> None:
    broken = "def test_broken() -> None:\n    assert sum([1]) == 2\n"
    (node / "tests" / "test_broken.py").write_text(broken)
    failing = _failing(gates.run_gates(node))
    assert set(failing) == {"unit_tests"}
    assert "test_broken" in failing["unit_tests"].findings[0].message


def test_a_syntax_error_is_reported_alone(node: Path) -> None:
    (node / "gate_probe" / "handlers.py").write_text("def f(:\n")
    results = gates.run_gates(node)
    assert [r.name for r in results] == ["files_parse"]
    assert not results[0].passed
    assert results[0].findings[0].file == "gate_probe/handlers.py"


def test_unformatted_code_fails_ruff_format_and_is_fixable(node: Path) -> None:
    handlers = node / "gate_probe" / "handlers.py"
    handlers.write_text(handlers.read_text() + "\nVALUE=[1,2 ,3]\n")
    results = gates.run_gates(node)
    failing = _failing(results)
    assert set(failing) == {"ruff_format"}
    assert [f.file for f in failing["ruff_format"].findings] == ["gate_probe/handlers.py"]
    assert gates.fixable(results)


@pytest.mark.parametrize(
    "output",
    [
        "Would reformat: pkg/a.py\nWould reformat: b.py\n2 files would be reformatted\n",
        "unformatted: File would be reformatted\n --> pkg/a.py:1:3\n  |\n- x  =  1\n"
        "unformatted: File would be reformatted\n --> b.py:4:1\n --> b.py:9:1\n"
        "2 files would be reformatted\n",
    ],
    ids=["ruff<0.9", "ruff>=0.9"],
)
def test_unformatted_files_are_read_from_either_ruff_output(output: str) -> None:
    assert gates.unformatted_files(output) == ["pkg/a.py", "b.py"]


def test_mypy_cache_is_kept_per_toolchain(node: Path, tmp_path: Path) -> None:
    gates.run_gates(node, "full")
    root = tmp_path.parent / "gate-cache" / "mypy"
    assert [p.name for p in root.iterdir()] == [gates._mypy_toolchain()]


def test_nodes_alike_but_for_their_name_share_no_mypy_cache_entries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Names of one length, files stamped with one time: mypy's cache test (path relative to
    # the node, size, whole-second mtime) cannot tell these nodes' test files apart.
    monkeypatch.setenv("ONEX_PIPELINE_CACHE", str(tmp_path / "gate-cache"))
    stamp = int(time.time())
    for name in ("batch-probe-a", "batch-probe-b"):
        folder = tmp_path / name / "node"
        stage, _ = generate_node({**PARSED, "service_name": name}, folder)
        assert stage.status == "completed", stage.error
        for rel in node_files(folder):
            os.utime(folder / rel, (stamp, stamp))
        result = gates.MypyStrict()(folder)
        assert result.passed, [f.message for f in result.findings]


def test_a_tool_killed_by_a_signal_fails_the_stage_not_the_code(node: Path) -> None:
    """The OOM killer's SIGKILL (here: the node's tests kill their own pytest) says nothing
    about the code: no gate result, no findings for the refiner, nothing cached."""
    (node / "tests" / "test_dies.py").write_text(
        "import os\nimport signal\n\nos.kill(os.getpid(), signal.SIGKILL)\n"
    )
    with pytest.raises(gates.ToolStopped, match=r"^pytest was stopped by SIGKILL") as stopped:
        gates.cached_gates("digest-of-a-killed-run", node)
    assert not list((gates.cache_root() / "validated").glob("digest-of-a-killed-run-*"))
    request = make_request("# Gate probe\n", node.parent / "out")
    failure = StageRecord("validator").failed(
        NodeGenerationRequested(request=request), stopped.value
    )
    assert failure.stage == "validator"
    assert failure.reason.startswith("pytest") and "send the request again" in failure.reason
