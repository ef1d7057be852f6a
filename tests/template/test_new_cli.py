"""`onex-node new` wraps copier copy with flags for the main questions."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import run_python

from onex_scaffold import read_answers
from onex_scaffold._git import run_git
from onex_scaffold._template import published_source
from onex_scaffold.cli import main
from onex_scaffold.cli.new import next_steps


def new(target: Path, node_type: str, name: str, service: str, domain: str, *flags: str) -> int:
    """``onex-node new TARGET --type --name --service --domain FLAGS...``; its exit code."""
    required = ("--type", node_type, "--name", name, "--service", service, "--domain", domain)
    return main(["new", str(target), *required, *flags])


def test_new_creates_project(copier_template: Path, tmp_path: Path) -> None:
    target = tmp_path / "order-totals"
    code = new(
        target,
        *("reducer", "OrderTotals", "order-totals", "sales"),
        *("--description", "Totals per order.", "--tag", "sales", "--tag", "totals"),
        *("--input-event", "order-placed", "--aggregation-window", "2.5"),
        *("--state-backend", "postgres", "--http-port", "8100"),
        *("--template", str(copier_template)),
        "--quiet",
    )
    assert code == 0
    answers = read_answers(target)
    assert answers["node_type"] == "reducer"
    assert answers["tags"] == ["sales", "totals"]
    assert answers["input_events"] == ["order-placed"]
    assert answers["aggregation_window_s"] == 2.5
    assert answers["state_backend"] == "postgres"
    assert answers["http_port"] == 8100
    assert answers["_commit"] == "99.99.99"
    assert (target / "order_totals" / "node.py").is_file()


def test_new_refuses_bad_answer(
    copier_template: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = new(tmp_path / "x", "effect", "lower", "svc", "d", "--template", str(copier_template))
    assert code == 2
    err = capsys.readouterr().err
    assert "node_name" in err and "PascalCase" in err
    assert not (tmp_path / "x" / "pyproject.toml").exists()


def test_new_refuses_option_of_another_type(
    copier_template: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = new(
        tmp_path / "x", "compute", "A", "a", "d", "--use-postgres", "--template", str(copier_template)
    )
    assert code == 2
    assert "--use-postgres applies to effect nodes only" in capsys.readouterr().err


def test_new_as_installed_command(copier_template: Path, tmp_path: Path) -> None:
    result = run_python(
        *("-m", "onex_scaffold.cli", "new", tmp_path / "n", "--type", "compute"),
        *("--name", "PriceCalc", "--service", "price-calc", "--domain", "pricing"),
        *("--no-event-bus", "--template", copier_template),
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "created" in result.stdout
    assert read_answers(tmp_path / "n")["event_bus_enabled"] is False
    # The next steps name this folder and what the node has: a dev extra, start_node.py.
    steps = result.stdout.split("next steps:\n", 1)[1].splitlines()
    assert steps[0] == f"  cd {tmp_path / 'n'}"
    assert [s.split("#")[0].strip() for s in steps[2:]] == [
        "python -m pip install -e '.[dev]'",
        "pytest",
        "onex-node dev up",
        "set -a; . .onex-dev/env; set +a",
        "python start_node.py",
    ]
    assert "dev = [" in (tmp_path / "n" / "pyproject.toml").read_text()
    assert (tmp_path / "n" / "start_node.py").is_file()


def test_next_steps_start_postgresql_for_a_node_that_uses_it() -> None:
    steps = next_steps(Path("/srv/my nodes/ledger"), "ledger", postgres=True).splitlines()
    assert "  cd '/srv/my nodes/ledger'" in steps
    assert any(s.startswith("  onex-node dev up --postgres ") for s in steps)
    assert 'git commit -m "Generate ledger from the ONEX template"' in "\n".join(steps)


def test_new_refuses_a_non_empty_folder_and_leaves_it_alone(
    copier_template: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "taken"
    target.mkdir()
    (target / "README.md").write_text("mine\n")
    code = new(target, "effect", "Ledger", "ledger", "finance", "--template", str(copier_template))
    assert code == 1
    assert "not empty" in capsys.readouterr().err
    assert [p.name for p in target.iterdir()] == ["README.md"]
    assert (target / "README.md").read_text() == "mine\n"


def test_new_with_the_bundled_template_records_a_mergeable_commit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No --template: the node comes from the template snapshot (as Stage 4.5 makes
    them), so its recorded commit exists for `copier update` to merge from."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("ONEX_SCAFFOLD_CACHE", str(cache))
    target = tmp_path / "ledger"
    code = new(target, "effect", "Ledger", "ledger", "finance", "-q")
    assert code == 0
    answers = yaml.safe_load((target / ".copier-answers.yml").read_text())
    # A source that works on any machine (the published template), not this machine's cache;
    # the recorded commit is in the cache too, so Stage 4.5 updates here still merge.
    assert answers["_src_path"] == published_source()
    found = run_git(cache, "rev-parse", "--verify", "--quiet", f"{answers['_commit']}^{{commit}}")
    assert found.returncode == 0
