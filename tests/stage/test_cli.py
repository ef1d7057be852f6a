"""``onex-node generate`` as a user runs it: a real subprocess, real files."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml
from helpers import run_python
from helpers.stage import tree_hashes

import onex_scaffold

SRC = str(Path(onex_scaffold.__file__).resolve().parents[1])


def onex_node(prd: Path, out: Path, *options: str | Path) -> subprocess.CompletedProcess[str]:
    """``onex-node generate --prd PRD --out OUT OPTIONS...`` as a user runs it."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([SRC, os.environ.get("PYTHONPATH", "")])}
    args = ("generate", "--prd", prd, "--out", out, *options)
    return run_python("-m", "onex_scaffold.cli", *args, env=env)


def test_generate_from_json_then_rerun(
    template_repo: Path, parsed_data: dict[str, Any], tmp_path: Path
):
    prd = tmp_path / "prd.json"
    prd.write_text(json.dumps(parsed_data))
    out = tmp_path / "writer"

    first = onex_node(prd, out, "--template", template_repo)

    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("NodePostgresWriterEffect generated (")
    assert str(out) in first.stdout
    assert "@ 1.0.0" in first.stdout
    assert (out / "postgres_writer" / "node.py").is_file()
    before = tree_hashes(out)

    second = onex_node(prd, out, "--template", template_repo)
    assert second.returncode == 0, second.stderr
    assert "NodePostgresWriterEffect unchanged" in second.stdout
    assert tree_hashes(out) == before


def test_yaml_input_node_name_and_json_output(
    template_repo: Path, parsed_data: dict[str, Any], tmp_path: Path
):
    prd = tmp_path / "prd.yaml"
    prd.write_text(yaml.safe_dump(parsed_data))
    out = tmp_path / "writer"

    name = ("--node-name", "NodePostgresqlWriterEffect")
    done = onex_node(prd, out, "--template", template_repo, "--vcs-ref", "1.0.0", *name, "--json")

    assert done.returncode == 0, done.stderr
    stage = json.loads(done.stdout)
    assert stage["stage_name"] == "event_bus_integration"
    assert stage["status"] == "completed"
    assert {gate["name"] for gate in stage["validation_gates"]} >= {
        "input_validation",
        "template_render",
        "generated_code_compiles",
    }
    assert (out / "postgres_writer" / "node.py").read_text().count(
        "class NodePostgresqlWriterEffect"
    ) == 1

    # an update runs the template's migrations; whatever they print stays off stdout
    again = onex_node(prd, out, "--template", template_repo, "--json", *name)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["metadata"]["mode"] == "update"


def test_wrapped_pipeline_dump_is_accepted(
    template_repo: Path, parsed_data: dict[str, Any], tmp_path: Path
):
    prd = tmp_path / "dump.json"
    prd.write_text(
        json.dumps(
            {
                "parsed_data": parsed_data,
                "generation_result": {"node_name": "NodeRowWriterEffect"},
            }
        )
    )
    done = onex_node(prd, tmp_path / "n", "--template", template_repo)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("NodeRowWriterEffect generated")


def test_invalid_input_exits_2_one_line_per_problem(template_repo: Path, tmp_path: Path):
    prd = tmp_path / "prd.json"
    prd.write_text(
        json.dumps(
            {"node_type": "gateway", "service_name": "../x", "domain": "ok", "confidence": 7}
        )
    )
    out = tmp_path / "n"

    done = onex_node(prd, out, "--template", template_repo)

    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert lines == [
        "error: node_type: must be one of effect, compute, reducer, orchestrator (got 'gateway')",
        "error: service_name: must not contain path separators or '..' (got '../x')",
        "error: confidence: must be between 0 and 1 (got 7)",
    ]
    assert "Traceback" not in done.stderr
    assert done.stdout == ""
    assert not out.exists()


def test_unreadable_or_malformed_prd_exits_2(tmp_path: Path):
    missing = onex_node(tmp_path / "nope.json", tmp_path / "n")
    assert missing.returncode == 2
    assert "cannot read" in missing.stderr and "Traceback" not in missing.stderr

    broken = tmp_path / "broken.yaml"
    broken.write_text("key: [unclosed\n  - : :")
    malformed = onex_node(broken, tmp_path / "n")
    assert malformed.returncode == 2
    assert "neither JSON nor YAML" in malformed.stderr and "Traceback" not in malformed.stderr

    evil = tmp_path / "evil.yaml"
    evil.write_text("!!python/object/apply:os.system ['touch pwned']\n")
    refused = onex_node(evil, tmp_path / "n")
    assert refused.returncode == 2
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_other_failures_exit_1(template_repo: Path, parsed_data: dict[str, Any], tmp_path: Path):
    prd = tmp_path / "prd.json"
    prd.write_text(json.dumps(parsed_data))
    out = tmp_path / "taken"
    out.mkdir()
    (out / "file.txt").write_text("someone else's")

    done = onex_node(prd, out, "--template", template_repo)

    assert done.returncode == 1
    assert done.stderr.startswith("error: ") and "not empty" in done.stderr
    assert "Traceback" not in done.stderr
    assert (out / "file.txt").read_text() == "someone else's"
