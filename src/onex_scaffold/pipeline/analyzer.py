"""Stage 1: a PRD in, ``parsed_data`` out. Deterministic, no network.

Three inputs are understood:

(a) ``parsed_data`` as JSON or YAML (what ``onex-node generate`` takes), optionally wrapped
    as ``{"parsed_data": {...}, "generation_result": {...}}``;
(b) a Markdown PRD: a ``# Title``, ``Key: value`` lines before the first ``##`` heading
    (``Node type``, ``Node name``, ``Service``, ``Domain``, ``Version``, ``Description``),
    bullet lists under ``## Operations`` and ``## Features``, optional ``## Description``
    prose, and optional ``## Template answers`` (``key: value`` lines passed to Copier,
    which validates them);
(c) free prose: the node type is inferred from what the text says the node does, the
    service name from the title (first line); confidence is lower, and when the text does
    not decide the node type the analysis fails with a reason.

The PRD is data: nothing in it is evaluated (YAML is read with the safe loader).

A language-model analyzer can be plugged in with ``ONEX_PIPELINE_ANALYZER=module:factory``
(a callable returning an object with ``analyze(text, name) -> Analysis``); the default path
never calls out.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Protocol

import yaml

from onex_scaffold import naming
from onex_scaffold._exceptions import InvalidInputError
from onex_scaffold._yaml import load_untrusted_yaml

PrdFormat = Literal["parsed_data", "markdown", "prose"]

_KEYS: Final = {
    "node type": "node_type",
    "type": "node_type",
    "node name": "node_name",
    "name": "node_name",
    "service": "service_name",
    "service name": "service_name",
    "domain": "domain",
    "version": "version",
    "description": "description",
}
_KEY_LINE: Final = re.compile(r"^\s*(?:[-*]\s+)?\**([A-Za-z][A-Za-z _-]{0,30}?)\**\s*:\s*(.*?)\s*$")
_BULLET: Final = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+(.*\S)\s*$")

#: Words that point to a node type in prose, with weights.
_TYPE_WORDS: Final[dict[str, dict[str, int]]] = {
    "effect": {
        "write": 2, "writes": 2, "store": 2, "stores": 2, "persist": 2, "persists": 2,
        "save": 2, "saves": 2, "insert": 2, "inserts": 2, "send": 2, "sends": 2,
        "call": 1, "calls": 1, "upload": 2, "uploads": 2, "email": 2, "notify": 2,
        "notifies": 2, "database": 1, "api": 1, "http": 1, "delete": 2, "deletes": 2,
        "effect": 3,
    },
    "compute": {
        "compute": 3, "computes": 3, "calculate": 3, "calculates": 3, "transform": 2,
        "transforms": 2, "convert": 2, "converts": 2, "parse": 2, "parses": 2,
        "classify": 2, "classifies": 2, "score": 2, "scores": 2, "pure": 3, "validate": 1,
        "validates": 1, "format": 1, "formats": 1,
    },
    "reducer": {
        "aggregate": 3, "aggregates": 3, "count": 2, "counts": 2, "sum": 2, "sums": 2,
        "total": 1, "totals": 2, "accumulate": 3, "accumulates": 3, "reduce": 3,
        "reduces": 3, "tally": 3, "window": 2, "running": 1, "state": 1, "reducer": 3,
    },
    "orchestrator": {
        "orchestrate": 3, "orchestrates": 3, "workflow": 3, "coordinate": 3,
        "coordinates": 3, "steps": 2, "saga": 3, "sequence": 1, "orchestrator": 3,
    },
}  # fmt: skip
_DOMAIN_WORDS: Final[dict[str, tuple[str, ...]]] = {
    "database": ("database", "postgres", "postgresql", "sql", "table", "row", "rows"),
    "billing": ("invoice", "invoices", "billing", "payment", "payments", "order", "orders"),
    "notification": ("email", "emails", "sms", "notify", "notification", "notifications"),
    "analytics": ("metrics", "analytics", "statistics", "report", "reports"),
    "discovery": ("consul", "registry", "discovery"),
}
_STOP_WORDS: Final = frozenset(
    {"a", "an", "the", "of", "for", "and", "to", "in", "on", "with", "node", "service", "prd",
     "that", "which", "this", "is", "it"}
)  # fmt: skip
_REQUIREMENT: Final = re.compile(r"\b(must|should|shall|will|needs? to)\b", re.IGNORECASE)


class AnalysisError(InvalidInputError):
    """The PRD cannot be analysed; ``problems`` are (field, rule) pairs."""

    def __init__(self, reason: str, problems: list[tuple[str, str]] | None = None) -> None:
        self.reason = reason
        self.problems = problems or []
        super().__init__(reason)


@dataclass
class Analysis:
    prd_format: PrdFormat
    parsed_data: dict[str, Any]
    generation_result: dict[str, Any] = field(default_factory=dict)
    extra_answers: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Analyzer(Protocol):
    def analyze(self, text: str, name: str | None = None) -> Analysis: ...


# ---------------------------------------------------------------------------
# (a) parsed_data
# ---------------------------------------------------------------------------


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _as_parsed_data(text: str) -> Mapping[str, Any] | None:
    """The PRD as a parsed_data mapping when it is JSON or a YAML mapping of known keys."""
    stripped = text.lstrip()
    data: object
    if stripped.startswith("{"):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError as error:
            raise AnalysisError(
                f"the PRD looks like JSON but is not valid JSON: {error}", [("prd", "valid JSON")]
            ) from error
    else:
        try:
            data = load_untrusted_yaml(text)
        except yaml.YAMLError:
            return None
        except InvalidInputError as error:  # an alias bomb: refused before it is built
            raise AnalysisError(str(error), [("prd", "bounded YAML")]) from error
    if not isinstance(data, Mapping):
        return None
    inner = data.get("parsed_data")
    if isinstance(inner, Mapping) or {"node_type", "service_name"} & set(map(str, data)):
        return data
    return None


def _from_parsed_data(data: Mapping[str, Any]) -> Analysis:
    generation_result: dict[str, Any] = {}
    parsed: object = data
    if isinstance(data.get("parsed_data"), Mapping):
        wrapped = data.get("generation_result")
        if isinstance(wrapped, Mapping):
            generation_result.update(wrapped)
        parsed = data["parsed_data"]
    assert isinstance(parsed, Mapping)
    return Analysis("parsed_data", dict(parsed), generation_result)


# ---------------------------------------------------------------------------
# (b) Markdown
# ---------------------------------------------------------------------------


def _sections(lines: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    head: list[str] = []
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in lines:
        match = re.match(r"^##\s+(.*?)\s*#*\s*$", line)
        if match:
            current = sections.setdefault(match.group(1).strip().lower(), [])
            continue
        (head if current is None else current).append(line)
    return head, sections


def _bullets(lines: list[str]) -> list[str]:
    return [m.group(1).strip() for line in lines if (m := _BULLET.match(line))]


def _paragraph(lines: list[str]) -> str:
    return " ".join(line.strip() for line in lines if line.strip() and not _BULLET.match(line))


def _plain(value: str) -> str:
    """A Markdown value without emphasis or code marks."""
    return value.strip().strip("*_`").strip()


def _from_markdown(text: str) -> Analysis:
    lines = text.splitlines()
    title = ""
    body: list[str] = []
    for index, line in enumerate(lines):
        if line.startswith("# "):
            title = line[2:].strip().strip("#").strip()
            body = lines[index + 1 :]
            break
    head, sections = _sections(body)
    fields: dict[str, str] = {}
    notes: list[str] = []
    for line in head:
        match = _KEY_LINE.match(line)
        if not match:
            continue
        key = match.group(1).strip().lower().replace("_", " ")
        if key in _KEYS:
            fields.setdefault(_KEYS[key], _plain(match.group(2)))
        else:
            notes.append(f"Markdown key {key!r} is not used")
    parsed: dict[str, Any] = {}
    explicit = 0
    for key in ("node_type", "service_name", "domain", "version", "description"):
        if fields.get(key):
            parsed[key] = fields[key]
            explicit += 1
    if "description" not in parsed:
        described = _paragraph(sections.get("description", [])) or _paragraph(
            [line for line in head if not _KEY_LINE.match(line)]
        )
        if described:
            parsed["description"] = described
    operations = _bullets(sections.get("operations", []))
    features = _bullets(sections.get("features", []))
    if operations:
        parsed["operations"] = operations
    if features:
        parsed["features"] = features
    prose = " ".join([title, parsed.get("description", ""), *operations, *features])
    if "node_type" not in parsed:
        parsed["node_type"] = _infer_node_type(prose)
        notes.append(f"node type inferred from the text: {parsed['node_type']}")
    if "service_name" not in parsed:
        if not title:
            raise AnalysisError(
                "the PRD names no service: add 'Service: <dns-label>' or a '# Title'",
                [("service_name", "is required (a 'Service:' line or a title)")],
            )
        parsed["service_name"] = _service_from_title(title)
        notes.append(f"service name taken from the title: {parsed['service_name']}")
    if "domain" not in parsed:
        parsed["domain"] = _infer_domain(prose)
        notes.append(f"domain inferred from the text: {parsed['domain']}")
    parsed["confidence"] = round(0.55 + 0.1 * min(explicit, 4), 2)
    generation_result: dict[str, Any] = {}
    if fields.get("node_name"):
        generation_result["node_name"] = fields["node_name"]
    extra: dict[str, Any] = {}
    for line in sections.get("template answers", []):
        match = _KEY_LINE.match(line)
        if match:
            value = match.group(2)
            try:
                extra[match.group(1).strip()] = load_untrusted_yaml(value) if value else ""
            except InvalidInputError as error:
                raise AnalysisError(
                    str(error), [(match.group(1).strip(), "bounded YAML")]
                ) from error
    return Analysis("markdown", parsed, generation_result, extra, notes)


# ---------------------------------------------------------------------------
# (c) prose
# ---------------------------------------------------------------------------


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def _infer_node_type(text: str) -> str:
    scores = {kind: 0 for kind in _TYPE_WORDS}
    for word in _words(text):
        for kind, weights in _TYPE_WORDS.items():
            scores[kind] += weights.get(word, 0)
    ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    (best, best_score), (_, second_score) = ranked[0], ranked[1]
    if best_score == 0 or best_score == second_score:
        detail = ", ".join(f"{kind} {score}" for kind, score in ranked)
        raise AnalysisError(
            "cannot decide the node type from the text (scores: "
            f"{detail}); say what the node does, or add 'Node type: effect|compute|reducer|"
            "orchestrator'",
            [("node_type", "must be stated or clearly implied by the text")],
        )
    return best


def _infer_domain(text: str) -> str:
    words = set(_words(text))
    for domain, markers in _DOMAIN_WORDS.items():
        if words & set(markers):
            return domain
    return "general"


def _service_from_title(title: str) -> str:
    words = [w for w in _words(title) if w not in _STOP_WORDS][:4]
    name = "-".join(words)
    name = re.sub(r"^[^a-z]+", "", name)[:63].rstrip("-")
    if not name or naming().check("service_name", name):
        raise AnalysisError(
            f"cannot make a service name from the title {title[:80]!r}: add 'Service: <dns-label>'",
            [("service_name", str(naming().RULES["service_name"][1]))],
        )
    return name


def _from_prose(text: str) -> Analysis:
    title = _first_line(text).lstrip("#").strip()
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", text) if s.strip()]
    operations = [s.rstrip(".") for s in sentences if _REQUIREMENT.search(s)][:16]
    description = " ".join(sentences[1:4]) if len(sentences) > 1 else title
    parsed: dict[str, Any] = {
        "node_type": _infer_node_type(text),
        "service_name": _service_from_title(title),
        "domain": _infer_domain(text),
        "description": description[:4000],
        "confidence": 0.5,
    }
    if operations:
        parsed["operations"] = operations
    notes = [
        f"free prose: node type {parsed['node_type']}, service {parsed['service_name']} and "
        f"domain {parsed['domain']} were inferred; state them to be sure"
    ]
    return Analysis("prose", parsed, {}, {}, notes)


# ---------------------------------------------------------------------------


class DeterministicAnalyzer:
    """The default analyzer: rules only, the same text always gives the same result."""

    def analyze(self, text: str, name: str | None = None) -> Analysis:
        if not text.strip():
            raise AnalysisError("the PRD is empty", [("prd", "must not be empty")])
        if "\x00" in text:
            raise AnalysisError("the PRD holds NUL characters", [("prd", "must be text")])
        if not _first_line(text).startswith("# ") and not (name or "").endswith(".md"):
            data = _as_parsed_data(text)
            if data is not None:
                return _from_parsed_data(data)
        if _first_line(text).startswith("# "):
            return _from_markdown(text)
        return _from_prose(text)


def configured_analyzer() -> Analyzer:
    """``ONEX_PIPELINE_ANALYZER=module:factory`` when set, else the deterministic one."""
    spec = os.environ.get("ONEX_PIPELINE_ANALYZER", "").strip()
    if not spec:
        return DeterministicAnalyzer()
    module_name, _, attribute = spec.partition(":")
    if not attribute:
        raise AnalysisError(f"ONEX_PIPELINE_ANALYZER must be module:factory, got {spec!r}")
    factory = getattr(importlib.import_module(module_name), attribute)
    analyzer: Analyzer = factory()
    return analyzer
