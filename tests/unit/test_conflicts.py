"""One conflict-marker rule and one list of folders to skip (``extensions/project_files.py``)
for the template's update migration and for ``onex_scaffold`` (Stage 4.5's update gate,
``leftovers``, the staging copy and snapshots)."""

from __future__ import annotations

import importlib.util
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
from helpers import REPO_ROOT

from onex_scaffold import leftovers
from onex_scaffold._conflicts import has_conflict_markers
from onex_scaffold._files import SKIPPED_DIRS
from onex_scaffold._template import load_extension_module, template_root

UPDATE_CONFLICT = b"a\n<<<<<<< before updating\nmine\n=======\ntheirs\n>>>>>>> after updating\n"
GIT_CONFLICT = b"<<<<<<< HEAD\nmine\n=======\ntheirs\n>>>>>>> feature\n"


def _migrate() -> ModuleType:
    path = REPO_ROOT / "extensions" / "migrate.py"
    spec = importlib.util.spec_from_file_location("migrate_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(
    ("data", "conflict"),
    [
        (UPDATE_CONFLICT, True),
        (GIT_CONFLICT, True),
        (b"<<<<<<<\nx\n>>>>>>>\n", True),
        (b"Title\n=======\n", False),  # a Markdown underline
        (b"<<<<<<< before updating\nonly the opening\n", False),
        (b"see `<<<<<<<` in prose\n>>>>>>>x\n", False),
    ],
)
def test_the_rule(data: bytes, conflict: bool) -> None:
    assert has_conflict_markers(data) is conflict


def test_the_package_uses_the_templates_rule_file() -> None:
    rule = load_extension_module("project_files")
    assert Path(str(rule.__file__)) == template_root() / "extensions" / "project_files.py"
    assert rule.has_conflict_markers(GIT_CONFLICT)


def test_the_wheel_ships_the_rule_with_the_template() -> None:
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    shipped = pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]
    assert shipped["extensions"] == "onex_scaffold/_template/extensions"


def test_the_migration_and_leftovers_flag_the_same_files(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_bytes(UPDATE_CONFLICT)
    (tmp_path / "handlers.py").write_bytes(GIT_CONFLICT)
    (tmp_path / "notes.md").write_bytes(b"Notes\n=======\n")
    (tmp_path / "node.py.rej").write_bytes(b"@@ -1 +1 @@\n")
    for skipped in (".onex-dev", ".ruff_cache", ".venv"):  # never the owner's files
        (tmp_path / skipped).mkdir()
        (tmp_path / skipped / "copy.py").write_bytes(GIT_CONFLICT)

    conflicted, rejects = _migrate().leftovers(tmp_path)

    assert conflicted == [Path("README.md"), Path("handlers.py")]
    assert rejects == [Path("node.py.rej")]
    flagged = {problem.split(":")[0] for problem in leftovers(tmp_path)}
    assert flagged == {"README.md", "handlers.py", "node.py.rej"}


def test_the_package_skips_the_templates_folder_list() -> None:
    rules = load_extension_module("project_files")
    assert SKIPPED_DIRS == rules.SKIPPED_DIRS
    assert {".git", ".venv", ".onex-dev", "__pycache__"} <= SKIPPED_DIRS
