"""Post-update migration of ONEX node projects, run by ``copier update``.

Usage (from copier.yml ``_migrations``, in the project directory)::

    python migrate.py VERSION_FROM VERSION_TO

1. New settings: every variable that ``.env.template`` defines but the owner's
   ``.env`` (git-ignored, never touched by Copier) lacks is appended to ``.env``
   commented out, with the template version that introduced it. Behaviour does
   not change (the node's defaults apply) and the owner sees what is new.
2. Leftovers: files holding the update's conflict markers and ``*.rej`` files
   are listed with what to do, so they are resolved before being committed.

Idempotent and stdlib-only. Exits 0 unless the project folder is unreadable.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path
from types import ModuleType

ENV_TEMPLATE = ".env.template"
ENV_FILE = ".env"
_ASSIGNMENT = re.compile(r"^\s*#?\s*(?:export\s+)?([A-Z][A-Z0-9_]*)=(.*)$")
_ACTIVE_ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?([A-Z][A-Z0-9_]*)=")


def _project_files() -> ModuleType:
    """``project_files.py`` from beside this file: the folders to skip and the conflict rule
    onex_scaffold uses too."""
    path = Path(__file__).resolve().with_name("project_files.py")
    spec = importlib.util.spec_from_file_location("onex_template_project_files", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def template_variables(template: str) -> dict[str, str]:
    """``NAME -> NAME=value`` for each variable in ``.env.template``, set or commented."""
    found: dict[str, str] = {}
    for line in template.splitlines():
        match = _ASSIGNMENT.match(line)
        if match and match.group(1) not in found:
            found[match.group(1)] = f"{match.group(1)}={match.group(2).strip()}"
    return found


def mentioned_variables(env_text: str) -> set[str]:
    """Names the owner's ``.env`` already sets or mentions in a comment."""
    return {m.group(1) for line in env_text.splitlines() if (m := _ASSIGNMENT.match(line))}


def sync_env(project: Path, version_to: str) -> list[str]:
    """Append the template's new variables to ``.env`` (commented); return their names."""
    template_path, env_path = project / ENV_TEMPLATE, project / ENV_FILE
    if not (template_path.is_file() and env_path.is_file()):
        return []
    wanted = template_variables(template_path.read_text(encoding="utf-8"))
    current = env_path.read_text(encoding="utf-8")
    missing = [name for name in wanted if name not in mentioned_variables(current)]
    if not missing:
        return []
    lines = [
        "",
        f"# New in ONEX template {version_to}: uncomment to override the default.",
        *(f"# {wanted[name]}" for name in missing),
    ]
    prefix = "" if current.endswith("\n") or not current else "\n"
    with env_path.open("a", encoding="utf-8") as handle:
        handle.write(prefix + "\n".join(lines) + "\n")
    return missing


def leftovers(project: Path) -> tuple[list[Path], list[Path]]:
    """(files with unresolved update conflict markers, ``*.rej`` files)."""
    rules = _project_files()
    conflicted: list[Path] = []
    rejects: list[Path] = []
    for root, dirs, files in os.walk(project):
        dirs[:] = [d for d in dirs if d not in rules.SKIPPED_DIRS]
        for name in files:
            path = Path(root, name)
            if name.endswith(".rej"):
                rejects.append(path.relative_to(project))
                continue
            try:
                if rules.has_conflict_markers(path.read_bytes()):
                    conflicted.append(path.relative_to(project))
            except OSError:
                continue
    return sorted(conflicted), sorted(rejects)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: migrate.py VERSION_FROM VERSION_TO", file=sys.stderr)
        return 2
    version_from, version_to = argv
    project = Path.cwd()
    print(f"onex-template migration {version_from} -> {version_to} in {project}")
    added = sync_env(project, version_to)
    if added:
        print(f"  .env: added new settings (commented out): {', '.join(added)}")
    conflicted, rejects = leftovers(project)
    for path in conflicted:
        print(
            f"  CONFLICT {path}: resolve the '<<<<<<<' ... '>>>>>>>' blocks, then git add it",
            file=sys.stderr,
        )
    for path in rejects:
        print(f"  REJECTED {path}: apply its hunks by hand, then delete it", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
