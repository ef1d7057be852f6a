"""The template's per-node-type code lives in one Jinja partial per type, and file-name
conditions use computed values (issue: template partials)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from onex_scaffold import RenderedNode, naming

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template"
PARTIALS = TEMPLATE / "_partials"
PACKAGE = TEMPLATE / "{{package_name}}"
NODE_TYPES = ("effect", "compute", "reducer", "orchestrator")


def test_one_partial_per_node_type() -> None:
    for kind in ("node", "handlers"):
        found = {p.name for p in (PARTIALS / kind).glob("*.py.jinja")}
        assert {f"{t}.py.jinja" for t in NODE_TYPES} <= found, kind


def test_dispatching_files_hold_no_per_type_code() -> None:
    for name in ("node.py.jinja", "handlers.py.jinja"):
        text = (PACKAGE / name).read_text(encoding="utf-8")
        assert "node_type ==" not in text, name
        assert '{% include "template/_partials/' in text, name


def test_partials_are_not_rendered_as_output() -> None:
    config = yaml.safe_load((ROOT / "copier.yml").read_text(encoding="utf-8"))
    assert "_partials" in config["_exclude"]


def test_file_names_use_computed_conditions() -> None:
    """A file-name condition names one computed value, not an expression over answers."""
    for path in TEMPLATE.rglob("*"):
        for condition in re.findall(r"\{%\s*if (.*?)\s*%\}", path.name):
            assert " and " not in condition and " or " not in condition, path.name


def test_postgres_module_follows_uses_postgres(rendered: dict[str, RenderedNode]) -> None:
    """`uses_postgres` is computed from the recorded answers on every render (copy and
    update alike), so it is never recorded itself."""
    for variant, node in rendered.items():
        answers = node.answers
        wanted = (answers["node_type"] == "effect" and answers.get("use_postgres")) or (
            answers["node_type"] == "reducer" and answers.get("state_backend") == "postgres"
        )
        pkg = naming().package_name(answers["service_name"])
        assert (node.path / pkg / "runtime" / "postgres.py").is_file() == bool(wanted), variant
        assert "uses_postgres" not in answers, variant
        assert not list(node.path.rglob("_partials")), variant


def test_writer_table_is_documented_in_the_readme(rendered: dict[str, RenderedNode]) -> None:
    """The README of an effect with PostgreSQL names the table (writer.table_name)."""
    readme = (rendered["effect-postgres"].path / "README.md").read_text(encoding="utf-8")
    assert "one row of the table `pg_writer_db_events`" in readme
    plain = (rendered["effect"].path / "README.md").read_text(encoding="utf-8")
    assert "one row of the table" not in plain
