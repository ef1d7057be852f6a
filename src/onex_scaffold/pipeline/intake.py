"""Stages 1 to 3: PRD analyzer, intelligence gatherer, contract builder.

From the request's PRD to the node's contract and Copier answers; nothing is rendered yet.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Final

import yaml

from onex_scaffold import naming, template_root
from onex_scaffold.pipeline.analyzer import AnalysisError, configured_analyzer
from onex_scaffold.pipeline.events import (
    ContractBuilt,
    Intelligence,
    IntelligenceGathered,
    NodeGenerationFailed,
    NodeGenerationRequested,
    PrdAnalyzed,
    ProblemModel,
)
from onex_scaffold.pipeline.recording import StageFailure, StageRecord

#: Consul is asked with this timeout (seconds) per call.
CONSUL_TIMEOUT_S: Final = 2.0


# ---------------------------------------------------------------------------
# 1. PRD analyzer
# ---------------------------------------------------------------------------


def analyze_prd(event: NodeGenerationRequested) -> PrdAnalyzed | NodeGenerationFailed:
    record = StageRecord("prd_analyzer")
    try:
        try:
            analysis = configured_analyzer().analyze(event.request.prd, event.request.prd_name)
        except AnalysisError as error:
            problems = [ProblemModel(field=f, rule=r) for f, r in error.problems]
            raise StageFailure(error.reason, problems, invalid_input=True) from error
        record.gate("prd_format", "pass", analysis.prd_format)
        if analysis.notes:
            record.gate("analysis_notes", "warning", "; ".join(analysis.notes), "warning")
        record.metadata.update(
            prd_format=analysis.prd_format,
            confidence=analysis.parsed_data.get("confidence"),
        )
        return event.follow(
            PrdAnalyzed,
            record.finish("completed"),
            prd_format=analysis.prd_format,
            parsed_data=analysis.parsed_data,
            generation_result=analysis.generation_result,
            extra_answers=analysis.extra_answers,
        )
    except Exception as error:
        return record.failed(event, error)


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
    record = StageRecord("intelligence_gatherer")
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
        return event.follow(
            IntelligenceGathered, record.finish("completed"), intelligence=intelligence
        )
    except Exception as error:
        return record.failed(event, error)


# ---------------------------------------------------------------------------
# 3. Contract builder
# ---------------------------------------------------------------------------


def _template_questions() -> set[str]:
    data = yaml.safe_load((template_root() / "copier.yml").read_text(encoding="utf-8"))
    return {key for key in data if isinstance(key, str) and not key.startswith("_")}


def build_contract(event: IntelligenceGathered) -> ContractBuilt | NodeGenerationFailed:
    from onex_scaffold import InvalidParsedData, map_parsed_data

    record = StageRecord("contract_builder")
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
            raise StageFailure(
                f"{len(problems)} problem(s) in the PRD's data", problems, invalid_input=True
            ) from error
        record.gate("naming_rules", "pass", "parsed_data follows the naming rules")
        questions = _template_questions()
        unknown = sorted(set(extra) - questions)
        if unknown:
            raise StageFailure(
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
            raise StageFailure(
                "template answers break the naming rules", problems, invalid_input=True
            )
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
            raise StageFailure(f"{contract['class_name']} clashes with a running service")
        record.metadata.update(class_name=contract["class_name"], answers=answers)
        return event.follow(
            ContractBuilt,
            record.finish("completed"),
            parsed_data=parsed,
            extra_answers=extra,
            answers=answers,
            contract=contract,
        )
    except Exception as error:
        return record.failed(event, error)
