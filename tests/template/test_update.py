"""copier update from tag 1.0.0 to 1.1.0 keeps the owner's code and brings the
template's change, through the command line and through the API."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from copier import run_update
from helpers import git

from onex_scaffold import leftovers, naming, read_answers, render_node, update_node

from .conftest import NEW_ENV_VARIABLE, NEW_HANDLERS_LINE, NEW_README_LINE, run

pytestmark = pytest.mark.slow

ANSWERS = {
    "node_type": "effect",
    "node_name": "LedgerWriter",
    "service_name": "ledger-writer",
    "domain": "finance",
    # Jinja in an answer must stay text on update too (answers are not re-rendered).
    "description": "Writes ledger entries {{ 7 * 191 }}.",
}
OWNER_EDIT = '\n\ndef owner_business_rule() -> str:\n    return "kept across updates"\n'


def _project_at_1_0_0(template: Path, dst: Path) -> Path:
    node = render_node(dst, ANSWERS, template=template, vcs_ref="1.0.0")
    assert read_answers(node.path)["_commit"] == "1.0.0"
    git(node.path, "init", "-q")
    git(node.path, "add", "-A")
    git(node.path, "commit", "-q", "-m", "generated at template 1.0.0")
    # The owner's edit to the business logic, committed.
    handlers = node.path / naming().package_name(ANSWERS["service_name"]) / "handlers.py"
    handlers.write_text(handlers.read_text(encoding="utf-8") + OWNER_EDIT, encoding="utf-8")
    git(node.path, "commit", "-q", "-am", "owner: business rule")
    # The owner's local settings: git-ignored, so Copier never sees them.
    shutil.copy(node.path / ".env.template", node.path / ".env")
    (node.path / ".env").write_text(
        (node.path / ".env").read_text(encoding="utf-8") + "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:1\n",
        encoding="utf-8",
    )
    assert git(node.path, "status", "--porcelain").strip() == ""
    return node.path


def _check_updated(project: Path, output: str) -> None:
    answers = read_answers(project)
    assert answers["_commit"] == "1.1.0"
    assert answers["description"] == ANSWERS["description"]
    assert "1337" not in (project / "contract.yaml").read_text(encoding="utf-8")
    # The template-owned change arrived.
    assert NEW_README_LINE in (project / "README.md").read_text(encoding="utf-8")
    assert NEW_ENV_VARIABLE in (project / ".env.template").read_text(encoding="utf-8")
    # The owner's edit survived.
    handlers = project / naming().package_name(ANSWERS["service_name"]) / "handlers.py"
    assert OWNER_EDIT.strip() in handlers.read_text(encoding="utf-8")
    # handlers.py is owner-owned (`_skip_if_exists`, a pattern rendered through the
    # context hook's package_name): the template's change to it stays out.
    assert NEW_HANDLERS_LINE not in handlers.read_text(encoding="utf-8")
    # No conflict markers, .rej files or unmerged paths.
    assert leftovers(project) == []
    # The _migrations step ran: it reported itself and brought the new setting
    # into the owner's .env (commented out), keeping the owner's own line.
    assert "onex-template migration 1.0.0 -> 1.1.0" in output
    env = (project / ".env").read_text(encoding="utf-8")
    assert f"# {NEW_ENV_VARIABLE}=on" in env
    assert "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:1" in env
    assert env.count(NEW_ENV_VARIABLE) == 1


def test_update_with_cli(two_tag_template: Path, tmp_path: Path) -> None:
    project = _project_at_1_0_0(two_tag_template, tmp_path / "node")
    output = run(
        [
            sys.executable,
            "-m",
            "copier",
            "update",
            "--trust",
            "--defaults",
            "--conflict",
            "inline",
            str(project),
        ],
        project,
    )
    _check_updated(project, output)


def test_update_with_api(
    two_tag_template: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    project = _project_at_1_0_0(two_tag_template, tmp_path / "node")
    run_update(
        project,
        overwrite=True,
        conflict="inline",
        defaults=True,
        unsafe=True,
        quiet=True,
    )
    captured = capfd.readouterr()
    _check_updated(project, captured.out + captured.err)


def test_update_helper_and_second_update_is_a_no_op(
    two_tag_template: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    project = _project_at_1_0_0(two_tag_template, tmp_path / "node")
    node = update_node(project)
    assert node.template_version == "1.1.0"
    captured = capfd.readouterr()
    _check_updated(project, captured.out + captured.err)
    git(project, "add", "-A")
    git(project, "commit", "-q", "-m", "update to template 1.1.0")
    before = (project / ".env").read_text(encoding="utf-8")
    update_node(project)
    assert (project / ".env").read_text(encoding="utf-8") == before
    assert git(project, "status", "--porcelain").strip() == ""


def test_conflict_is_reported(two_tag_template: Path, tmp_path: Path) -> None:
    """An owner edit to the same README line the template changes ends inline in
    conflict, and ``leftovers`` refuses the result until it is resolved."""
    project = _project_at_1_0_0(two_tag_template, tmp_path / "node")
    readme = project / "README.md"
    readme.write_text(readme.read_text(encoding="utf-8") + "\nOwner's own last line.\n", "utf-8")
    git(project, "commit", "-q", "-am", "owner: README note")
    update_node(project)
    problems = leftovers(project)
    assert any(p.startswith("README.md") for p in problems), problems
