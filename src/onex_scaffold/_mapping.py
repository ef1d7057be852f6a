"""Stage 1 ``parsed_data`` -> Copier answers for the ONEX node template.

PRD text is written by people and language models, so every value is untrusted.
:func:`map_parsed_data` checks everything first and reports *every* problem at
once (field, the offending value shown safely, the rule it broke) by raising
:class:`InvalidParsedData`. Identifier rules come from the template's
``runtime/naming.py`` (``naming.check``); nothing here re-states them.

Identifiers are normalised only where the intent is unambiguous (case, spaces,
underscores); anything that would have to be guessed - path separators, control
characters, keywords, absurd lengths - is refused instead. Free text
(``description``) is kept as written; the template's filters render it inert.
"""

from __future__ import annotations

import keyword
import re
import reprlib
import sys
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from onex_scaffold._exceptions import InvalidParsedData
from onex_scaffold._template import naming

#: The most actions / tags passed to the template; the rest are dropped with a warning.
MAX_ACTIONS: Final = 16
MAX_TAGS: Final = 16
#: Longest free-text description accepted (characters).
MAX_DESCRIPTION_CHARS: Final = 4000
#: Longest raw text accepted for one operation / feature before it is turned into a name.
MAX_ITEM_CHARS: Final = 500
#: Longest action name made from an operation sentence (cut at a word boundary).
MAX_ACTION_CHARS: Final = 48
#: Most list entries looked at in ``operations`` / ``features`` (guards huge inputs).
MAX_LIST_ITEMS: Final = 256
DEFAULT_VERSION: Final = "0.1.0"

#: Package names that would shadow a module the generated node imports.
_RESERVED_PACKAGES: Final = frozenset(sys.stdlib_module_names) | {
    "pydantic",
    "pydantic_settings",
    "confluent_kafka",
    "asyncpg",
    "workflows",
    "llama_index",
    "pytest",
    "tests",
    "runtime",
}

#: Leading words of requirement sentences that carry no meaning in an action name.
_FILLER_WORDS: Final = frozenset(
    {"a", "an", "the", "to", "must", "should", "shall", "will", "can", "may", "be", "able"}
)

_PREVIEW_CHARS: Final = 60


#: Containers are shown this deep and this wide at most: a YAML alias web or a list of
#: itself, shared a thousand times, would otherwise take exponential time to print.
_REPR: Final = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxfrozenset = _REPR.maxdict = 6
_REPR.maxstring = _REPR.maxother = _PREVIEW_CHARS
#: Longer strings are cut before ``repr`` (which copies them); the length shown is estimated.
_MAX_REPR_INPUT: Final = 100_000


def safe_repr(value: object, limit: int = _PREVIEW_CHARS) -> str:
    """``repr`` cut to ``limit`` characters: safe to print whatever the value holds, in time
    and memory bounded by ``limit``, not by the value (containers are shown shallowly)."""
    try:
        if isinstance(value, (list, tuple, dict, set, frozenset)):
            text = _REPR.repr(value)
        elif isinstance(value, (str, bytes)) and len(value) > _MAX_REPR_INPUT:
            shown = repr(value[: limit * 2])
            return f"{shown[: limit - 3]}... ({len(value) + 2} chars)"
        else:
            text = repr(value)
    except Exception:  # a hostile object's __repr__ must not break error reporting
        text = f"<{type(value).__name__}>"
    if len(text) > limit:
        return f"{text[: limit - 3]}... ({len(text)} chars)"
    return text


@dataclass(frozen=True)
class Problem:
    """One reason the input was refused."""

    field: str
    value: str  # already made safe with :func:`safe_repr`
    rule: str

    def __str__(self) -> str:
        return f"{self.field}: {self.rule} (got {self.value})"


@dataclass
class MappingResult:
    """Answers for Copier plus non-fatal notes (dropped or rewritten values), and the
    answers the mapping turned on from what the text says, each with why (``derived``)."""

    answers: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    derived: dict[str, str] = field(default_factory=dict)


@dataclass
class _Collector:
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def problem(self, field_name: str, value: object, rule: str) -> None:
        self.problems.append(Problem(field_name, safe_repr(value), rule))


_CONTROL_CATEGORIES: Final = frozenset({"Cc", "Cs", "Co", "Cn"})


def _bad_characters(text: str, *, allow_newlines: bool) -> str:
    """Describe control, surrogate or unassigned characters in ``text`` ('' when none)."""
    allowed = {"\n", "\r", "\t"} if allow_newlines else set()
    found: list[str] = []
    for char in text:
        if char in allowed:
            continue
        if unicodedata.category(char) in _CONTROL_CATEGORIES and repr(char) not in found:
            found.append(repr(char))
            if len(found) == 5:
                break
    return ", ".join(found)


def _text(collector: _Collector, field_name: str, value: object, max_chars: int) -> str | None:
    """A string within ``max_chars`` without NUL/control characters, else a problem."""
    if not isinstance(value, str):
        collector.problem(field_name, value, f"must be a string, got {type(value).__name__}")
        return None
    if len(value) > max_chars:
        collector.problem(field_name, value, f"must be at most {max_chars} characters")
        return None
    bad = _bad_characters(value, allow_newlines=False)
    if bad:
        collector.problem(field_name, value, f"must not contain control characters ({bad})")
        return None
    return value


_PATH_SEPARATOR: Final = re.compile(r"[/\\]|\.\.")


def _identifier(
    collector: _Collector, field_name: str, value: object, rule: str, separator: str
) -> str | None:
    """Normalise case and word separators, then apply the naming rule; never guess more."""
    text = _text(collector, field_name, value, 256)
    if text is None:
        return None
    if _PATH_SEPARATOR.search(text):
        collector.problem(field_name, value, "must not contain path separators or '..'")
        return None
    normalised = re.sub(r"[\s_\-]+", separator, text.strip()).lower()
    message = naming().check(rule, normalised)
    if message:
        collector.problem(field_name, value, message)
        return None
    return normalised


def _node_type(collector: _Collector, value: object) -> str | None:
    names = naming()
    text = _text(collector, "node_type", value, 64)
    if text is None:
        return None
    candidate = text.strip().lower()
    if candidate not in names.NODE_TYPES:
        collector.problem("node_type", value, f"must be one of {', '.join(names.NODE_TYPES)}")
        return None
    return candidate


def _service_name(collector: _Collector, value: object) -> str | None:
    service = _identifier(collector, "service_name", value, "service_name", "-")
    if service is None:
        return None
    package = naming().package_name(service)
    if keyword.iskeyword(package) or keyword.issoftkeyword(package):
        collector.problem(
            "service_name", value, f"its package name {package!r} must not be a Python keyword"
        )
        return None
    if package in _RESERVED_PACKAGES:
        collector.problem(
            "service_name",
            value,
            f"its package name {package!r} would shadow the module of the same name; "
            "pick a more specific service name",
        )
        return None
    return service


def _pascal_case(service_name: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[-_]+", service_name) if part)


def _node_name(
    collector: _Collector, raw: object, node_type: str | None, service_name: str | None
) -> str | None:
    """``NodePostgresqlWriterEffect`` -> ``PostgresqlWriter``; else PascalCase of the service."""
    names = naming()
    if raw is None:
        if service_name is None:
            return None
        derived = _pascal_case(service_name)
        message = names.check("node_name", derived)
        if message:
            collector.problem("service_name", service_name, f"gives node name {derived}: {message}")
            return None
        return derived
    text = _text(collector, "generation_result.node_name", raw, 256)
    if text is None:
        return None
    core = text.strip()
    if core.startswith("Node") and len(core) > len("Node"):
        core = core[len("Node") :]
    suffixes = [node_type.capitalize()] if node_type else []
    suffixes += [kind.capitalize() for kind in names.NODE_TYPES if kind != node_type]
    for suffix in suffixes:
        if core.endswith(suffix) and len(core) > len(suffix):
            core = core[: -len(suffix)]
            break
    message = names.check("node_name", core)
    if message:
        collector.problem("generation_result.node_name", raw, message)
        return None
    return core


def _items(collector: _Collector, field_name: str, value: object) -> list[tuple[str, str]]:
    """(``field[i]``, text) for each valid entry of a list of strings."""
    if value is None:
        return []
    if not isinstance(value, list):
        collector.problem(
            field_name, value, f"must be a list of strings, got {type(value).__name__}"
        )
        return []
    if len(value) > MAX_LIST_ITEMS:
        collector.problem(field_name, value, f"must have at most {MAX_LIST_ITEMS} entries")
        return []
    result: list[tuple[str, str]] = []
    for index, item in enumerate(value):
        label = f"{field_name}[{index}]"
        text = _text(collector, label, item, MAX_ITEM_CHARS)
        if text is not None:
            result.append((label, text))
    return result


def _words(text: str) -> list[str]:
    """ASCII lower-case words of ``text`` (accents folded, everything else a separator)."""
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return [word for word in re.split(r"[^a-z0-9]+", folded.lower()) if word]


def action_from_operation(operation: str) -> str:
    """``"Must insert rows into PostgreSQL"`` -> ``insert_rows_into_postgresql`` ('' if none)."""
    words = _words(operation)
    while len(words) > 1 and words[0] in _FILLER_WORDS:
        words.pop(0)
    while words and words[0][0].isdigit():
        words.pop(0)
    name = ""
    for word in words:
        candidate = f"{name}_{word}" if name else word
        if len(candidate) > MAX_ACTION_CHARS:
            break
        name = candidate
    return name


def _unique_names(
    collector: _Collector,
    sources: list[tuple[str, str]],
    make: Callable[[str], str],
    rule: str,
    skipped_because: str,
    limit: int,
    limit_field: str,
) -> list[str]:
    """Names made from ``sources`` with ``make``: checked by ``rule``, deduplicated, capped."""
    names: list[str] = []
    for label, text in sources:
        name = make(text)
        if not name:
            collector.warnings.append(f"{label}: {skipped_because}, skipped")
            continue
        message = naming().check(rule, name)
        if message:
            collector.problem(label, text, f"gives {rule} {name!r}, which {message}")
            continue
        if name not in names:
            names.append(name)
    if len(names) > limit:
        collector.warnings.append(f"{limit_field}: {len(names)} {rule}s, kept the first {limit}")
        names = names[:limit]
    return names


def _actions(collector: _Collector, operations: object) -> list[str] | None:
    """Actions from operation sentences; ``None`` keeps the template's per-type defaults."""
    actions = _unique_names(
        collector,
        _items(collector, "operations", operations),
        action_from_operation,
        "action",
        "no letters to name an action",
        MAX_ACTIONS,
        "operations",
    )
    return actions or None


def tag_from_text(text: str) -> str:
    """``"Connection pooling"`` -> ``connection-pooling`` ('' if nothing usable is left)."""
    return "-".join(_words(text))[:63].strip("-")


def _tags(collector: _Collector, domain: str | None, features: object) -> list[str]:
    sources: list[tuple[str, str]] = [("domain", domain)] if domain else []
    sources += _items(collector, "features", features)
    return _unique_names(
        collector,
        sources,
        tag_from_text,
        "tag",
        "no letters or digits to make a tag",
        MAX_TAGS,
        "features",
    )


def _description(collector: _Collector, value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        collector.problem("description", value, f"must be a string, got {type(value).__name__}")
        return None
    if len(value) > MAX_DESCRIPTION_CHARS:
        collector.problem(
            "description", value, f"must be at most {MAX_DESCRIPTION_CHARS} characters"
        )
        return None
    bad = _bad_characters(value, allow_newlines=True)
    if bad:
        collector.problem("description", value, f"must not contain control characters ({bad})")
        return None
    return value


def _confidence(collector: _Collector, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        collector.problem("confidence", value, f"must be a number, got {type(value).__name__}")
        return None
    if not 0.0 <= float(value) <= 1.0:
        collector.problem("confidence", value, "must be between 0 and 1")
        return None
    return float(value)


#: Confidence below this adds a warning: stage 1 was unsure of what it parsed.
LOW_CONFIDENCE: Final = 0.5

#: A text says the node writes to PostgreSQL: a write verb and a database word in one item.
_WRITE_WORD: Final = re.compile(
    r"\b(?:writ(?:e|es|ing|er|ers)|wrote|insert\w*|upsert\w*|stor(?:e|es|ing)|persist\w*"
    r"|sav(?:e|es|ing))\b",
    re.IGNORECASE,
)
_DATABASE_WORD: Final = re.compile(r"\b(?:postgres(?:ql)?|pg|databases?|db)\b", re.IGNORECASE)


def _postgres_writer_reason(parsed_data: Mapping[str, Any]) -> str | None:
    """Where ``parsed_data`` says the node writes to PostgreSQL / a database, or None.

    Looks at the description, each operation and each feature (bounded like the rest of
    the mapping); the first text naming both a write and a database decides.
    """
    texts: list[tuple[str, object]] = [("description", parsed_data.get("description"))]
    for key in ("operations", "features"):
        items = parsed_data.get(key)
        if isinstance(items, list):
            texts.extend((f"{key}[{i}]", item) for i, item in enumerate(items[:MAX_LIST_ITEMS]))
    for where, text in texts:
        if not isinstance(text, str):
            continue
        sample = text[:MAX_DESCRIPTION_CHARS]
        if _WRITE_WORD.search(sample) and _DATABASE_WORD.search(sample):
            return f"{where} says the node writes to a database: {safe_repr(text)}"
    return None


_REQUIRED: Final = ("node_type", "service_name", "domain")
_KNOWN: Final = frozenset(
    {*_REQUIRED, "description", "operations", "features", "confidence", "version"}
)


def map_parsed_data(
    parsed_data: object, generation_result: Mapping[str, Any] | None = None
) -> MappingResult:
    """Turn stage 1 ``parsed_data`` into Copier answers, or raise :class:`InvalidParsedData`.

    ``generation_result["node_name"]`` (e.g. ``NodePostgresqlWriterEffect``), when present,
    names the node; otherwise the name is the service name in PascalCase.
    """
    collector = _Collector()
    if not isinstance(parsed_data, Mapping):
        collector.problem(
            "parsed_data", parsed_data, f"must be an object/dict, got {type(parsed_data).__name__}"
        )
        raise InvalidParsedData(collector.problems)
    for key in parsed_data:
        if key not in _KNOWN:
            collector.warnings.append(f"parsed_data key {safe_repr(key)} is not used")

    validators: dict[str, Callable[[object], str | None]] = {
        "node_type": lambda value: _node_type(collector, value),
        "service_name": lambda value: _service_name(collector, value),
        "domain": lambda value: _identifier(collector, "domain", value, "domain", "_"),
    }
    required: dict[str, str | None] = {}
    for key in _REQUIRED:  # in this order, so problems read top to bottom
        value = parsed_data.get(key)
        if value is None:
            collector.problems.append(Problem(key, "nothing", "is required"))
            required[key] = None
        else:
            required[key] = validators[key](value)
    node_type, service_name, domain = (required[key] for key in _REQUIRED)
    raw_name = (generation_result or {}).get("node_name")
    node_name = _node_name(collector, raw_name, node_type, service_name)
    description = _description(collector, parsed_data.get("description"))
    actions = _actions(collector, parsed_data.get("operations"))
    tags = _tags(collector, domain, parsed_data.get("features"))
    confidence = _confidence(collector, parsed_data.get("confidence"))
    version_value = parsed_data.get("version", DEFAULT_VERSION)
    version_message = naming().check("version", version_value)
    if version_message:
        collector.problem("version", version_value, version_message)

    if collector.problems:
        raise InvalidParsedData(collector.problems)
    if confidence is not None and confidence < LOW_CONFIDENCE:
        collector.warnings.append(
            f"confidence {confidence:.2f} is below {LOW_CONFIDENCE}: review the generated node"
        )

    answers: dict[str, Any] = {
        "node_type": node_type,
        "node_name": node_name,
        "service_name": service_name,
        "domain": domain,
        "version": version_value,
        "tags": tags,
    }
    if description is not None:
        answers["description"] = description
    if actions is not None:
        answers["actions"] = actions
    derived: dict[str, str] = {}
    reason = _postgres_writer_reason(parsed_data) if node_type == "effect" else None
    if reason is not None:
        # "A PostgreSQL writer" should render as one (pool, migration, writer), not as a
        # node the owner must regenerate; extra_answers can still turn it off.
        answers["use_postgres"] = True
        derived["use_postgres"] = reason
    return MappingResult(answers=answers, warnings=collector.warnings, derived=derived)
