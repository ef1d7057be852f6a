"""Stage 4.5 under abuse: owner code is never lost, only the chosen template runs, hostile
YAML and values stay bounded, PRD text that mentions Jinja passes the leftover gate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from helpers import git, run_python
from helpers.stage import leftovers_beside, release, tree_hashes

from onex_scaffold import generate_node
from onex_scaffold._mapping import safe_repr


def _owned_node(parsed_data: dict[str, Any], out: Path, template: Path) -> Path:
    stage, _ = generate_node(parsed_data, out, template=template)
    assert stage.status == "completed", stage.error
    handlers = out / "postgres_writer" / "handlers.py"
    handlers.write_text(handlers.read_text() + "\nOWNER_RULE = 42\n")
    return handlers


def test_an_update_that_would_rename_the_package_fails_and_keeps_owner_code(
    template_repo: Path, parsed_data: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "writer"
    handlers = _owned_node(parsed_data, out, template_repo)
    before = tree_hashes(out)

    renamed = {**parsed_data, "service_name": "pg-writer"}  # a model varying its answer
    stage, _ = generate_node(renamed, out, template=template_repo)

    assert stage.status == "failed"
    assert "service_name" in (stage.error or "") and "postgres_writer" in (stage.error or "")
    assert "rename" in (stage.error or "")
    assert "OWNER_RULE = 42" in handlers.read_text()
    assert tree_hashes(out) == before
    assert leftovers_beside(out) == []


def test_an_update_that_would_rename_the_node_class_fails(
    template_repo: Path, parsed_data: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "writer"
    _owned_node(parsed_data, out, template_repo)
    before = tree_hashes(out)
    stage, _ = generate_node(
        parsed_data,
        out,
        template=template_repo,
        generation_result={"node_name": "NodeRowSinkEffect"},
    )
    assert stage.status == "failed"
    assert "node_name" in (stage.error or "")
    assert tree_hashes(out) == before


def test_an_update_never_rewrites_an_owner_file(
    own_template_repo: Path, parsed_data: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "writer"
    handlers = _owned_node(parsed_data, out, own_template_repo)
    before = tree_hashes(out)

    def stop_protecting_handlers(repo: Path) -> None:
        # A template release that no longer lists handlers.py as the owner's and changes it.
        copier_yml = repo / "copier.yml"
        copier_yml.write_text(
            copier_yml.read_text().replace('  - "{{ package_name }}/handlers.py"\n', "")
        )
        source = repo / "template" / "{{package_name}}" / "handlers.py.jinja"
        source.write_text(source.read_text() + "\nTEMPLATE_TAKES_OVER = True\n")

    release(own_template_repo, "1.1.0", stop_protecting_handlers)
    stage, _ = generate_node(parsed_data, out, template=own_template_repo, vcs_ref="1.1.0")

    assert stage.status == "failed"
    assert "postgres_writer/handlers.py" in (stage.error or "")
    assert "owner" in (stage.error or "")
    assert "OWNER_RULE = 42" in handlers.read_text()
    assert "TEMPLATE_TAKES_OVER" not in handlers.read_text()
    assert tree_hashes(out) == before


def test_only_the_configured_template_runs_never_the_one_the_answers_file_names(
    template_repo: Path, parsed_data: dict[str, Any], tmp_path: Path
) -> None:
    marker = tmp_path / "TASK_RAN"

    def add_task(repo: Path) -> None:
        copier_yml = repo / "copier.yml"
        copier_yml.write_text(copier_yml.read_text() + f"\n_tasks:\n  - touch {marker}\n")

    evil = tmp_path / "other-template"
    git(tmp_path, "clone", "-q", str(template_repo), str(evil))
    release(evil, "1.0.1", add_task)
    out = tmp_path / "writer"
    # A node whose answers file names another template (with a task).
    stage, _ = generate_node(parsed_data, out, template=evil, vcs_ref="1.0.1")
    assert stage.status == "completed", stage.error
    assert marker.exists()  # the caller named it: it ran
    marker.unlink()

    again, _ = generate_node(parsed_data, out)  # the configured (bundled) template
    named, _ = generate_node(parsed_data, out, template=template_repo)

    assert again.status == "completed", again.error
    assert named.status == "completed", named.error
    assert again.metadata["template"] != str(evil)
    assert named.metadata["template"] == str(template_repo)
    assert not marker.exists()


def test_description_mentioning_jinja_renders_inert_and_passes_the_gate(
    template_repo: Path, parsed_data: dict[str, Any], tmp_path: Path
) -> None:
    description = (
        "Fills {{ name }} placeholders. A description long enough that YAML folds it over "
        "several lines in the answers file, with {% if x %} blocks {%- endif %} and a "
        '"{{ quoted }}" one, so the text is split where the gate looks for leftovers.'
    )
    out = tmp_path / "filler"
    stage, _ = generate_node(
        {**parsed_data, "description": description, "operations": ["Fill {{ name }} slots"]},
        out,
        template=template_repo,
    )
    assert stage.status == "completed", stage.error
    answers = yaml.safe_load((out / ".copier-answers.yml").read_text())
    assert answers["description"] == description
    assert r"\{\{ name \}\}" in (out / "README.md").read_text()  # Markdown-escaped, inert


def test_a_real_leftover_still_fails_the_gate(
    own_template_repo: Path, parsed_data: dict[str, Any], tmp_path: Path
) -> None:
    def leave_raw_jinja(repo: Path) -> None:
        readme = repo / "template" / "README.md.jinja"
        readme.write_text(readme.read_text() + "\n{% raw %}{{ service_name }}{% endraw %}\n")

    release(own_template_repo, "1.1.0", leave_raw_jinja)
    out = tmp_path / "writer"
    stage, _ = generate_node(
        {**parsed_data, "description": "Mentions {{ name }} only."},
        out,
        template=own_template_repo,
        vcs_ref="1.1.0",
    )
    assert stage.status == "failed"
    assert "no_template_leftovers" in [g.name for g in stage.failed_gates]
    assert "{{ service_name }}" in (stage.error or "")


def _nested(depth: int) -> list[Any]:
    value: list[Any] = ["x"]
    for _ in range(depth):
        value = [value, value]  # shared, so tiny in memory and 2**depth leaves when walked
    return value


def test_repr_of_untrusted_values_is_bounded() -> None:
    shown = safe_repr(_nested(60))
    assert len(shown) < 100
    assert safe_repr({"k": _nested(60)}, limit=40).startswith("{")


def test_hostile_nested_values_are_refused_quickly(
    template_repo: Path, parsed_data: dict[str, Any], tmp_path: Path
) -> None:
    # In a child process with a time limit: an unbounded repr would never finish.
    script = (
        "import json, sys\n"
        "from onex_scaffold import generate_node\n"
        "value = ['x']\n"
        "for _ in range(60):\n"
        "    value = [value, value]\n"
        "data = json.loads(sys.argv[1])\n"
        "data['operations'] = value\n"
        "data['features'] = {'k': value}\n"
        "stage, _ = generate_node(data, sys.argv[2], template=sys.argv[3])\n"
        "print(stage.status, len(stage.error or ''))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(parsed_data), str(tmp_path / "n"),
         str(template_repo)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    status, length = done.stdout.split()
    assert status == "failed" and int(length) < 2000
    assert not (tmp_path / "n").exists()


def test_yaml_alias_bombs_are_refused(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 10):
        previous = f"*a{level - 1}"
        lines.append(f"a{level}: &a{level} [{', '.join([previous] * 9)}]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\nnode_type: effect\n")
    done = run_python(
        "-m", "onex_scaffold.cli", "generate", "--prd", bomb, "--out", tmp_path / "n", timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert "alias" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "n").exists()


def test_the_pipeline_analyzer_refuses_yaml_alias_bombs_too() -> None:
    import pytest

    from onex_scaffold.pipeline.analyzer import AnalysisError, DeterministicAnalyzer

    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 10):
        lines.append(f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * 9)}]")
    bomb = "\n".join(lines) + "\nnode_type: effect\nservice_name: bomb\n"
    with pytest.raises(AnalysisError, match="alias"):
        DeterministicAnalyzer().analyze(bomb)
