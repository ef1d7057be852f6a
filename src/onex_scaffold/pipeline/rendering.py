"""Stages 4 to 6: code generator, validator, refiner.

The node is rendered with Stage 4.5 into a staging folder and travels on as a packed
archive; the validator and the refiner unpack it, check or fix it, and pack it again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Final

from onex_scaffold.pipeline import archive as archives
from onex_scaffold.pipeline import gates as quality
from onex_scaffold.pipeline.events import (
    CodeGenerated,
    CodeRefined,
    ContractBuilt,
    NodeArchive,
    NodeGenerationFailed,
    ProblemModel,
    ValidationCompleted,
)
from onex_scaffold.pipeline.recording import StageFailure, StageRecord
from onex_scaffold.pipeline.scratch import scratch_folder

#: Largest encoded node archive put into an event (bytes). Kafka's default record limit is
#: 1 MiB (``message.max.bytes``); the rest of the event needs room too.
MAX_ARCHIVE_BYTES: Final = int(os.environ.get("ONEX_PIPELINE_MAX_ARCHIVE_BYTES", 900_000))


# ---------------------------------------------------------------------------
# 4. Code generator (Stage 4.5 into a staging folder, packed into the event)
# ---------------------------------------------------------------------------


def _check_size(node: NodeArchive) -> None:
    size = archives.encoded_size(node)
    if size > MAX_ARCHIVE_BYTES:
        raise StageFailure(
            f"the rendered node is {size} bytes packed, over the {MAX_ARCHIVE_BYTES}-byte limit "
            "of one event (ONEX_PIPELINE_MAX_ARCHIVE_BYTES, below the broker's "
            "message.max.bytes); make the node smaller or raise both limits"
        )


def generate_code(event: ContractBuilt) -> CodeGenerated | NodeGenerationFailed:
    from onex_scaffold import generate_node

    record = StageRecord("code_generator")
    try:
        with scratch_folder("gen") as tmp:
            folder = Path(tmp) / "node"
            if event.request.existing is not None:
                try:
                    archives.unpack(event.request.existing, folder)
                except archives.ArchiveError as error:
                    raise StageFailure(
                        f"the existing node sent with the request: {error}"
                    ) from error
            stage, result = generate_node(
                event.parsed_data,
                folder,
                generation_result=event.generation_result,
                template=event.request.template,
                vcs_ref=event.request.vcs_ref,
                extra_answers=event.extra_answers or None,
            )
            record.gates.extend(stage.validation_gates)
            record.metadata.update(
                stage45=stage.metadata.get("mode"), template=stage.metadata.get("template"),
                template_version=result.get("template_version"),
            )  # fmt: skip
            if stage.status != "completed":
                problems = [
                    ProblemModel(field=p["field"], rule=p["rule"], value=p.get("value"))
                    for p in stage.metadata.get("problems", [])
                ]
                reason = f"refused {len(problems)} answer(s)" if problems else stage.error
                raise StageFailure(f"Stage 4.5: {reason}", problems, invalid_input=bool(problems))
            node = archives.pack(folder)
        _check_size(node)
        record.gate(
            "archive", "pass", f"{node.files} files, {node.size} bytes, sha256 {node.sha256[:12]}"
        )
        mode = stage.metadata.get("mode", "create")
        return event.follow(
            CodeGenerated,
            record.finish("completed"),
            archive=node,
            mode=mode if mode in ("create", "update", "regenerate") else "create",
            changed_files=list(result.get("changed_files", [])),
        )
    except Exception as error:
        return record.failed(event, error)


# ---------------------------------------------------------------------------
# 5. Validator
# ---------------------------------------------------------------------------


def validate_code(event: CodeGenerated | CodeRefined) -> ValidationCompleted | NodeGenerationFailed:
    record = StageRecord("validator")
    try:
        with scratch_folder("val") as tmp:
            folder = Path(tmp) / str(event.contract.get("name", "node"))
            try:
                archives.unpack(event.archive, folder)
            except archives.ArchiveError as error:
                raise StageFailure(str(error)) from error
            results, cached = quality.cached_gates(
                event.archive.sha256, folder, event.request.validation
            )
        record.gates.extend(quality.as_validation_gates(results))
        if cached:
            record.gate("validation_cache", "pass", "the same files passed these gates before")
        findings = [f for r in results for f in r.findings]
        passed = all(r.passed for r in results)
        total = quality.score(results)
        record.metadata.update(score=total, findings=len(findings), round=event.round)
        return event.follow(
            ValidationCompleted,
            record.finish("completed" if passed else "failed",
                          None if passed else "quality gates failed"),
            passed=passed,
            score=total,
            findings=findings[:100],
            fixable=quality.fixable(results),
        )  # fmt: skip
    except Exception as error:
        return record.failed(event, error)


# ---------------------------------------------------------------------------
# 6. Refiner
# ---------------------------------------------------------------------------


def refine_code(event: ValidationCompleted) -> CodeRefined | NodeGenerationFailed | None:
    """None when validation passed (the writer's turn)."""
    if event.passed:
        return None
    record = StageRecord("code_refiner")
    try:
        if not event.fixable and quality.configured_refiner() is None:
            problems = [
                ProblemModel(
                    field=f.file or f.gate, rule=f"{f.gate}: {f.code or ''} {f.message}".strip()
                )
                for f in event.findings[:50]
            ]
            raise StageFailure(
                f"the rendered node failed its quality gates (score {event.score:g}) with "
                "findings no automatic fix can repair",
                problems,
            )
        if event.round >= event.request.max_refine_rounds:
            raise StageFailure(
                f"still failing after {event.round} refine round(s) "
                f"(max_refine_rounds {event.request.max_refine_rounds})"
            )
        with scratch_folder("fix") as tmp:
            folder = Path(tmp) / "node"
            try:
                archives.unpack(event.archive, folder)
            except archives.ArchiveError as error:
                raise StageFailure(str(error)) from error
            fixes = quality.refine(folder, event.findings)
            node = archives.pack(folder)
        _check_size(node)
        record.gate("fixes", "pass", ", ".join(fixes) or "nothing changed")
        return event.follow(
            CodeRefined,
            record.finish("completed"),
            archive=node,
            round=event.round + 1,
            fixes=fixes,
        )
    except Exception as error:
        return record.failed(event, error)
