"""Re-running Stage 4.5 on an existing node updates it with ``copier update``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from helpers import git
from helpers.stage import leftovers_beside, release, tree_hashes

from onex_scaffold._snapshot import cache_dir
from onex_scaffold.stage import generate_node

MARK = "# template 1.1.0 was here\n"
RUNTIME = Path("template", "{{package_name}}", "runtime", "naming.py")


def rerun_changes_nothing(
    parsed_data: dict[str, Any], out: Path, template: Path, mode: str = "regenerate"
) -> None:
    """Stage 4.5 again with the same data and template: completed in ``mode``, no file changed."""
    before = tree_hashes(out)

    again, result = generate_node(parsed_data, out, template=template)

    assert again.status == "completed", again.error
    assert again.metadata["mode"] == mode
    assert result["changed_files"] == []
    assert tree_hashes(out) == before


def add_mark(repo: Path) -> None:
    path = repo / RUNTIME
    path.write_text(path.read_text() + MARK)


def test_rerun_with_same_data_changes_nothing(
    template_repo: Path, parsed_data: dict[str, Any], tmp_path: Path
):
    out = tmp_path / "writer"
    first, _ = generate_node(parsed_data, out, template=template_repo)
    assert first.status == "completed", first.error
    before = tree_hashes(out)
    stats = {rel: (out / rel).stat().st_mtime_ns for rel in before}

    rerun_changes_nothing(parsed_data, out, template_repo, mode="update")
    assert {rel: (out / rel).stat().st_mtime_ns for rel in before} == stats
    assert not (out / ".git").exists()  # a folder that was no repository stays one
    assert leftovers_beside(out) == []


def test_rerun_without_template_uses_the_configured_template_not_the_recorded_one(
    template_repo: Path, parsed_data: dict[str, Any], tmp_path: Path
):
    # The answers file may name any template; running it would run its tasks unchecked.
    # Without `template`, the configured (bundled) template is used, as for a new node.
    out = tmp_path / "writer"
    assert generate_node(parsed_data, out, template=template_repo)[0].status == "completed"
    stage, _ = generate_node(parsed_data, out)
    assert stage.status == "completed", stage.error
    assert stage.metadata["template"] == str(cache_dir())
    assert stage.metadata["template"] != str(template_repo)


def test_new_answers_and_template_version_are_applied_owner_code_kept(
    own_template_repo: Path, parsed_data: dict[str, Any], tmp_path: Path
):
    out = tmp_path / "writer"
    assert generate_node(parsed_data, out, template=own_template_repo)[0].status == "completed"
    handlers = out / "postgres_writer" / "handlers.py"
    owner_code = handlers.read_text() + "\n\ndef owner_helper() -> int:\n    return 42\n"
    handlers.write_text(owner_code)
    release(own_template_repo, "1.1.0", add_mark)

    changed = {**parsed_data, "description": "Now also archives rows."}
    stage, result = generate_node(changed, out, template=own_template_repo, vcs_ref="1.1.0")

    assert stage.status == "completed", stage.error
    assert result["template_version"] == "1.1.0"
    assert (out / "postgres_writer" / "runtime" / "naming.py").read_text().endswith(MARK)
    assert handlers.read_text() == owner_code
    answers = yaml.safe_load((out / ".copier-answers.yml").read_text())
    assert answers["description"] == "Now also archives rows."
    assert answers["_commit"] == "1.1.0"
    assert "postgres_writer/runtime/naming.py" in result["changed_files"]
    assert ".copier-answers.yml" in result["changed_files"]
    assert leftovers_beside(out) == []


def test_conflicts_fail_and_leave_the_node_untouched(
    own_template_repo: Path, parsed_data: dict[str, Any], tmp_path: Path
):
    out = tmp_path / "writer"
    assert generate_node(parsed_data, out, template=own_template_repo)[0].status == "completed"
    # the owner edits the very line the template changes next
    naming = out / "postgres_writer" / "runtime" / "naming.py"
    naming.write_text(naming.read_text() + "# owner's last line\n")
    before = tree_hashes(out)
    release(own_template_repo, "1.1.0", add_mark)

    stage, _ = generate_node(parsed_data, out, template=own_template_repo, vcs_ref="1.1.0")

    assert stage.status == "failed"
    assert [g.name for g in stage.failed_gates] == ["update_conflicts"]
    assert "postgres_writer/runtime/naming.py" in (stage.error or "")
    assert tree_hashes(out) == before
    assert b"<<<<<<<" not in naming.read_bytes()
    assert leftovers_beside(out) == []


def test_git_node_must_be_clean_and_update_is_left_for_review(
    own_template_repo: Path, parsed_data: dict[str, Any], tmp_path: Path
):
    out = tmp_path / "writer"
    assert generate_node(parsed_data, out, template=own_template_repo)[0].status == "completed"
    git(out, "init", "-q")
    git(out, "add", "-A")
    git(out, "commit", "-q", "-m", "generated")
    release(own_template_repo, "1.1.0", add_mark)

    (out / "scratch.txt").write_text("uncommitted")
    refused, _ = generate_node(parsed_data, out, template=own_template_repo, vcs_ref="1.1.0")
    assert refused.status == "failed"
    assert "uncommitted changes" in (refused.error or "")
    assert "scratch.txt" in (refused.error or "")
    (out / "scratch.txt").unlink()

    stage, _ = generate_node(parsed_data, out, template=own_template_repo, vcs_ref="1.1.0")
    assert stage.status == "completed", stage.error
    status = git(out, "status", "--porcelain")
    assert " M postgres_writer/runtime/naming.py" in status
    assert git(out, "log", "--oneline").count("\n") == 1  # nothing committed for the owner


def test_node_inside_a_larger_repository(
    own_template_repo: Path, parsed_data: dict[str, Any], tmp_path: Path
):
    repo = tmp_path / "monorepo"
    out = repo / "nodes" / "writer"
    assert generate_node(parsed_data, out, template=own_template_repo)[0].status == "completed"
    git(repo, "init", "-q")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "monorepo")
    release(own_template_repo, "1.1.0", add_mark)

    stage, _ = generate_node(parsed_data, out, template=own_template_repo, vcs_ref="1.1.0")

    assert stage.status == "completed", stage.error
    assert git(repo, "status", "--porcelain").split() == [
        "M",
        "nodes/writer/.copier-answers.yml",
        "M",
        "nodes/writer/postgres_writer/runtime/naming.py",
    ]


def test_plain_folder_template_regenerates_and_keeps_owner_files(
    template_repo: Path, parsed_data: dict[str, Any], tmp_path: Path
):
    # like the template inside an installed wheel: no git, so no merge base
    plain = tmp_path / "plain-template"
    shutil.copytree(template_repo, plain, ignore=shutil.ignore_patterns(".git"))
    out = tmp_path / "writer"
    first, _ = generate_node(parsed_data, out, template=plain)
    assert first.status == "completed", first.error
    warning = next(g for g in first.validation_gates if g.name == "template_source")
    assert warning.status == "warning" and "not a git repository" in (warning.message or "")
    handlers = out / "postgres_writer" / "handlers.py"
    handlers.write_text(handlers.read_text() + "\nOWNER = True\n")

    # named again: only the configured template or the caller's runs, never the recorded one
    rerun_changes_nothing(parsed_data, out, plain)

    changed = {**parsed_data, "description": "Now also archives rows."}
    third, result = generate_node(changed, out, template=plain, extra_answers={"http_port": 8123})
    assert third.status == "completed", third.error
    assert "OWNER = True" in handlers.read_text()
    answers = yaml.safe_load((out / ".copier-answers.yml").read_text())
    assert answers["description"] == "Now also archives rows."
    assert answers["http_port"] == 8123
    assert "postgres_writer/handlers.py" not in result["changed_files"]
    assert ".copier-answers.yml" in result["changed_files"]

    # answers given earlier survive a re-run that does not repeat them
    fourth, _ = generate_node(changed, out, template=plain)
    assert fourth.status == "completed", fourth.error
    assert yaml.safe_load((out / ".copier-answers.yml").read_text())["http_port"] == 8123


def test_dirty_template_reruns_change_nothing(
    own_template_repo: Path, parsed_data: dict[str, Any], tmp_path: Path
):
    add_mark(own_template_repo)  # uncommitted template work, rendered with vcs_ref HEAD
    out = tmp_path / "writer"
    first, _ = generate_node(parsed_data, out, template=own_template_repo)
    assert first.status == "completed", first.error
    assert first.metadata["vcs_ref"] == "HEAD"
    assert (out / "postgres_writer" / "runtime" / "naming.py").read_text().endswith(MARK)
    warning = next(g for g in first.validation_gates if g.name == "template_source")
    assert warning.status == "warning" and "uncommitted" in (warning.message or "")

    rerun_changes_nothing(parsed_data, out, own_template_repo)


def test_files_the_template_drops_are_removed(
    own_template_repo: Path, parsed_data: dict[str, Any], tmp_path: Path
):
    out = tmp_path / "writer"
    assert generate_node(parsed_data, out, template=own_template_repo)[0].status == "completed"
    assert (out / ".dockerignore").is_file()
    release(own_template_repo, "1.1.0", lambda repo: (repo / "template" / ".dockerignore").unlink())

    stage, result = generate_node(parsed_data, out, template=own_template_repo)

    assert stage.status == "completed", stage.error
    assert ".dockerignore" in result["changed_files"]
    assert not (out / ".dockerignore").exists()
    assert ".dockerignore" not in result["generated_files"]


def test_an_update_in_progress_elsewhere_is_not_joined(
    template_repo: Path, parsed_data: dict[str, Any], tmp_path: Path
):
    out = tmp_path / "writer"
    assert generate_node(parsed_data, out, template=template_repo)[0].status == "completed"
    before = tree_hashes(out)
    # another process holds the node folder's lock while it updates
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDONLY)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "time.sleep(60)\n",
            str(out),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        stage, _ = generate_node(parsed_data, out, template=template_repo)
    finally:
        holder.kill()
        holder.wait()
    assert stage.status == "failed"
    assert "another process is updating" in (stage.error or "")
    assert tree_hashes(out) == before
    assert leftovers_beside(out) == []
