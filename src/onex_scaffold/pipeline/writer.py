"""Stage 7: the file writer installs the validated node atomically (create or update)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from onex_scaffold.pipeline import archive as archives
from onex_scaffold.pipeline.events import (
    NodeGenerationCompleted,
    NodeGenerationFailed,
    ProblemModel,
    ValidationCompleted,
)
from onex_scaffold.pipeline.recording import StageFailure, StageRecord
from onex_scaffold.pipeline.scratch import scratch_folder

# ---------------------------------------------------------------------------
# 7. File writer
# ---------------------------------------------------------------------------


def _install_new(staged: Path, target: Path) -> None:
    try:
        os.rename(staged, target)
    except OSError as error:
        raise StageFailure(f"cannot move the node into {target}: {error}") from error


def _install_update(staged: Path, target: Path) -> list[str]:
    """Replace the files that differ, each atomically; owner files come back unchanged
    from Stage 4.5, so they are never rewritten."""
    changed = []
    for rel in archives.node_files(staged):
        new = staged / rel
        old = target / rel
        if old.is_file() and old.read_bytes() == new.read_bytes():
            continue
        old.parent.mkdir(parents=True, exist_ok=True)
        os.replace(new, old)
        changed.append(rel)
    return changed


def _would_change(event: ValidationCompleted, target: Path) -> list[str]:
    with scratch_folder("dry") as tmp:
        staged = Path(tmp) / "node"
        archives.unpack(event.archive, staged)
        return [
            rel
            for rel in archives.node_files(staged)
            if not (target / rel).is_file()
            or (target / rel).read_bytes() != (staged / rel).read_bytes()
        ]


def write_files(
    event: ValidationCompleted,
) -> NodeGenerationCompleted | NodeGenerationFailed | None:
    """None when validation did not pass (the refiner's turn). Idempotent per request: a
    folder that already holds exactly this node is left alone and reported completed."""
    if not event.passed:
        return None
    record = StageRecord("file_writer")
    created: list[Path] = []
    try:
        target = Path(event.request.output_directory)
        if not target.is_absolute():
            raise StageFailure(
                f"output_directory {str(target)!r} must be absolute",
                [ProblemModel(field="output_directory", rule="must be an absolute path")],
            )
        mode = event.mode
        changed: list[str] = []
        if event.request.dry_run:
            changed = _would_change(event, target)
            record.gate("install", "skipped", f"dry run: {len(changed)} files would change")
        elif target.exists() and archives.tree_digest(target) == event.archive.sha256:
            record.gate("install", "pass", f"{target} already holds this node: nothing written")
        elif event.request.existing is None:
            if target.exists() and (not target.is_dir() or any(target.iterdir())):
                raise StageFailure(
                    f"{target} exists and is not empty; choose a new folder, or send the "
                    "existing node with the request to update it",
                    [ProblemModel(field="output_directory", rule="must be new or empty")],
                )
            created = [p for p in reversed(target.parents) if not p.exists()]
            target.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(
                tempfile.mkdtemp(prefix=f".{target.name}.onex-pipeline-", dir=target.parent)
            )
            try:
                staged = staging / "node"
                archives.unpack(event.archive, staged)
                with contextlib.suppress(OSError):
                    target.rmdir()  # an empty folder given as the target
                try:
                    _install_new(staged, target)
                except StageFailure:
                    # Another delivery of this request won the race with the same node.
                    if target.exists() and archives.tree_digest(target) == event.archive.sha256:
                        record.gate("install", "pass", f"{target} already holds this node")
                    else:
                        raise
                else:
                    changed = archives.node_files(target)
                    record.gate("install", "pass", f"moved into {target}")
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        else:
            if not target.is_dir():
                raise StageFailure(f"{target} is gone; the request was to update the node there")
            current = archives.tree_digest(target)
            if current != event.request.existing.sha256:
                raise StageFailure(
                    f"{target} changed since the request was sent; send the request again",
                    [
                        ProblemModel(
                            field="output_directory", rule="must not change during a request"
                        )
                    ],
                )
            staging = Path(
                tempfile.mkdtemp(prefix=f".{target.name}.onex-pipeline-", dir=target.parent)
            )
            try:
                staged = staging / "node"
                archives.unpack(event.archive, staged)
                changed = _install_update(staged, target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            record.gate(
                "install", "pass", f"{len(changed)} files changed" if changed else "no change"
            )
        record.metadata.update(output_path=str(target), changed_files=changed)
        contract = event.contract
        return NodeGenerationCompleted(
            request=event.request,
            stages=[*event.stages, record.finish("completed")],
            output_path=str(target),
            node_name=str(contract.get("class_name", "")),
            service_name=str(contract.get("name", "")),
            node_type=str(contract.get("node_type", "")),
            mode=mode,
            files=event.archive.files,
            changed_files=changed if mode != "create" or event.request.dry_run else [],
            sha256=event.archive.sha256,
            score=event.score,
        )
    except (StageFailure, archives.ArchiveError) as failure:
        for parent in reversed(created):
            with contextlib.suppress(OSError):
                parent.rmdir()
        if isinstance(failure, archives.ArchiveError):
            failure = StageFailure(str(failure))
        return record.failed(event, failure)
    except Exception as error:
        return record.failed(event, error)
