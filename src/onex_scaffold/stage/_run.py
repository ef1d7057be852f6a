"""One Stage 4.5 run: its settings and what it derives, in one object whose methods do the work.

:class:`StageRun` is built from the caller's arguments; :meth:`StageRun.run` goes through the
gates in order and never raises for bad data or a failed gate:

1. ``input_validation``: ``parsed_data`` is mapped to Copier answers (or answers are given
   directly, as ``onex-node new`` does); every problem is reported at once.
2. ``output_location``: the output folder is new, empty, or a node from this template
   (then the run *updates* it).
3. ``template_available``: the configured template (the bundled one, as a git snapshot) or
   the one the caller names. Never the one an existing answers file names.
4. ``template_render`` and the checks (:mod:`._gates`) on a staged copy beside the folder,
   then ``install`` moves it in (:mod:`._staging`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from onex_scaffold import _template
from onex_scaffold._answers import (
    ANSWERS_FILE,
    is_node_from_template,
    recorded_answers,
    user_answers,
    write_src_path,
)
from onex_scaffold._conflicts import leftovers
from onex_scaffold._exceptions import InvalidParsedData, SnapshotError
from onex_scaffold._files import SKIPPED_DIRS, relative_files
from onex_scaffold._mapping import Problem, map_parsed_data, safe_repr
from onex_scaffold._template import owner_files
from onex_scaffold.stage._gates import GateFailed, Gates, check_answers, check_rendered, copier_data
from onex_scaffold.stage._models import PipelineStage, now
from onex_scaffold.stage._staging import (
    dirty_under,
    drop_draft_commit_change,
    folder_lock,
    install_new,
    install_update,
    missing_merge_base,
    run_copier,
    stage_git,
    staged_changes,
    target_lock,
)

__all__ = ["Mode", "StageRun"]

logger = logging.getLogger(__name__)

Mode = Literal["create", "update", "regenerate"]


def _differs(installed: Path, staged: Path) -> bool:
    """Whether installing ``staged`` over ``installed`` would change anything."""
    if installed.is_symlink() or staged.is_symlink():
        return True
    if installed.is_file() and staged.is_file():
        return installed.read_bytes() != staged.read_bytes()
    return installed.exists() or staged.exists()


@dataclass
class StageRun:
    """Settings of one run (the caller's arguments) and the state it derives on the way."""

    parsed_data: object
    #: None: taken from ``generation_result`` (``output_path``, else ``main_file``'s folder).
    output_directory: str | os.PathLike[str] | None
    generation_result: Mapping[str, Any] | None = None
    template: str | os.PathLike[str] | None = None
    vcs_ref: str | None = None
    extra_answers: Mapping[str, Any] | None = None
    #: Copier answers given directly (``onex-node new``): no PRD mapping, same gates.
    answers_given: Mapping[str, Any] | None = None

    # Derived while running.
    gates: Gates = field(default_factory=Gates)
    metadata: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] = field(default_factory=dict)
    answers: dict[str, Any] = field(default_factory=dict)
    target: Path = field(default_factory=Path)
    mode: Mode = "create"
    #: What Copier renders (a folder or URL), its local folder, and the vcs ref.
    src: str = ""
    template_dir: Path | None = None
    ref: str | None = None
    #: What the node records as ``_src_path``: ``src``, or the published URL for the bundled one.
    recorded_src: str = ""
    created_parents: list[Path] = field(default_factory=list)

    # -- the whole run ----------------------------------------------------------------------

    def run(self) -> tuple[PipelineStage, dict[str, Any]]:
        """The whole stage, synchronously. Never raises for bad data or failed gates."""
        stage = PipelineStage(status="running", start_time=now())
        started = time.perf_counter()
        try:
            self.validate_input()
            self.locate_output()
            with self.gates.gate("G2b", "template_available") as notes:
                self.choose_template(notes)
            self.metadata.update(
                mode=self.mode,
                template=self.src,
                vcs_ref=self.ref,
                answers=copier_data(self.answers),
            )
            self.created_parents = [p for p in reversed(self.target.parents) if not p.exists()]
            self.target.parent.mkdir(parents=True, exist_ok=True)
            with target_lock(self.target):
                changed, files, recorded = self.render_and_install()
            self.report_source(recorded, changed)
            self.describe_result(changed, files, recorded)
            stage.status = "completed"
            logger.info("Stage 4.5 %s %s: %d files changed", self.mode, self.target, len(changed))
        except GateFailed as failure:
            stage.status = "failed"
            stage.error = str(failure)
            logger.info("Stage 4.5 failed: %s", failure)
            if failure.problems:
                self.metadata["problems"] = [
                    {"field": p.field, "value": p.value, "rule": p.rule} for p in failure.problems
                ]
            if failure.refused_input:
                self.metadata["refused_input"] = True
        except Exception as error:  # the pipeline treats Stage 4.5 failures as non-fatal
            # The stage record carries one line; the traceback goes to the log.
            logger.exception(
                "Stage 4.5 failed unexpectedly for %s", safe_repr(self.output_directory)
            )
            stage.status = "failed"
            stage.error = f"unexpected {type(error).__name__}: {error}"
        if stage.status != "completed":
            for parent in reversed(self.created_parents):  # folders this run made, deepest first
                with contextlib.suppress(OSError):
                    parent.rmdir()
        stage.validation_gates = self.gates.gates
        stage.metadata = self.metadata
        stage.end_time = now()
        stage.duration_ms = round((time.perf_counter() - started) * 1000)
        return stage, self.result

    # -- gates G1, G1b: input --------------------------------------------------------------

    def validate_input(self) -> None:
        with self.gates.gate("G1", "input_validation"):
            if self.generation_result is not None and not isinstance(
                self.generation_result, Mapping
            ):
                problem = Problem(
                    "generation_result",
                    safe_repr(self.generation_result),
                    f"must be a dict or None, got {type(self.generation_result).__name__}",
                )
                raise GateFailed(str(InvalidParsedData([problem])), [problem])
            self.result.update(self.generation_result or {})
            warnings: list[str] = []
            derived: dict[str, str] = {}
            if self.answers_given is not None:
                answers = dict(self.answers_given)
            else:
                try:
                    mapped = map_parsed_data(self.parsed_data, self.generation_result)
                except InvalidParsedData as error:
                    raise GateFailed(str(error), error.problems) from error
                answers = dict(mapped.answers)
                warnings = list(mapped.warnings)
                derived = dict(mapped.derived)
        with self.gates.gate("G1b", "input_warnings", "warning") as notes:
            notes.extend(warnings)
        if self.extra_answers:
            answers.update(self.extra_answers)
        derived = {
            key: reason
            for key, reason in derived.items()
            if key not in (self.extra_answers or {})  # the caller's answer wins
        }
        if derived:
            self.metadata["derived_answers"] = derived
        answers["package_name"] = _template.naming().package_name(answers["service_name"])
        self.answers = answers

    # -- gate G2: where ---------------------------------------------------------------------

    def locate_output(self) -> None:
        with self.gates.gate("G2", "output_location") as notes:
            folder = self.output_directory
            if folder is None:
                folder = self._output_from_generation_result()
                notes.append("output folder taken from generation_result")
            target = Path(os.fspath(folder)).expanduser().absolute()
            self.target = target.parent.resolve() / target.name
            self.mode = self._mode_of(self.target)
            if self.mode == "update":
                self._keep_the_node_s_names(recorded_answers(self.target))
            notes.append(f"{self.mode} {self.target}")

    def _keep_the_node_s_names(self, recorded: Mapping[str, Any]) -> None:
        """An update keeps the node's package and class: renaming them would drop the
        owner's code (``handlers.py`` lives in the package) or break its imports. A name
        the caller did not give is taken from the node."""
        naming = _template.naming()
        given_name = (self.generation_result or {}).get("node_name") is not None
        old_name = recorded.get("node_name")
        if isinstance(old_name, str) and not given_name and self.answers_given is None:
            self.answers["node_name"] = old_name
        old_service = recorded.get("service_name")
        if isinstance(old_service, str) and old_service != self.answers["service_name"]:
            old_package = naming.package_name(old_service)
            raise GateFailed(
                f"{self.target} holds the node {safe_repr(old_service)} (package "
                f"{safe_repr(old_package)}); "
                f"service_name {safe_repr(self.answers['service_name'])} would rename its "
                f"package to {self.answers['package_name']} and drop the owner's code in "
                f"{safe_repr(old_package)}/. An update never renames a node: keep "
                f"service_name {safe_repr(old_service)}, or generate the new node into "
                "another folder"
            )
        if isinstance(old_name, str) and old_name != self.answers["node_name"]:
            node_type = self.answers["node_type"]
            raise GateFailed(
                f"{self.target} holds the node class "
                f"{naming.class_name(old_name, node_type)}; node_name "
                f"{safe_repr(self.answers['node_name'])} would rename it to "
                f"{naming.class_name(self.answers['node_name'], node_type)}, which the "
                "owner's code may import. An update never renames a node: keep node_name "
                f"{safe_repr(old_name)}, or generate the new node into another folder"
            )

    def _output_from_generation_result(self) -> str:
        """The pipeline's output folder: ``output_path``, else the folder of ``main_file``."""
        given = self.generation_result or {}
        for key in ("output_path", "main_file"):
            value = given.get(key)
            if isinstance(value, (str, os.PathLike)) and os.fspath(value).strip():
                path = Path(os.fspath(value))
                return str(path if key == "output_path" else path.parent)
            if value is not None:
                raise GateFailed(
                    f"generation_result[{key!r}] must be a path, got {safe_repr(value)}",
                    refused_input=True,
                )
        raise GateFailed(
            "no output folder: pass output_directory, or give generation_result an "
            "'output_path' (or the 'main_file' Stage 4 wrote)",
            refused_input=True,
        )

    @staticmethod
    def _mode_of(target: Path) -> Mode:
        if target.is_symlink() or (target.exists() and not target.is_dir()):
            raise GateFailed(f"{target} exists and is not a folder; choose a folder path")
        if not target.exists():
            return "create"
        if is_node_from_template(target):
            return "update"
        if any(target.iterdir()):
            raise GateFailed(
                f"{target} is not empty and holds no node from this template "
                f"(no {ANSWERS_FILE} with _src_path); choose a new or empty folder"
            )
        return "create"

    # -- gate G2b: which template ------------------------------------------------------------

    def choose_template(self, notes: list[str]) -> None:
        """The configured template (bundled, as a snapshot) or the caller's; never the
        template an existing answers file names (that would run its tasks unchecked)."""
        from onex_scaffold import __version__
        from onex_scaffold._snapshot import CACHE_ENV, snapshot

        template, vcs_ref = self.template, self.vcs_ref
        bundled = template is None
        if bundled and vcs_ref is None:
            root = _template.template_root()
            try:
                repo, commit = snapshot(root, __version__)
            except (SnapshotError, OSError) as error:
                # E.g. a read-only home in a container: still generate, from the template as
                # it is installed; such nodes re-render on later runs instead of merging.
                notes.append(
                    f"the template cache is not usable ({error}); rendering {root} "
                    f"directly. Set {CACHE_ENV} to a writable folder so updates can merge"
                )
            else:
                notes.append(f"bundled template {root} as {repo} @ {commit[:12]}")
                self.src, self.template_dir, self.ref = str(repo), repo, commit
                self.recorded_src = _template.published_source()
                return
        src, template_dir = _template.resolve_source(template)
        if template_dir is not None and not (template_dir / "copier.yml").is_file():
            raise GateFailed(f"no copier.yml in template folder {template_dir}")
        self.src, self.template_dir = src, template_dir
        self.ref = vcs_ref if vcs_ref is not None else _template.default_vcs_ref(template_dir)
        self.recorded_src = _template.published_source() if bundled else src

    # -- gates G3-G8: render, check, install ----------------------------------------------

    def render_and_install(self) -> tuple[list[str], list[str], dict[str, Any]]:
        """Stage, check and install; returns (changed files, all files, recorded answers)."""
        if self.mode == "update":
            with folder_lock(self.target):
                return self._stage_and_install()
        return self._stage_and_install()

    def _stage_and_install(self) -> tuple[list[str], list[str], dict[str, Any]]:
        staging_root = Path(
            tempfile.mkdtemp(
                prefix=f".{self.target.name}.onex-{'new' if self.mode == 'create' else 'update'}-",
                dir=self.target.parent,
            )
        )
        try:
            if self.mode == "update":
                no_merge_base = missing_merge_base(recorded_answers(self.target), self.template_dir)
                if no_merge_base is not None:
                    self.mode = "regenerate"
                    self.metadata["mode"] = self.mode
                files, changed = self.stage_update(staging_root, no_merge_base)
            else:
                files, changed = self.stage_new(staging_root)
            recorded = check_answers(
                self.gates, staging_root / "node", self.answers, self.recorded_src
            )
            with self.gates.gate("G8", "install") as notes:
                if self.mode != "create":
                    install_update(staging_root, self.target, changed)
                    notes.append(f"{len(changed)} files changed" if changed else "no change")
                else:
                    install_new(staging_root, self.target)
                    notes.append(f"moved into {self.target}")
        finally:
            shutil.rmtree(staging_root, ignore_errors=True)
        return changed, files, recorded

    def stage_new(self, staging_root: Path) -> tuple[list[str], list[str]]:
        """Render a new node into ``staging_root/node``; returns (files, changed)."""
        from onex_scaffold._render import render_node

        staged = staging_root / "node"
        with self.gates.gate("G3", "template_render") as notes:
            dirty = run_copier(
                lambda: render_node(
                    staged, copier_data(self.answers), template=self.src, vcs_ref=self.ref
                ),
                self.src,
                self.ref,
            )
            self._record_source(staged)
            files = relative_files(staged)
            notes.append(f"rendered {len(files)} files")
        self.metadata["template_dirty"] = bool(dirty)
        self.gates.skip("G3b", "update_conflicts", "new node: nothing to merge")
        check_rendered(self.gates, staged, self.answers, files)
        return files, files

    def stage_update(
        self, staging_root: Path, no_merge_base: str | None
    ) -> tuple[list[str], list[str]]:
        """Update a copy of the node in ``staging_root/node``; returns (files, changed).

        With a merge base this is ``copier update`` (3-way merge, conflicts inline). Without
        one (``no_merge_base`` says why) the node is re-rendered over the copy with its
        recorded answers plus the new ones: template-owned files are replaced, owner-owned
        files (``_skip_if_exists``) are kept, nothing is deleted.
        """
        from onex_scaffold._render import render_node, update_node

        dirty = dirty_under(self.target)
        if dirty:
            shown = ", ".join(dirty[:10]) + (" ..." if len(dirty) > 10 else "")
            raise GateFailed(
                f"{self.target} has uncommitted changes ({shown}); commit or stash them first, "
                "so the template's changes can be reviewed on their own with git diff"
            )
        staged = staging_root / "node"
        shutil.copytree(
            self.target, staged, symlinks=True, ignore=shutil.ignore_patterns(*SKIPPED_DIRS)
        )
        # Copier updates from the recorded _src_path: point the copy at the template this
        # run uses (its old commit must exist there, see missing_merge_base).
        write_src_path(staged, self.src)
        # A private repository: Copier's update needs a clean git work tree, and the
        # user's own repository (if any) is never touched by the merge.
        stage_git(staged, "init", "-q")
        stage_git(staged, "add", "-A")
        stage_git(staged, "commit", "-q", "--no-verify", "--allow-empty", "-m", "before update")
        with self.gates.gate("G3", "template_render") as notes:
            if no_merge_base is None:
                dirty_template = run_copier(
                    lambda: update_node(
                        staged, data=copier_data(self.answers), vcs_ref=self.ref, conflict="inline"
                    ),
                    self.src,
                    self.ref,
                )
                notes.append("copier update ran")
            else:
                data = {**user_answers(recorded_answers(staged)), **copier_data(self.answers)}
                dirty_template = run_copier(
                    lambda: render_node(
                        staged, data, template=self.src, vcs_ref=self.ref, overwrite=True
                    ),
                    self.src,
                    self.ref,
                )
                notes.append(f"re-rendered without a merge base: {no_merge_base}")
            self._record_source(staged)
        self.metadata["template_dirty"] = bool(dirty_template)
        with self.gates.gate("G3b", "update_conflicts") as notes:
            changed, conflicts = staged_changes(staged)
            owned = owner_files(self.answers["package_name"], self.template_dir)
            touched = [
                rel
                for rel in sorted({*changed, *conflicts})
                if rel in owned
                and (self.target / rel).exists()
                and _differs(self.target / rel, staged / rel)
            ]
            if touched:
                raise GateFailed(
                    f"the update would change the owner's {', '.join(touched)}, so nothing "
                    f"was changed in {self.target}: an update never deletes or rewrites an "
                    "owner file (the template's _skip_if_exists). Merge the template's "
                    "change into it by hand if you want it"
                )
            problems = leftovers(staged)
            if conflicts or problems:
                listed = problems + [
                    f"{path}: conflict markers"
                    for path in conflicts
                    if not any(p.startswith(f"{path}:") for p in problems)
                ]
                raise GateFailed(
                    "the update conflicts with changes made in the node, so nothing was "
                    f"changed in {self.target}; conflicting files: " + "; ".join(listed)
                )
            # The copy was pointed at this run's template before it was committed; a file
            # that ends up as it is in the node (the answers file, usually) is no change.
            changed = [rel for rel in changed if _differs(self.target / rel, staged / rel)]
            if no_merge_base is not None and changed == [ANSWERS_FILE]:
                changed = drop_draft_commit_change(self.target, staged, changed)
            notes.append(f"{len(changed)} files changed")
        shutil.rmtree(staged / ".git")
        files = relative_files(staged)
        check_rendered(self.gates, staged, self.answers, files)
        return files, changed

    def _record_source(self, staged: Path) -> None:
        """The node records :attr:`recorded_src`, not where this run rendered it from."""
        if recorded_answers(staged).get("_src_path") != self.recorded_src:
            write_src_path(staged, self.recorded_src)

    # -- gate G9 and the result --------------------------------------------------------------

    def report_source(self, recorded: Mapping[str, Any], changed: list[str]) -> None:
        with self.gates.gate("G9", "template_source", "warning") as notes:
            if self.metadata.get("template_dirty"):
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
            if self.mode == "regenerate" and changed:
                notes.append("re-rendered without a merge base; replaced " + ", ".join(changed))

    def describe_result(
        self, changed: list[str], files: list[str], recorded: Mapping[str, Any]
    ) -> None:
        package = self.answers["package_name"]
        target = self.target
        self.result.update(
            main_file=str(target / package / "node.py"),
            startup_script=str(target / "start_node.py"),
            env_template=str(target / ".env.template"),
            dockerfile=str(target / "Dockerfile"),
            compose_fragment=str(target / "compose.node.yaml"),
            answers_file=str(target / ANSWERS_FILE),
            output_path=str(target),
            generated_files=files,
            changed_files=changed,
            node_name=_template.naming().class_name(
                self.answers["node_name"], self.answers["node_type"]
            ),
            package_name=package,
            service_name=self.answers["service_name"],
            node_type=self.answers["node_type"],
            template_version=recorded.get("_commit"),
        )
        self.metadata.update(changed_files=changed, template_version=recorded.get("_commit"))
        if self.metadata.get("derived_answers"):
            self.result["derived_answers"] = self.metadata["derived_answers"]
