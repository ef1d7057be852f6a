"""Stage 4.5 of the generation pipeline: parsed PRD data in, an ONEX node out, via Copier.

``stage_4_5_event_bus_integration`` fills the pipeline's Stage 4.5 slot and returns its
``PipelineStage``; :func:`generate_node` is the same work for scripts (synchronous).

How a run goes:

1. ``parsed_data`` is mapped to Copier answers (:mod:`onex_scaffold._mapping`); every
   problem is reported at once and nothing is written.
2. A new node is rendered into a temporary folder *beside* ``output_directory`` (same
   filesystem), checked (gates below), then renamed into place. Any failure removes it.
3. If ``output_directory`` already holds a node from this template (``.copier-answers.yml``
   with ``_src_path``), the node is *updated* instead: the folder is copied beside itself,
   the copy gets a throw-away git repository, ``copier update`` (conflicts inline) runs
   there, and only when every gate passes are the changed files moved into the real
   folder. The real folder never sees a half-done update or a conflict marker. If it is
   (inside) a git work tree, it must have no uncommitted changes under the node folder:
   the template's changes are left uncommitted there for review with ``git diff``.
   A folder that is not a git repository stays one without ``.git``.

Gates (``gate_type`` blocking unless noted): input_validation, input_warnings (warning),
output_location, template_available, template_source (warning), template_render,
update_conflicts, required_files, generated_code_compiles, no_template_leftovers,
answers_recorded, install.

Template source: with no ``template`` the bundled template is rendered from a small git
snapshot of it (:mod:`onex_scaffold._snapshot`), so nodes record a commit later runs can
find and updates are real 3-way merges. For a ``template`` that is a local git checkout the
default ``vcs_ref`` is ``"HEAD"`` (the checkout as it is; uncommitted work becomes a draft
commit only Copier's clone has, which the ``template_source`` warning gate reports); for
anything else Copier's default applies, the newest PEP 440 tag. When a node has no
reachable merge base (template without git, lost cache, draft commit) a re-run re-renders
it with its recorded answers instead: template-owned files are replaced, owner-owned ones
(``_skip_if_exists``) kept.

Copier is not thread-safe: it changes the process working directory (plumbum's
``local.cwd`` calls ``os.chdir``) while cloning and diffing. All Copier calls therefore
hold one process-wide lock; everything else (mapping, copying, checks, moves) runs
concurrently, and this module never depends on the working directory itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import pickle
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from onex_scaffold._exceptions import InvalidParsedData, RenderError, SnapshotError, StageFailed
from onex_scaffold._git import GIT_ENV, run_git
from onex_scaffold._mapping import Problem, map_parsed_data, safe_repr

logger = logging.getLogger(__name__)

STAGE_NAME: Final = "event_bus_integration"
ANSWERS_FILE: Final = ".copier-answers.yml"

GateStatus = Literal["pass", "fail", "warning", "skipped"]
GateType = Literal["blocking", "warning"]
StageStatus = Literal["pending", "running", "completed", "failed", "skipped"]


def _now() -> datetime:
    return datetime.now(UTC)


class ValidationGate(BaseModel):
    """One check of the stage, in the pipeline's shape."""

    model_config = ConfigDict(extra="forbid")

    gate_id: str
    name: str
    status: GateStatus
    gate_type: GateType = "blocking"
    message: str | None = None
    duration_ms: int = 0
    timestamp: datetime = Field(default_factory=_now)


class PipelineStage(BaseModel):
    """The pipeline's stage record: what ran, how long, which gates passed or failed."""

    model_config = ConfigDict(extra="forbid")

    stage_name: str = STAGE_NAME
    status: StageStatus = "pending"
    start_time: datetime | None = None
    end_time: datetime | None = None
    duration_ms: int | None = None
    validation_gates: list[ValidationGate] = Field(default_factory=list)
    error: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def failed_gates(self) -> list[ValidationGate]:
        return [gate for gate in self.validation_gates if gate.status == "fail"]

    @property
    def warning_gates(self) -> list[ValidationGate]:
        return [gate for gate in self.validation_gates if gate.status == "warning"]


class _GateFailed(Exception):
    """A blocking gate failed; the stage stops with ``message`` as its error."""

    def __init__(self, message: str, problems: list[Problem] | None = None) -> None:
        self.problems = problems or []
        super().__init__(message)


# Copier changes the process cwd (see module docstring): one Copier call at a time.
_COPIER_LOCK = threading.Lock()

#: Files every generated node must have (relative; ``{package}`` is the package name).
REQUIRED_FILES: Final = (
    ANSWERS_FILE,
    "pyproject.toml",
    "start_node.py",
    ".env.template",
    "Dockerfile",
    "compose.node.yaml",
    "{package}/__init__.py",
    "{package}/node.py",
    "{package}/handlers.py",
)

#: Folders never copied when a node is staged for update (caches, virtualenvs, VCS).
_COPY_IGNORE: Final = (
    ".git",
    ".venv",
    "venv",
    ".nox",
    ".tox",
    "node_modules",
    "__pycache__",
    ".mypy_cache",
    ".pytest_cache",
    ".ruff_cache",
)

_MARKER_LINE: Final = re.compile(rb"^(<{7} |>{7} |={7}$)", re.MULTILINE)
_JINJA_MARKERS: Final = ("{{", "{%")
_JINJA_FRAGMENT: Final = re.compile(r"\{[{%][^\"'\\\n]*")


def _git(cwd: Path, *args: str, check: bool = True) -> str:
    result = run_git(cwd, *args)
    if check and result.returncode != 0:
        raise _GateFailed(
            f"git {' '.join(args[:2])} failed in {cwd}: {result.stderr.strip() or result.stdout}"
        )
    return result.stdout


# ---------------------------------------------------------------------------
# Template source
# ---------------------------------------------------------------------------

_URL: Final = re.compile(r"^([a-z][a-z0-9+.-]*://|git@|gh:|gl:)", re.IGNORECASE)


def _resolve_template(template: str | os.PathLike[str] | None) -> tuple[str, Path | None]:
    """(source for Copier, local folder or None for URLs). Local paths are made absolute,
    because Copier records the path as given and a relative one breaks later updates."""
    if template is None:
        from onex_scaffold._template import template_root

        root = template_root()
        return str(root), root
    text = os.fspath(template)
    if _URL.match(text):
        return text, None
    path = Path(text).expanduser().resolve()
    return str(path), path


def _git_toplevel(path: Path) -> Path | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "--show-toplevel"],
            cwd=path,
            capture_output=True,
            text=True,
            check=False,
        )
    except OSError:  # the folder is gone or unreadable: not a work tree we can use
        return None
    if result.returncode != 0:
        return None
    return Path(result.stdout.strip()).resolve()


def default_vcs_ref(template_dir: Path | None) -> str | None:
    """``"HEAD"`` for a local git checkout, else ``None`` (Copier: newest PEP 440 tag)."""
    if template_dir is not None and _git_toplevel(template_dir) == template_dir.resolve():
        return "HEAD"
    return None


# ---------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------


class _Job:
    def __init__(self) -> None:
        self.gates: list[ValidationGate] = []
        self.metadata: dict[str, Any] = {}

    @contextmanager
    def gate(
        self, gate_id: str, name: str, gate_type: GateType = "blocking"
    ) -> Iterator[list[str]]:
        """Time a gate. The body appends notes; raising _GateFailed fails it (blocking
        gates stop the stage). Notes on a warning gate make it ``warning``."""
        notes: list[str] = []
        started = time.perf_counter()
        timestamp = _now()
        try:
            yield notes
        except _GateFailed as failure:
            self._record(gate_id, name, "fail", gate_type, str(failure), started, timestamp)
            raise
        except Exception as error:
            message = f"unexpected {type(error).__name__}: {error}"
            self._record(gate_id, name, "fail", gate_type, message, started, timestamp)
            raise
        status: GateStatus = "warning" if notes and gate_type == "warning" else "pass"
        self._record(gate_id, name, status, gate_type, "; ".join(notes) or None, started, timestamp)

    def skip(self, gate_id: str, name: str, reason: str, gate_type: GateType = "blocking") -> None:
        self.gates.append(
            ValidationGate(
                gate_id=gate_id, name=name, status="skipped", gate_type=gate_type, message=reason
            )
        )

    def _record(
        self,
        gate_id: str,
        name: str,
        status: GateStatus,
        gate_type: GateType,
        message: str | None,
        started: float,
        timestamp: datetime,
    ) -> None:
        self.gates.append(
            ValidationGate(
                gate_id=gate_id,
                name=name,
                status=status,
                gate_type=gate_type,
                message=message,
                duration_ms=round((time.perf_counter() - started) * 1000),
                timestamp=timestamp,
            )
        )


def _recorded_answers(folder: Path) -> dict[str, Any]:
    """The node's ``.copier-answers.yml`` as a dict ({} when absent or unreadable)."""
    try:
        data = yaml.safe_load((folder / ANSWERS_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def _is_node_from_template(folder: Path) -> bool:
    return isinstance(_recorded_answers(folder).get("_src_path"), str)


def _relative_files(root: Path) -> list[str]:
    files: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _COPY_IGNORE)
        for filename in filenames:
            files.append((Path(dirpath) / filename).relative_to(root).as_posix())
    return sorted(files)


def _free_text_fragments(answers: Mapping[str, Any]) -> list[str]:
    """Pieces of user free text that legitimately contain ``{{``/``{%`` after rendering."""
    fragments: set[str] = set()
    for value in answers.values():
        if isinstance(value, str) and any(marker in value for marker in _JINJA_MARKERS):
            fragments.update(_JINJA_FRAGMENT.findall(value))
    return sorted(fragments, key=len, reverse=True)


def _check_rendered(job: _Job, root: Path, answers: Mapping[str, Any], files: list[str]) -> None:
    package = answers["package_name"]
    with job.gate("G4", "required_files") as _notes:
        missing = [
            rel
            for rel in (item.format(package=package) for item in REQUIRED_FILES)
            if not (root / rel).is_file()
        ]
        if missing:
            raise _GateFailed(f"the rendered node lacks {', '.join(missing)}")

    with job.gate("G5", "generated_code_compiles") as notes:
        errors: list[str] = []
        compiled = 0
        for rel in files:
            if not rel.endswith(".py"):
                continue
            source = (root / rel).read_bytes()
            try:
                # compile() checks syntax like py_compile without writing .pyc files.
                compile(source, rel, "exec", dont_inherit=True)
                compiled += 1
            except (SyntaxError, ValueError) as error:
                errors.append(f"{rel}: {error}")
        if errors:
            raise _GateFailed("generated code does not compile: " + "; ".join(errors))
        notes.append(f"{compiled} Python files compile")

    with job.gate("G6", "no_template_leftovers") as _notes:
        from onex_scaffold._render import jinja_leftovers

        fragments = _free_text_fragments(answers)
        leftovers: list[str] = []
        for rel in files:
            try:
                text = (root / rel).read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            if rel.endswith(".jinja") or any(marker in rel for marker in _JINJA_MARKERS):
                leftovers.append(f"{rel} (file name)")
                continue
            for fragment in fragments:
                text = text.replace(fragment, "")
            found = jinja_leftovers(text)
            if found:
                leftovers.append(f"{rel} ({safe_repr(found[0])})")
        if leftovers:
            raise _GateFailed("unrendered Jinja left in " + ", ".join(leftovers))


def _check_answers(job: _Job, root: Path, answers: Mapping[str, Any], src: str) -> dict[str, Any]:
    with job.gate("G7", "answers_recorded") as _notes:
        try:
            recorded = yaml.safe_load((root / ANSWERS_FILE).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            raise _GateFailed(f"{ANSWERS_FILE} cannot be read: {error}") from error
        if not isinstance(recorded, dict):
            raise _GateFailed(f"{ANSWERS_FILE} is not a mapping")
        wrong = [key for key, value in _copier_data(answers).items() if recorded.get(key) != value]
        if wrong:
            raise _GateFailed(
                f"{ANSWERS_FILE} does not record the given {', '.join(wrong)}: not a question "
                f"of the template, or one that does not apply to a {answers['node_type']} node"
            )
        if recorded.get("_src_path") != src:
            raise _GateFailed(
                f"{ANSWERS_FILE} records _src_path {safe_repr(recorded.get('_src_path'))}, "
                f"expected {src!r}"
            )
        return recorded


def _run_copier(action: Callable[[], Any], src: str, vcs_ref: str | None) -> list[str]:
    """Run one render call under the lock; returns the text of dirty-template warnings."""
    from plumbum import local

    from onex_scaffold._snapshot import cache_dir, reading

    cache = cache_dir()
    # The snapshot repository is only read while Copier clones it (no repack meanwhile).
    hold = reading(cache) if src == str(cache) else contextlib.nullcontext()
    # Copier commits in its own temporary repositories during updates; give those commits
    # an identity so they work without a user git config (CI, containers).
    with (
        hold,
        _COPIER_LOCK,
        local.env(**GIT_ENV),
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always")
        try:
            action()
        except RenderError as error:
            raise _GateFailed(
                f"rendering {src} at {vcs_ref or 'its newest tag'} failed: {error}"
            ) from error
    return [str(item.message) for item in caught if "Dirty" in type(item.message).__name__]


def _copier_data(answers: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in answers.items() if key != "package_name"}


def _create(
    job: _Job,
    target: Path,
    answers: dict[str, Any],
    src: str,
    vcs_ref: str | None,
) -> tuple[Path, list[str], list[str]]:
    """Render a new node beside ``target``; returns (staged folder, files, changed)."""
    from onex_scaffold._render import render_node

    staging_root = Path(tempfile.mkdtemp(prefix=f".{target.name}.onex-new-", dir=target.parent))
    staged = staging_root / "node"
    try:
        with job.gate("G3", "template_render") as notes:
            dirty = _run_copier(
                lambda: render_node(staged, _copier_data(answers), template=src, vcs_ref=vcs_ref),
                src,
                vcs_ref,
            )
            files = _relative_files(staged)
            notes.append(f"rendered {len(files)} files")
        job.metadata["template_dirty"] = bool(dirty)
        job.skip("G3b", "update_conflicts", "new node: nothing to merge")
        _check_rendered(job, staged, answers, files)
        return staging_root, files, files
    except BaseException:
        shutil.rmtree(staging_root, ignore_errors=True)
        raise


def _point_answers_at(answers_file: Path, src: str) -> None:
    """Make the staged node update from ``src`` (e.g. the template moved since the last run).

    Copier updates from the recorded ``_src_path``; its old commit must exist in ``src``.
    """
    text = answers_file.read_text(encoding="utf-8")
    recorded = yaml.safe_load(text)
    if not isinstance(recorded, dict) or recorded.get("_src_path") == src:
        return
    recorded["_src_path"] = src
    answers_file.write_text(
        yaml.safe_dump(recorded, sort_keys=False, allow_unicode=True), encoding="utf-8"
    )


def _dirty_under(folder: Path) -> list[str]:
    """Uncommitted paths under ``folder`` when it is in a git work tree, else []."""
    if _git_toplevel(folder) is None:
        return []
    status = _git(folder, "status", "--porcelain", "--untracked-files=all", "--", ".")
    return [line[3:] for line in status.splitlines() if line.strip()]


def _missing_merge_base(recorded: Mapping[str, Any], template_dir: Path | None) -> str | None:
    """Why ``copier update`` cannot run for this node (no base to merge from), or None."""
    commit = recorded.get("_commit")
    if not isinstance(commit, str) or not commit:
        return "the node records no template commit (its template was not a git repository)"
    if template_dir is None:
        return None  # a URL: Copier fetches it and checks the commit itself
    if _git_toplevel(template_dir) is None:
        return f"the template {template_dir} is not a git repository"
    found = subprocess.run(
        ["git", "rev-parse", "--verify", "--quiet", "--end-of-options", f"{commit}^{{commit}}"],
        cwd=template_dir,
        capture_output=True,
        check=False,
    )
    if found.returncode != 0:
        return (
            f"template commit {commit!r} is not in {template_dir} (the node was made from "
            "uncommitted template changes, or the template history changed)"
        )
    return None


def _update(
    job: _Job,
    target: Path,
    answers: dict[str, Any],
    src: str,
    vcs_ref: str | None,
    no_merge_base: str | None,
) -> tuple[Path, list[str], list[str]]:
    """Stage the update on a copy; returns (staging root, files, changed files).

    With a merge base this is ``copier update`` (3-way merge, conflicts inline). Without
    one (``no_merge_base`` says why) the node is re-rendered over the copy with its
    recorded answers plus the new ones: template-owned files are replaced, owner-owned
    files (``_skip_if_exists``) are kept, nothing is deleted.
    """
    from onex_scaffold._render import leftovers, render_node, update_node

    dirty = _dirty_under(target)
    if dirty:
        shown = ", ".join(dirty[:10]) + (" ..." if len(dirty) > 10 else "")
        raise _GateFailed(
            f"{target} has uncommitted changes ({shown}); commit or stash them first, "
            "so the template's changes can be reviewed on their own with git diff"
        )
    staging_root = Path(tempfile.mkdtemp(prefix=f".{target.name}.onex-update-", dir=target.parent))
    staged = staging_root / "node"
    try:
        shutil.copytree(target, staged, symlinks=True, ignore=shutil.ignore_patterns(*_COPY_IGNORE))
        # A private repository: Copier's update needs a clean git work tree, and the
        # user's own repository (if any) is never touched by the merge.
        _point_answers_at(staged / ANSWERS_FILE, src)
        _git(staged, "init", "-q")
        _git(staged, "add", "-A")
        _git(staged, "commit", "-q", "--no-verify", "--allow-empty", "-m", "before update")
        with job.gate("G3", "template_render") as notes:
            if no_merge_base is None:
                dirty_template = _run_copier(
                    lambda: update_node(
                        staged, data=_copier_data(answers), vcs_ref=vcs_ref, conflict="inline"
                    ),
                    src,
                    vcs_ref,
                )
                notes.append("copier update ran")
            else:
                previous = {
                    key: value
                    for key, value in _recorded_answers(staged).items()
                    if not key.startswith("_")
                }
                data = {**previous, **_copier_data(answers)}
                dirty_template = _run_copier(
                    lambda: render_node(
                        staged, data, template=src, vcs_ref=vcs_ref, overwrite=True
                    ),
                    src,
                    vcs_ref,
                )
                notes.append(f"re-rendered without a merge base: {no_merge_base}")
        job.metadata["template_dirty"] = bool(dirty_template)
        with job.gate("G3b", "update_conflicts") as notes:
            changed, conflicts = _staged_changes(staged)
            problems = leftovers(staged)
            if conflicts or problems:
                listed = problems + [
                    f"{path}: conflict markers"
                    for path in conflicts
                    if not any(p.startswith(f"{path}:") for p in problems)
                ]
                raise _GateFailed(
                    "the update conflicts with changes made in the node, so nothing was "
                    f"changed in {target}; conflicting files: " + "; ".join(listed)
                )
            if no_merge_base is not None and changed == [ANSWERS_FILE]:
                changed = _drop_draft_commit_change(target, staged, changed)
            notes.append(f"{len(changed)} files changed")
        shutil.rmtree(staged / ".git")
        files = _relative_files(staged)
        _check_rendered(job, staged, answers, files)
        return staging_root, files, changed
    except BaseException:
        shutil.rmtree(staging_root, ignore_errors=True)
        raise


def _drop_draft_commit_change(target: Path, staged: Path, changed: list[str]) -> list[str]:
    """Nothing but a new draft ``_commit`` changed: keep the node as it is.

    A template with uncommitted changes gets a new throw-away commit id on every render,
    which says nothing about the node; rewriting the answers file for it would make
    every re-run look like a change.
    """
    old, new = _recorded_answers(target), _recorded_answers(staged)
    old.pop("_commit", None)
    new.pop("_commit", None)
    if old == new:
        shutil.copy2(target / ANSWERS_FILE, staged / ANSWERS_FILE)
        return []
    return changed


def _staged_changes(staged: Path) -> tuple[list[str], list[str]]:
    """(changed paths, conflicting paths) in the staging repository after an update."""
    status = _git(staged, "status", "--porcelain=v1", "-z", "--untracked-files=all")
    changed: list[str] = []
    conflicts: list[str] = []
    entries = status.split("\0")
    index = 0
    while index < len(entries):
        entry = entries[index]
        index += 1
        if not entry:
            continue
        code, path = entry[:2], entry[3:]
        if code[0] in "RC" and index < len(entries):
            changed.append(entries[index])  # the rename source: gone from the node
            index += 1
        changed.append(path)
        if "U" in code or code in ("AA", "DD") or path.endswith(".rej"):
            conflicts.append(path)
            continue
        file = staged / path
        if file.is_file() and _MARKER_LINE.search(file.read_bytes()):
            markers = _MARKER_LINE.findall(file.read_bytes())
            if any(m.startswith(b"<") for m in markers) and any(
                m.startswith(b">") for m in markers
            ):
                conflicts.append(path)
    return sorted(set(changed)), sorted(set(conflicts))


def _install_new(staging_root: Path, target: Path) -> None:
    """Rename the staged node to ``target`` (absent or an empty folder)."""
    staged = staging_root / "node"
    try:
        if target.exists():
            target.rmdir()  # only an empty folder gets here; rmdir refuses anything else
        os.rename(staged, target)
    except OSError as error:
        raise _GateFailed(
            f"{target} changed while the node was rendered (something else wrote there); "
            f"nothing was installed: {error.strerror}"
        ) from error
    staging_root.rmdir()


def _install_update(staging_root: Path, target: Path, changed: list[str]) -> None:
    """Move changed files from the staged copy into ``target``; undo everything on error."""
    staged = staging_root / "node"
    backup = staging_root / "backup"
    done: list[tuple[Path, Path | None]] = []  # (target file, its backup or None if new)
    try:
        for rel in changed:
            source = staged / rel
            destination = target / rel
            saved: Path | None = None
            if destination.exists() or destination.is_symlink():
                saved = backup / rel
                saved.parent.mkdir(parents=True, exist_ok=True)
                os.rename(destination, saved)
            done.append((destination, saved))
            if source.exists() or source.is_symlink():
                destination.parent.mkdir(parents=True, exist_ok=True)
                os.rename(source, destination)
    except BaseException:
        for destination, saved in reversed(done):
            if destination.exists() or destination.is_symlink():
                destination.unlink()
            if saved is not None:
                os.rename(saved, destination)
        raise


def _check_target(target: Path) -> Literal["create", "update"]:
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise _GateFailed(f"{target} exists and is not a folder; choose a folder path")
    if not target.exists():
        return "create"
    if _is_node_from_template(target):
        return "update"
    if any(target.iterdir()):
        raise _GateFailed(
            f"{target} is not empty and holds no node from this template "
            f"(no {ANSWERS_FILE} with _src_path); choose a new or empty folder"
        )
    return "create"


def _outputs(target: Path, package: str) -> dict[str, str]:
    return {
        "main_file": str(target / package / "node.py"),
        "startup_script": str(target / "start_node.py"),
        "env_template": str(target / ".env.template"),
        "dockerfile": str(target / "Dockerfile"),
        "compose_fragment": str(target / "compose.node.yaml"),
        "answers_file": str(target / ANSWERS_FILE),
    }


def _choose_template(
    target: Path,
    mode: str,
    template: str | os.PathLike[str] | None,
    vcs_ref: str | None,
    notes: list[str],
) -> tuple[str, Path | None, str | None]:
    """(Copier source, its local folder or None, vcs_ref) for this run."""
    from onex_scaffold._snapshot import CACHE_ENV, cache_dir, snapshot

    if template is None and mode == "update":
        # Update from where the node came from, unless that is the bundled template.
        recorded = _recorded_answers(target).get("_src_path")
        if isinstance(recorded, str) and recorded != str(cache_dir()):
            if _URL.match(recorded) or Path(recorded).is_dir():
                template = recorded
            else:
                notes.append(f"the recorded template {recorded} is gone; using the bundled one")
    if template is None and vcs_ref is None:
        from onex_scaffold import __version__
        from onex_scaffold._template import template_root

        try:
            repo, commit = snapshot(template_root(), __version__)
        except (SnapshotError, OSError) as error:
            # E.g. a read-only home in a container: still generate, from the template as
            # it is installed; such nodes re-render on later runs instead of merging.
            notes.append(
                f"the template cache is not usable ({error}); rendering {template_root()} "
                f"directly. Set {CACHE_ENV} to a writable folder so updates can merge"
            )
        else:
            notes.append(f"bundled template {template_root()} as {repo} @ {commit[:12]}")
            return str(repo), repo, commit
    src, template_dir = _resolve_template(template)
    if template_dir is not None and not (template_dir / "copier.yml").is_file():
        raise _GateFailed(f"no copier.yml in template folder {template_dir}")
    return src, template_dir, vcs_ref if vcs_ref is not None else default_vcs_ref(template_dir)


def _render_and_install(
    job: _Job,
    target: Path,
    answers: dict[str, Any],
    src: str,
    template_dir: Path | None,
    ref: str | None,
    mode: str,
) -> tuple[list[str], list[str], dict[str, Any], str]:
    """Stage, check and install; returns (changed files, all files, recorded answers, mode)."""
    if mode == "update":
        with _folder_lock(target):
            return _stage_and_install(job, target, answers, src, template_dir, ref, mode)
    return _stage_and_install(job, target, answers, src, template_dir, ref, mode)


@contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Across processes: one update of an existing node folder at a time (flock on it)."""
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise _GateFailed(
                f"another process is updating {folder} right now; wait for it to finish"
            ) from error
        yield
    finally:
        os.close(descriptor)  # closing releases the lock


def _stage_and_install(
    job: _Job,
    target: Path,
    answers: dict[str, Any],
    src: str,
    template_dir: Path | None,
    ref: str | None,
    mode: str,
) -> tuple[list[str], list[str], dict[str, Any], str]:
    if mode == "update":
        no_merge_base = _missing_merge_base(_recorded_answers(target), template_dir)
        if no_merge_base is not None:
            mode = "regenerate"
            job.metadata["mode"] = mode
        staging_root, files, changed = _update(job, target, answers, src, ref, no_merge_base)
    else:
        staging_root, files, changed = _create(job, target, answers, src, ref)
    try:
        recorded = _check_answers(job, staging_root / "node", answers, src)
        with job.gate("G8", "install") as notes:
            if mode != "create":
                _install_update(staging_root, target, changed)
                notes.append(f"{len(changed)} files changed" if changed else "no change")
            else:
                _install_new(staging_root, target)
                notes.append(f"moved into {target}")
    finally:
        shutil.rmtree(staging_root, ignore_errors=True)
    return changed, files, recorded, mode


_TARGET_LOCKS: dict[Path, threading.Lock] = {}
_TARGET_LOCKS_GUARD = threading.Lock()


def _target_lock(target: Path) -> threading.Lock:
    """One run at a time per output folder in this process."""
    with _TARGET_LOCKS_GUARD:
        return _TARGET_LOCKS.setdefault(target, threading.Lock())


def _run(
    generation_result: Mapping[str, Any] | None,
    parsed_data: object,
    output_directory: str | os.PathLike[str],
    template: str | os.PathLike[str] | None,
    vcs_ref: str | None,
    extra_answers: Mapping[str, Any] | None,
) -> tuple[PipelineStage, dict[str, Any]]:
    """The whole stage, synchronously. Never raises for bad data or failed gates."""
    stage = PipelineStage(status="running", start_time=_now())
    started = time.perf_counter()
    result: dict[str, Any] = {}
    job = _Job()
    created_parents: list[Path] = []
    try:
        with job.gate("G1", "input_validation"):
            if generation_result is not None and not isinstance(generation_result, Mapping):
                problem = Problem(
                    "generation_result",
                    safe_repr(generation_result),
                    f"must be a dict or None, got {type(generation_result).__name__}",
                )
                raise _GateFailed(str(InvalidParsedData([problem])), [problem])
            result.update(generation_result or {})
            try:
                mapped = map_parsed_data(parsed_data, generation_result)
            except InvalidParsedData as error:
                raise _GateFailed(str(error), error.problems) from error
        with job.gate("G1b", "input_warnings", "warning") as notes:
            notes.extend(mapped.warnings)
        answers = dict(mapped.answers)
        if extra_answers:
            answers.update(extra_answers)
        from onex_scaffold._template import naming

        answers["package_name"] = naming().package_name(answers["service_name"])

        with job.gate("G2", "output_location") as notes:
            target = Path(os.fspath(output_directory)).expanduser().absolute()
            target = target.parent.resolve() / target.name
            mode: str = _check_target(target)
            notes.append(f"{mode} {target}")
        with job.gate("G2b", "template_available") as notes:
            src, template_dir, ref = _choose_template(target, mode, template, vcs_ref, notes)
        job.metadata.update(mode=mode, template=src, vcs_ref=ref, answers=_copier_data(answers))

        created_parents = [p for p in reversed(target.parents) if not p.exists()]
        target.parent.mkdir(parents=True, exist_ok=True)
        lock = _target_lock(target)
        if not lock.acquire(blocking=False):
            raise _GateFailed(
                f"another Stage 4.5 run is writing {target} right now; wait for it to finish"
            )
        try:
            changed, files, recorded, mode = _render_and_install(
                job, target, answers, src, template_dir, ref, mode
            )
        finally:
            lock.release()

        with job.gate("G9", "template_source", "warning") as notes:
            if job.metadata.get("template_dirty"):
                notes.append(
                    "the template had uncommitted changes: the node records a commit that "
                    "exists only in Copier's clone, so later runs cannot 3-way merge "
                    "template changes with edits to template-owned files (they re-render)"
                )
            if not recorded.get("_commit"):
                notes.append(
                    "the template is not a git repository: later runs re-render "
                    "template-owned files instead of merging; use a git template to merge"
                )
            if mode == "regenerate" and changed:
                notes.append("re-rendered without a merge base; replaced " + ", ".join(changed))
        package = answers["package_name"]
        result.update(
            _outputs(target, package),
            output_path=str(target),
            generated_files=files,
            changed_files=changed,
            node_name=naming().class_name(answers["node_name"], answers["node_type"]),
            package_name=package,
            service_name=answers["service_name"],
            node_type=answers["node_type"],
            template_version=recorded.get("_commit"),
        )
        job.metadata.update(changed_files=changed, template_version=recorded.get("_commit"))
        stage.status = "completed"
        logger.info("Stage 4.5 %s %s: %d files changed", mode, target, len(changed))
    except _GateFailed as failure:
        stage.status = "failed"
        stage.error = str(failure)
        logger.info("Stage 4.5 failed: %s", failure)
        if failure.problems:
            job.metadata["problems"] = [
                {"field": p.field, "value": p.value, "rule": p.rule} for p in failure.problems
            ]
    except Exception as error:  # the pipeline treats Stage 4.5 failures as non-fatal
        # The stage record carries one line; the traceback goes to the log for whoever debugs.
        logger.exception("Stage 4.5 failed unexpectedly for %s", safe_repr(output_directory))
        stage.status = "failed"
        stage.error = f"unexpected {type(error).__name__}: {error}"
    if stage.status != "completed":
        for parent in reversed(created_parents):  # folders this run made, deepest first
            with contextlib.suppress(OSError):
                parent.rmdir()
    stage.validation_gates = job.gates
    stage.metadata = job.metadata
    stage.end_time = _now()
    stage.duration_ms = round((time.perf_counter() - started) * 1000)
    return stage, result


async def stage_4_5_event_bus_integration(
    generation_result: dict[str, Any],
    parsed_data: dict[str, Any],
    *,
    output_directory: str | os.PathLike[str],
    template: str | os.PathLike[str] | None = None,
    vcs_ref: str | None = None,
    extra_answers: Mapping[str, Any] | None = None,
) -> tuple[PipelineStage, dict[str, Any]]:
    """Generate (or update) the node described by ``parsed_data`` in ``output_directory``.

    Returns the stage record and ``generation_result`` updated with the generated files,
    ``main_file``, ``startup_script``, ``env_template``, ``dockerfile``,
    ``compose_fragment``, ``answers_file``, ``node_name`` (the class) and
    ``template_version``. Bad data never raises: the stage is ``failed`` with an
    ``error`` and the failed gates. ``extra_answers`` passes further Copier answers
    (e.g. ``{"use_postgres": True}``); Copier validates them.
    """
    # The whole job runs in one worker thread so that cancelling the caller never
    # leaves a staging folder behind: cleanup happens in that thread.
    return await asyncio.to_thread(
        _run, generation_result, parsed_data, output_directory, template, vcs_ref, extra_answers
    )


def generate_node(
    parsed_data: dict[str, Any],
    output_directory: str | os.PathLike[str],
    *,
    generation_result: Mapping[str, Any] | None = None,
    template: str | os.PathLike[str] | None = None,
    vcs_ref: str | None = None,
    extra_answers: Mapping[str, Any] | None = None,
    raise_on_failure: bool = False,
) -> tuple[PipelineStage, dict[str, Any]]:
    """Synchronous :func:`stage_4_5_event_bus_integration` for scripts.

    Safe to call from inside a running event loop (it starts none). With
    ``raise_on_failure`` a failed stage raises :class:`StageFailed`.
    """
    stage, result = _run(
        generation_result, parsed_data, output_directory, template, vcs_ref, extra_answers
    )
    if raise_on_failure and stage.status != "completed":
        raise StageFailed(stage)
    return stage, result


# ---------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------


def _run_job(
    parsed_data: object,
    output_directory: str,
    template: str | None,
    vcs_ref: str | None,
    extra_answers: Mapping[str, Any] | None,
) -> tuple[PipelineStage, dict[str, Any]]:
    return _run(None, parsed_data, output_directory, template, vcs_ref, extra_answers)


def _worker_main() -> None:
    """A batch worker: pickled jobs on stdin, pickled ``(stage, result)`` list on stdout."""
    jobs, template, vcs_ref, extra_answers = pickle.load(sys.stdin.buffer)
    # stdout carries the results only: whatever runs meanwhile (Copier, the template's
    # migrations, which are subprocesses) prints to stderr instead, at the fd level.
    results_channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    out = [_run_job(parsed, folder, template, vcs_ref, extra_answers) for parsed, folder in jobs]
    with results_channel:
        pickle.dump(out, results_channel, protocol=pickle.HIGHEST_PROTOCOL)


def _run_in_workers(
    items: list[tuple[Mapping[str, Any], str]],
    chunks: list[list[int]],
    template: str | None,
    vcs_ref: str | None,
    extra_answers: Mapping[str, Any] | None,
) -> list[list[tuple[PipelineStage, dict[str, Any]]]]:
    """Run each chunk of jobs in its own ``python`` process, all at once.

    Plain child interpreters rather than ``multiprocessing``: fork would copy the
    caller's threads and locks in whatever state they are in, and spawn re-imports the
    caller's ``__main__`` (scripts without a ``__main__`` guard would recurse).
    """
    command = [sys.executable, "-c", "from onex_scaffold.stage import _worker_main; _worker_main()"]
    # The children import this very copy of onex_scaffold, even when the caller found it
    # through a sys.path entry of its own rather than an installation.
    here = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    processes = []
    try:
        for chunk in chunks:
            payload = ([items[index] for index in chunk], template, vcs_ref, extra_answers)
            # The jobs go in through an unnamed temporary file: no pipe to keep fed.
            with tempfile.TemporaryFile() as jobs_file:
                pickle.dump(payload, jobs_file, protocol=pickle.HIGHEST_PROTOCOL)
                jobs_file.seek(0)
                process = subprocess.Popen(
                    command,
                    stdin=jobs_file,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=env,
                )
            processes.append((process, chunk))
        outcomes: list[list[tuple[PipelineStage, dict[str, Any]]]] = []
        for process, chunk in processes:
            stdout, stderr = process.communicate()
            try:
                outcome = pickle.loads(stdout) if process.returncode == 0 else None
            except (pickle.UnpicklingError, EOFError):
                outcome = None
            if not isinstance(outcome, list) or len(outcome) != len(chunk):
                tail = stderr.decode(errors="replace").strip().splitlines()[-1:]
                reason = (
                    f"the worker process generating this node failed (exit "
                    f"{process.returncode}): {tail[0] if tail else 'no message'}"
                )
                outcome = [
                    _refused(items[index][1], reason, "G0", "batch_worker") for index in chunk
                ]
            outcomes.append(outcome)
        return outcomes
    finally:
        for process, _chunk in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def _refused(
    output_directory: str, reason: str, gate_id: str = "G2", name: str = "output_location"
) -> tuple[PipelineStage, dict[str, Any]]:
    now = _now()
    gate = ValidationGate(gate_id=gate_id, name=name, status="fail", message=reason)
    stage = PipelineStage(
        status="failed",
        start_time=now,
        end_time=now,
        duration_ms=0,
        validation_gates=[gate],
        error=reason,
        metadata={"output_directory": output_directory},
    )
    return stage, {}


def generate_nodes(
    jobs: Sequence[tuple[Mapping[str, Any], str | os.PathLike[str]]],
    *,
    template: str | os.PathLike[str] | None = None,
    vcs_ref: str | None = None,
    extra_answers: Mapping[str, Any] | None = None,
    workers: int | None = None,
) -> list[tuple[PipelineStage, dict[str, Any]]]:
    """Generate (or update) many nodes: ``jobs`` are ``(parsed_data, output_directory)``.

    Results come back in the order of ``jobs``, one ``(PipelineStage, result)`` each, as
    :func:`generate_node` returns them; nothing raises for bad data. Copier holds a
    process-wide lock while it renders (it changes the working directory), so the jobs
    are split over ``workers`` child processes (default: one per CPU) to use every core;
    ``workers=1`` runs them here. An output folder named twice in one batch is refused
    for all but its first job.
    """
    items = [(parsed, os.fspath(folder)) for parsed, folder in jobs]
    results: list[tuple[PipelineStage, dict[str, Any]] | None] = [None] * len(items)
    todo: list[int] = []
    seen: set[Path] = set()
    for index, (_parsed, folder) in enumerate(items):
        key = Path(folder).expanduser().absolute()
        if key in seen:
            results[index] = _refused(
                folder,
                f"{folder} is the output_directory of an earlier job in this batch; "
                "give every node its own folder",
            )
            continue
        seen.add(key)
        todo.append(index)
    template_text = os.fspath(template) if template is not None else None
    count = min(workers or os.cpu_count() or 1, len(todo))
    if count <= 1:
        for index in todo:
            parsed, folder = items[index]
            results[index] = _run_job(parsed, folder, template_text, vcs_ref, extra_answers)
    else:
        if template is None and vcs_ref is None:
            # Snapshot once here, so the workers all find it made instead of queueing.
            from onex_scaffold import __version__
            from onex_scaffold._snapshot import snapshot
            from onex_scaffold._template import template_root

            with contextlib.suppress(SnapshotError, OSError):  # each job reports it itself
                snapshot(template_root(), __version__)
        chunks = [todo[offset::count] for offset in range(count)]
        for chunk, outcome in zip(
            chunks,
            _run_in_workers(items, chunks, template_text, vcs_ref, extra_answers),
            strict=True,
        ):
            for index, result in zip(chunk, outcome, strict=True):
                results[index] = result
    return [result for result in results if result is not None]
