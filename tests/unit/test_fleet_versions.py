"""Which nodes are behind the newest template version (`onex-node nodes --outdated`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from onex_scaffold._exceptions import ConsulQueryError
from onex_scaffold._fleet import (
    NodeRow,
    is_outdated,
    newest_template_version,
    outdated_nodes,
    template_checkout,
    template_unchanged_since,
)
from onex_scaffold._git import git


@pytest.mark.parametrize(
    ("recorded", "newest", "outdated"),
    [
        ("v1.1.0", "v1.1.0", False),
        ("v1.0.0", "v1.1.0", True),
        ("1.10.0", "1.9.0", False),
        ("v1.1.0-2-gabc1234", "v1.1.0", False),
        ("v1.1.0", "v1.1.0-2-gabc1234", True),
        ("v1.1.0-2-gabc1234", "v1.1.0-3-gdef5678", True),
        ("abc1234", "v1.0.0", True),
        ("892c058", "v0.2.0", True),  # not the pre-release 892rc58
        ("1234567", "v0.2.0", True),
        ("abc1234", "abc1234", False),
        ("abc1234", "abc12345678", False),
        ("abc1234", "def5678", True),
        ("", "v1.0.0", True),
    ],
)
def test_is_outdated(recorded: str, newest: str, outdated: bool) -> None:
    assert is_outdated(recorded, newest) is outdated


def _row(version: str) -> NodeRow:
    return NodeRow("svc", "id", "nid", "NodeSvcEffect", "effect", "0.1.0", "passing", "a", "i",
                   "d", "", template_version=version)  # fmt: skip


def test_outdated_nodes_keeps_only_those_behind() -> None:
    rows = [_row("v2.0.0"), _row("v1.0.0"), _row("")]
    assert [r.template_version for r in outdated_nodes(rows, "v2.0.0")] == ["v1.0.0", ""]


def test_newest_version_of_a_checkout_and_of_a_url(tmp_path: Path) -> None:
    repo = tmp_path / "template"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "copier.yml").write_text("x: 1\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "one")
    git(repo, "tag", "v1.0.0")
    assert newest_template_version(str(repo)) == "v1.0.0"
    (repo / "copier.yml").write_text("x: 2\n")
    git(repo, "commit", "-qam", "two")
    assert newest_template_version(str(repo)).startswith("v1.0.0-1-g")
    git(repo, "tag", "v1.10.0")
    git(repo, "tag", "v1.9.0")
    git(repo, "tag", "not-a-version")  # Copier ignores tags that are not PEP 440 versions
    assert newest_template_version(repo.as_uri()) == "v1.10.0"


def _commit_all(repo: Path, message: str) -> str:
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)
    return git(repo, "rev-parse", "--short", "HEAD").strip()


def test_nodes_are_behind_only_when_the_template_changed_since_their_commit(
    tmp_path: Path,
) -> None:
    repo = tmp_path / "template"
    (repo / "template").mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / "copier.yml").write_text("x: 1\n")
    (repo / "template" / "node.py.jinja").write_text("one\n")
    rendered_from = _commit_all(repo, "template one")
    (repo / "README.md").write_text("docs only\n")
    docs_commit = _commit_all(repo, "docs")
    newest = newest_template_version(str(repo))
    assert newest == docs_commit  # no tags: HEAD, which moved

    checkout = template_checkout(str(repo))
    assert checkout == repo.resolve()
    assert template_unchanged_since(checkout, rendered_from)
    assert template_unchanged_since(checkout, f"v0.1.0-1-g{rendered_from}")  # git describe
    assert not template_unchanged_since(checkout, "--output=x")
    rows = [_row(rendered_from), _row("0.1.0-3-gdeadbee"), _row("")]
    # only the template's parts count: a docs commit gives the node nothing to update
    assert [r.template_version for r in outdated_nodes(rows, newest, checkout)] == [
        "0.1.0-3-gdeadbee",  # a commit this checkout does not have
        "",
    ]
    assert len(outdated_nodes(rows, newest)) == 3  # without the checkout: by version alone

    (repo / "template" / "node.py.jinja").write_text("two\n")
    _commit_all(repo, "template two")
    newest = newest_template_version(str(repo))
    assert not template_unchanged_since(checkout, rendered_from)
    assert not template_unchanged_since(checkout, f"v0.1.0-1-g{rendered_from}")
    assert [r.template_version for r in outdated_nodes(rows, newest, checkout)] == [
        rendered_from,
        "0.1.0-3-gdeadbee",
        "",
    ]


def test_template_checkout_is_none_for_a_url_and_refuses_a_plain_folder(tmp_path: Path) -> None:
    assert template_checkout("https://example.invalid/template.git") is None
    with pytest.raises(ConsulQueryError, match="not a git checkout"):
        template_checkout(str(tmp_path))


def test_stage_nodes_run_from_the_folder_named_in_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from onex_scaffold.devstack.errors import MissingToolError
    from onex_scaffold.devstack.pipeline import stage_source
    from onex_scaffold.devstack.registry import NODES_DIR_VAR, registry_source

    (tmp_path / "validator").mkdir()
    (tmp_path / "validator" / "start_node.py").write_text("")
    monkeypatch.setenv(NODES_DIR_VAR, str(tmp_path))
    assert stage_source("validator") == tmp_path / "validator"
    with pytest.raises(MissingToolError):
        stage_source("file-writer")  # never the checkout's copy instead
    with pytest.raises(MissingToolError):
        registry_source()
    (tmp_path / "registry").mkdir()
    (tmp_path / "registry" / "start_node.py").write_text("")
    assert registry_source() == tmp_path / "registry"


def test_outdated_command_uses_the_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from onex_scaffold.cli import main
    from onex_scaffold.cli import nodes as nodes_cli

    repo = tmp_path / "template"
    (repo / "template").mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    (repo / "copier.yml").write_text("x: 1\n")
    rendered_from = _commit_all(repo, "template one")
    (repo / "CHANGELOG.md").write_text("notes\n")
    _commit_all(repo, "notes")
    monkeypatch.setattr(nodes_cli, "list_nodes", lambda *_: [_row(rendered_from)])
    args = ["nodes", "--consul", "127.0.0.1:1", "--outdated", "--template", str(repo)]
    assert main(args) == 0
    assert "all 1 node(s) up to date with template version" in capsys.readouterr().out
    (repo / "copier.yml").write_text("x: 2\n")
    _commit_all(repo, "template two")
    assert main(args) == 1
    assert "1 of 1 node(s) behind template version" in capsys.readouterr().out
