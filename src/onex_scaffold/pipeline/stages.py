"""The seven stages as plain functions: one pipeline payload in, the next one out.

The stage nodes' ``handlers.py`` call these, and so does the in-process runner, so the
event-driven pipeline and the in-process one do exactly the same work. Every function
appends its ``PipelineStage`` record to the payload's ``stages`` and never raises for bad
input: a stage that cannot go on returns ``NodeGenerationFailed`` (stage, reason,
problems). The refiner and the writer both consume ``VALIDATION_COMPLETED`` and return
``None`` for the outcome that belongs to the other.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import yaml

from onex_scaffold import PipelineStage, ValidationGate, naming, template_root
from onex_scaffold.pipeline import archive as archives
from onex_scaffold.pipeline import gates as quality
from onex_scaffold.pipeline.analyzer import AnalysisError, configured_analyzer
from onex_scaffold.pipeline.events import (
    CodeGenerated,
    CodeRefined,
    ContractBuilt,
    Intelligence,
    IntelligenceGathered,
    NodeArchive,
    NodeGenerationCompleted,
    NodeGenerationFailed,
    NodeGenerationRequested,
    PrdAnalyzed,
    ProblemModel,
    ValidationCompleted,
    _Payload,
)

#: Largest encoded node archive put into an event (bytes). Kafka's default record limit is
#: 1 MiB (``message.max.bytes``); the rest of the event needs room too.
MAX_ARCHIVE_BYTES: Final = int(os.environ.get("ONEX_PIPELINE_MAX_ARCHIVE_BYTES", 900_000))
#: Consul is asked with this timeout (seconds) per call.
CONSUL_TIMEOUT_S: Final = 2.0


def _now() -> datetime:
    return datetime.now(UTC)


class _Failure(Exception):
    def __init__(
        self,
        reason: str,
        problems: list[ProblemModel] | None = None,
        *,
        invalid_input: bool = False,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.problems = problems or []
        self.invalid_input = invalid_input


class _Record:
    """Builds one stage's ``PipelineStage``."""

    def __init__(self, name: str) -> None:
        self.stage = PipelineStage(stage_name=name, status="running", start_time=_now())
        self.started = time.perf_counter()
        self.gates: list[ValidationGate] = []
        self.metadata: dict[str, Any] = {}

    def gate(
        self, name: str, status: str, message: str | None = None, gate_type: str = "blocking"
    ) -> None:
        self.gates.append(
            ValidationGate.model_validate(
                {
                    "gate_id": f"{self.stage.stage_name[:2].upper()}{len(self.gates) + 1}",
                    "name": name,
                    "status": status,
                    "gate_type": gate_type,
                    "message": message,
                }
            )
        )

    def finish(self, status: str, error: str | None = None) -> PipelineStage:
        return self.stage.model_copy(
            update={
                "status": status,
                "end_time": _now(),
                "duration_ms": round((time.perf_counter() - self.started) * 1000),
                "validation_gates": self.gates,
                "error": error,
                "metadata": self.metadata,
            }
        )


@contextmanager
def _recording(name: str) -> Iterator[_Record]:
    yield _Record(name)


def _failed(payload: _Payload, record: _Record, failure: _Failure) -> NodeGenerationFailed:
    if failure.problems:
        record.metadata["problems"] = [p.model_dump() for p in failure.problems]
    return NodeGenerationFailed(
        request=payload.request,
        stages=[*payload.stages, record.finish("failed", failure.reason)],
        stage=record.stage.stage_name,
        reason=failure.reason,
        problems=failure.problems,
        invalid_input=failure.invalid_input,
    )


def _unexpected(error: BaseException) -> _Failure:
    return _Failure(f"unexpected {type(error).__name__}: {error}")


# ---------------------------------------------------------------------------
# 1. PRD analyzer
# ---------------------------------------------------------------------------


def analyze_prd(event: NodeGenerationRequested) -> PrdAnalyzed | NodeGenerationFailed:
    record = _Record("prd_analyzer")
    try:
        try:
            analysis = configured_analyzer().analyze(event.request.prd, event.request.prd_name)
        except AnalysisError as error:
            problems = [ProblemModel(field=f, rule=r) for f, r in error.problems]
            raise _Failure(error.reason, problems, invalid_input=True) from error
        record.gate("prd_format", "pass", analysis.prd_format)
        if analysis.notes:
            record.gate("analysis_notes", "warning", "; ".join(analysis.notes), "warning")
        record.metadata.update(
            prd_format=analysis.prd_format,
            confidence=analysis.parsed_data.get("confidence"),
        )
        return PrdAnalyzed(
            request=event.request,
            stages=[*event.stages, record.finish("completed")],
            prd_format=analysis.prd_format,
            parsed_data=analysis.parsed_data,
            generation_result=analysis.generation_result,
            extra_answers=analysis.extra_answers,
        )
    except _Failure as failure:
        return _failed(event, record, failure)
    except Exception as error:
        return _failed(event, record, _unexpected(error))


# ---------------------------------------------------------------------------
# 2. Intelligence gatherer
# ---------------------------------------------------------------------------


def _consul_get(base: str, path: str) -> Any:
    url = base.rstrip("/") + path
    if not url.startswith(("http://", "https://")):
        url = "http://" + url
    with urllib.request.urlopen(url, timeout=CONSUL_TIMEOUT_S) as response:
        return json.loads(response.read())


def _next_minor(version: str) -> str | None:
    parts = version.split("-", 1)[0].split("+", 1)[0].split(".")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    return f"{parts[0]}.{int(parts[1]) + 1}.0"


def consul_address() -> str | None:
    return os.environ.get("CONSUL_HTTP_ADDR") or None


def gather_intelligence(
    event: PrdAnalyzed, consul: str | None = None
) -> IntelligenceGathered | NodeGenerationFailed:
    """What Consul knows about this service and its domain. Consul down: a warning."""
    record = _Record("intelligence_gatherer")
    parsed = event.parsed_data
    service = str(parsed.get("service_name", ""))
    domain = str(parsed.get("domain", ""))
    warnings: list[str] = []
    same_service: list[dict[str, str]] = []
    same_domain: list[dict[str, str]] = []
    clashes: list[str] = []
    state = "not_configured"
    address = consul if consul is not None else consul_address()
    try:
        if address:
            try:
                catalog = _consul_get(address, "/v1/catalog/services")
                state = "ok"
                names = sorted(name for name in catalog if isinstance(name, str))[:200]
                wanted_package = str(naming().package_name(service)) if service else ""
                for name in names:
                    if name == "consul":
                        continue
                    if (
                        name != service
                        and wanted_package
                        and name.replace("-", "_") == wanted_package
                    ):
                        clashes.append(f"{name} has the same Python package as {service}")
                    entries = _consul_get(
                        address, f"/v1/catalog/service/{urllib.parse.quote(name, safe='')}"
                    )
                    for entry in entries if isinstance(entries, list) else []:
                        meta = entry.get("ServiceMeta") or {}
                        summary = {
                            "service": name,
                            "version": str(meta.get("version", "")),
                            "node_type": str(meta.get("node_type", "")),
                            "actions": str(meta.get("actions", "")),
                        }
                        if name == service:
                            same_service.append(summary)
                        elif domain and meta.get("domain") == domain:
                            same_domain.append(summary)
                        break
                record.gate("consul", "pass", f"{len(names)} services in Consul")
            except (urllib.error.URLError, OSError, ValueError) as error:
                state = "unavailable"
                warnings.append(f"Consul at {address} did not answer ({error}); went on without it")
                record.gate("consul", "warning", warnings[-1], "warning")
        else:
            warnings.append("CONSUL_HTTP_ADDR is not set: nothing known about existing services")
            record.gate("consul", "warning", warnings[-1], "warning")
        existing = next((s["version"] for s in same_service if s["version"]), None)
        suggested = _next_minor(existing) if existing else None
        intelligence = Intelligence(
            consul=state,  # type: ignore[arg-type]
            mode="update" if same_service or event.request.existing else "create",
            existing_version=existing,
            suggested_version=suggested,
            same_service=same_service,
            same_domain=same_domain,
            name_clashes=clashes,
            warnings=warnings,
        )
        record.metadata.update(intelligence.model_dump(exclude={"warnings"}))
        return IntelligenceGathered(
            request=event.request,
            stages=[*event.stages, record.finish("completed")],
            prd_format=event.prd_format,
            parsed_data=event.parsed_data,
            generation_result=event.generation_result,
            extra_answers=event.extra_answers,
            intelligence=intelligence,
        )
    except Exception as error:
        return _failed(event, record, _unexpected(error))


# ---------------------------------------------------------------------------
# 3. Contract builder
# ---------------------------------------------------------------------------


def _template_questions() -> set[str]:
    data = yaml.safe_load((template_root() / "copier.yml").read_text(encoding="utf-8"))
    return {key for key in data if isinstance(key, str) and not key.startswith("_")}


def build_contract(event: IntelligenceGathered) -> ContractBuilt | NodeGenerationFailed:
    from onex_scaffold import InvalidParsedData, map_parsed_data

    record = _Record("contract_builder")
    try:
        parsed = dict(event.parsed_data)
        extra = dict(event.extra_answers)
        suggested = event.intelligence.suggested_version
        if suggested and "version" not in parsed and "version" not in extra:
            # The service already runs: the new node is its next version.
            extra["version"] = suggested
            record.gate("version", "warning", f"{parsed.get('service_name')} runs already: "
                        f"version {suggested}", "warning")  # fmt: skip
        try:
            mapped = map_parsed_data(parsed, event.generation_result)
        except InvalidParsedData as error:
            problems = [
                ProblemModel(field=p.field, rule=p.rule, value=p.value) for p in error.problems
            ]
            raise _Failure(
                f"{len(problems)} problem(s) in the PRD's data", problems, invalid_input=True
            ) from error
        record.gate("naming_rules", "pass", "parsed_data follows the naming rules")
        questions = _template_questions()
        unknown = sorted(set(extra) - questions)
        if unknown:
            raise _Failure(
                f"template answers {', '.join(unknown)} are not questions of the template",
                [ProblemModel(field=k, rule="is not a question of the template") for k in unknown],
                invalid_input=True,
            )
        n = naming()
        problems = []
        for key, rule in (("version", "version"), ("kafka_environment", "kafka_environment")):
            if key in extra and (message := n.check(rule, extra[key])):
                problems.append(ProblemModel(field=key, rule=message, value=str(extra[key])[:60]))
        if problems:
            raise _Failure("template answers break the naming rules", problems, invalid_input=True)
        answers = {**mapped.answers, **extra}
        if mapped.warnings:
            record.gate("input_warnings", "warning", "; ".join(mapped.warnings), "warning")
        environment = str(answers.get("kafka_environment", "dev"))
        contract = {
            "name": answers["service_name"],
            "class_name": n.class_name(answers["node_name"], answers["node_type"]),
            "package": n.package_name(answers["service_name"]),
            "node_type": answers["node_type"],
            "domain": answers["domain"],
            "version": answers.get("version", "0.1.0"),
            "actions": list(answers.get("actions") or []),
            "topics": n.node_topics(
                environment,
                answers["service_name"],
                answers["node_type"],
                tuple(answers.get("input_events") or ()),
            ),
        }
        if contract["class_name"] in {c.split(" ")[0] for c in event.intelligence.name_clashes}:
            raise _Failure(f"{contract['class_name']} clashes with a running service")
        record.metadata.update(class_name=contract["class_name"], answers=answers)
        return ContractBuilt(
            request=event.request,
            stages=[*event.stages, record.finish("completed")],
            parsed_data=parsed,
            generation_result=event.generation_result,
            extra_answers=extra,
            answers=answers,
            contract=contract,
        )
    except _Failure as failure:
        return _failed(event, record, failure)
    except Exception as error:
        return _failed(event, record, _unexpected(error))


# ---------------------------------------------------------------------------
# 4. Code generator (Stage 4.5 into a staging folder, packed into the event)
# ---------------------------------------------------------------------------


def _check_size(node: NodeArchive) -> None:
    size = archives.encoded_size(node)
    if size > MAX_ARCHIVE_BYTES:
        raise _Failure(
            f"the rendered node is {size} bytes packed, over the {MAX_ARCHIVE_BYTES}-byte limit "
            "of one event (ONEX_PIPELINE_MAX_ARCHIVE_BYTES, below the broker's "
            "message.max.bytes); make the node smaller or raise both limits"
        )


def generate_code(event: ContractBuilt) -> CodeGenerated | NodeGenerationFailed:
    from onex_scaffold import generate_node

    record = _Record("code_generator")
    try:
        with tempfile.TemporaryDirectory(prefix="onex-pipeline-gen-") as tmp:
            folder = Path(tmp) / "node"
            if event.request.existing is not None:
                try:
                    archives.unpack(event.request.existing, folder)
                except archives.ArchiveError as error:
                    raise _Failure(f"the existing node sent with the request: {error}") from error
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
                raise _Failure(f"Stage 4.5: {reason}", problems, invalid_input=bool(problems))
            node = archives.pack(folder)
        _check_size(node)
        record.gate(
            "archive", "pass", f"{node.files} files, {node.size} bytes, sha256 {node.sha256[:12]}"
        )
        mode = stage.metadata.get("mode", "create")
        return CodeGenerated(
            request=event.request,
            stages=[*event.stages, record.finish("completed")],
            answers=event.answers,
            contract=event.contract,
            archive=node,
            mode=mode if mode in ("create", "update", "regenerate") else "create",
            changed_files=list(result.get("changed_files", [])),
        )
    except _Failure as failure:
        return _failed(event, record, failure)
    except Exception as error:
        return _failed(event, record, _unexpected(error))


# ---------------------------------------------------------------------------
# 5. Validator
# ---------------------------------------------------------------------------


def validate_code(event: CodeGenerated | CodeRefined) -> ValidationCompleted | NodeGenerationFailed:
    record = _Record("validator")
    try:
        with tempfile.TemporaryDirectory(prefix="onex-pipeline-val-") as tmp:
            folder = Path(tmp) / str(event.contract.get("name", "node"))
            try:
                archives.unpack(event.archive, folder)
            except archives.ArchiveError as error:
                raise _Failure(str(error)) from error
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
        return ValidationCompleted(
            request=event.request,
            stages=[*event.stages, record.finish("completed" if passed else "failed",
                                                  None if passed else "quality gates failed")],
            answers=event.answers,
            contract=event.contract,
            archive=event.archive,
            mode=event.mode,
            changed_files=event.changed_files,
            round=event.round,
            passed=passed,
            score=total,
            findings=findings[:100],
            fixable=quality.fixable(results),
        )  # fmt: skip
    except _Failure as failure:
        return _failed(event, record, failure)
    except Exception as error:
        return _failed(event, record, _unexpected(error))


# ---------------------------------------------------------------------------
# 6. Refiner
# ---------------------------------------------------------------------------


def refine_code(event: ValidationCompleted) -> CodeRefined | NodeGenerationFailed | None:
    """None when validation passed (the writer's turn)."""
    if event.passed:
        return None
    record = _Record("code_refiner")
    try:
        if not event.fixable and quality.configured_refiner() is None:
            problems = [
                ProblemModel(
                    field=f.file or f.gate, rule=f"{f.gate}: {f.code or ''} {f.message}".strip()
                )
                for f in event.findings[:50]
            ]
            raise _Failure(
                f"the rendered node failed its quality gates (score {event.score:g}) with "
                "findings no automatic fix can repair",
                problems,
            )
        if event.round >= event.request.max_refine_rounds:
            raise _Failure(
                f"still failing after {event.round} refine round(s) "
                f"(max_refine_rounds {event.request.max_refine_rounds})"
            )
        with tempfile.TemporaryDirectory(prefix="onex-pipeline-fix-") as tmp:
            folder = Path(tmp) / "node"
            try:
                archives.unpack(event.archive, folder)
            except archives.ArchiveError as error:
                raise _Failure(str(error)) from error
            fixes = quality.refine(folder, event.findings)
            node = archives.pack(folder)
        _check_size(node)
        record.gate("fixes", "pass", ", ".join(fixes) or "nothing changed")
        return CodeRefined(
            request=event.request,
            stages=[*event.stages, record.finish("completed")],
            answers=event.answers,
            contract=event.contract,
            archive=node,
            mode=event.mode,
            changed_files=event.changed_files,
            round=event.round + 1,
            fixes=fixes,
        )
    except _Failure as failure:
        return _failed(event, record, failure)
    except Exception as error:
        return _failed(event, record, _unexpected(error))


# ---------------------------------------------------------------------------
# 7. File writer
# ---------------------------------------------------------------------------


def _install_new(staged: Path, target: Path) -> None:
    try:
        os.rename(staged, target)
    except OSError as error:
        raise _Failure(f"cannot move the node into {target}: {error}") from error


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
    with tempfile.TemporaryDirectory(prefix="onex-pipeline-dry-") as tmp:
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
    record = _Record("file_writer")
    created: list[Path] = []
    try:
        target = Path(event.request.output_directory)
        if not target.is_absolute():
            raise _Failure(
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
                raise _Failure(
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
                except _Failure:
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
                raise _Failure(f"{target} is gone; the request was to update the node there")
            current = archives.tree_digest(target)
            if current != event.request.existing.sha256:
                raise _Failure(
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
    except (_Failure, archives.ArchiveError) as failure:
        for parent in reversed(created):
            with contextlib.suppress(OSError):
                parent.rmdir()
        if isinstance(failure, archives.ArchiveError):
            failure = _Failure(str(failure))
        return _failed(event, record, failure)
    except Exception as error:
        return _failed(event, record, _unexpected(error))


def describe(payload: Mapping[str, Any]) -> str:
    return str(payload.get("kind"))
