"""Copier Jinja extensions of the ONEX node template.

* ``ContextUpdater`` derives every name the template files need (class and
  package names, topics, event types, what the node publishes and consumes)
  from the answers, using the template's own ``runtime/naming.py``.
* ``OnexFilters`` adds the filters that put free text safely into generated
  files (``py_str``, ``yaml_str``, ``toml_str``, ``md_text``, ``hash_comment``,
  ``one_line``) and the validator filters ``onex_check`` / ``onex_check_each``.

``naming.py`` is loaded by file path from ``template/{{package_name}}/runtime/``
next to this folder: the same file every generated node ships, so an identifier
rule, topic name or event type exists exactly once. Both extensions are listed
in ``copier.yml`` as ``extensions/context.py:<Class>``.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, MutableMapping
from pathlib import Path
from types import CodeType, ModuleType
from typing import Any, TypeGuard

from copier_template_extensions import ContextHook
from jinja2 import Environment
from jinja2.ext import Extension

_HERE = Path(__file__).resolve().parent
NAMING_PATH = _HERE.parent / "template" / "{{package_name}}" / "runtime" / "naming.py"
WRITER_PATH = (
    _HERE.parent / "template" / "{{package_name}}" / "{% if postgres_writer %}writer.py{% endif %}"
)
TEXT_PATH = _HERE / "text.py"
ENVVARS_PATH = _HERE / "envvars.py"


def _load(path: Path, label: str) -> ModuleType:
    """Import a stdlib-only file by path, once per path.

    During ``copier update`` the old and the new template are both loaded in one
    process; keying the module name by path keeps their versions apart.
    """
    digest = hashlib.sha1(str(path).encode(), usedforsecurity=False).hexdigest()[:12]
    name = f"_onex_template_{label}_{digest}"
    module = sys.modules.get(name)
    if module is not None:
        return module
    # An explicit loader: a conditional file name (``{% if ... %}writer.py{% endif %}``)
    # does not end in .py, so the suffix cannot choose one.
    loader = importlib.machinery.SourceFileLoader(name, str(path))
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}: the template checkout is incomplete")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


naming = _load(NAMING_PATH, "naming")
text = _load(TEXT_PATH, "text")
envvars = _load(ENVVARS_PATH, "envvars")
writer = _load(WRITER_PATH, "writer")


def _valid(value: object, rule: str) -> TypeGuard[str]:
    return isinstance(value, str) and naming.check(rule, value) == ""


def derive(answers: Mapping[str, Any]) -> dict[str, Any]:
    """Everything computed from the answers; keys appear only once their inputs
    are answered and valid (the hook also runs while questions are being asked).
    """
    out: dict[str, Any] = {}
    node_type = answers.get("node_type")
    node_name = answers.get("node_name")
    service = answers.get("service_name")
    domain = answers.get("domain")
    env = answers.get("kafka_environment")

    if node_type in naming.NODE_TYPES:
        out["node_type_title"] = str(node_type).capitalize()
        out["uses_postgres"] = bool(
            (node_type == "effect" and answers.get("use_postgres"))
            or (node_type == "reducer" and answers.get("state_backend") == "postgres")
        )
        # The effect's out-of-the-box PostgreSQL writer (writer.py).
        out["postgres_writer"] = bool(node_type == "effect" and answers.get("use_postgres"))
        if out["postgres_writer"] and _valid(service, "service_name"):
            out["writer_table"] = writer.table_name(service)
        out["uses_kafka"] = node_type != "compute" or bool(answers.get("event_bus_enabled", True))
        out["env_vars"] = envvars.env_vars(answers)
        if _valid(node_name, "node_name"):
            out["class_name"] = naming.class_name(node_name, node_type)
            if _valid(service, "service_name"):
                out["models"] = _models(naming.package_name(service), node_name, str(node_type))
    if _valid(service, "service_name"):
        out["package_name"] = naming.package_name(service)
        out["module_name"] = naming.package_name(service)
        if _valid(domain, "domain"):
            out["event_types"] = _event_types(domain, service)
        if _valid(env, "kafka_environment"):
            out["topics"] = _topics(env, service, answers)
            if "event_types" in out and node_type in naming.NODE_TYPES:
                out["published"], out["consumed"] = _traffic(
                    str(node_type), env, service, answers, out["event_types"]
                )
    return out


def _models(package: str, node_name: str, node_type: str) -> dict[str, str]:
    """Import paths of the node's input/output (and reducer state) models."""
    where = f"{package}.handlers"
    models = {
        "input": f"{where}:Model{node_name}Input",
        "output": f"{where}:Model{node_name}Output",
        "state": "",
    }
    if node_type == "reducer":
        models["state"] = f"{where}:Model{node_name}State"
    return models


def _all_outcomes() -> list[str]:
    """Every outcome of every node type, in first-seen order (``naming.OUTCOMES``)."""
    seen: dict[str, None] = {}
    for outcomes in naming.OUTCOMES.values():
        seen.update(dict.fromkeys(outcomes))
    return list(seen)


def _event_types(domain: str, service: str) -> dict[str, str]:
    types = {
        "introspection": naming.EVENT_NODE_INTROSPECTION,
        "heartbeat": naming.EVENT_NODE_HEARTBEAT,
        "shutdown": naming.EVENT_NODE_SHUTDOWN,
        "introspection_request": naming.EVENT_INTROSPECTION_REQUESTED,
        "dead_letter": naming.EVENT_DEAD_LETTER,
        "command": naming.command_event_type(domain, service),
    }
    for outcome in _all_outcomes():
        types[naming.snake_case(outcome)] = naming.node_event_type(domain, service, outcome)
    return types


def _input_events(answers: Mapping[str, Any]) -> list[str]:
    events = answers.get("input_events")
    if not isinstance(events, list):
        return []
    return [str(e) for e in events if naming.check("service_name", e) == ""]


def _topics(env: str, service: str, answers: Mapping[str, Any]) -> dict[str, Any]:
    topics: dict[str, Any] = dict(naming.discovery_topics(env))
    topics["command"] = naming.command_topic(env, service)
    for outcome in _all_outcomes():
        topics[naming.snake_case(outcome)] = naming.node_event_topic(env, service, outcome)
    topics["inputs"] = [naming.reducer_input_topic(env, e) for e in _input_events(answers)]
    return topics


_PURPOSES = {
    "introspection": "announces the node on start and on request (keyed by node_id)",
    "heartbeat": "periodic liveness and health",
    "shutdown": "graceful stop",
    "introspection_request": "the registry asks every node to announce itself again",
    "command": "requests this node handles",
    "completed": "successful result",
    "failed": "failed request, with the error",
    "state_updated": "state after each persisted aggregation window",
    "workflow_completed": "workflow result, carrying the request's correlation_id",
    "workflow_status": "replies to get_workflow_status (the run is not started again)",
    "workflow_failed": "failed workflow, with the error and the correlation_id",
}
_CONSUMED_ROLES = ("introspection_request", "command")


def _traffic(
    node_type: str,
    env: str,
    service: str,
    answers: Mapping[str, Any],
    types: Mapping[str, str],
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """What the node publishes and consumes, from ``naming.node_topics`` (the
    runtime's own list): the README and contract.yaml both show these."""
    if node_type == "compute" and not answers.get("event_bus_enabled", True):
        return [], []
    published: list[dict[str, str]] = []
    consumed: list[dict[str, str]] = []
    roles = naming.node_topics(env, service, node_type, _input_events(answers))
    for role, topic in roles.items():
        if role.startswith("input:"):
            name = role.partition(":")[2]
            consumed.append(
                {
                    "role": "input",
                    "topic": topic,
                    "event_type": "*",
                    "purpose": f"{name} events reduced into state",
                }
            )
            continue
        item = {
            "role": role,
            "topic": topic,
            "event_type": types[role],
            "purpose": _PURPOSES.get(role, role.replace("_", " ")),
        }
        (consumed if role in _CONSUMED_ROLES else published).append(item)
    # Dead letters: records of consumed topics that cannot be processed, and events
    # that could not be published after their retries (runtime publisher).
    for item in [*consumed, *published]:
        published.append(
            {
                "role": "dead_letter",
                "topic": naming.dead_letter_topic(item["topic"]),
                "event_type": types["dead_letter"],
                "purpose": f"dead letters of {item['topic']}",
            }
        )
    return published, consumed


#: Answers ``derive`` reads; the hook runs for every file, path part and question,
#: so results are cached by these values (a render makes hundreds of contexts).
_INPUTS = (
    "node_type",
    "node_name",
    "service_name",
    "domain",
    "version",
    "kafka_environment",
    "kafka_bootstrap_servers",
    "http_port",
    "use_postgres",
    "event_bus_enabled",
    "state_backend",
    "aggregation_window_s",
    "input_events",
)
_CACHE: dict[str, dict[str, Any]] = {}


def derive_cached(context: Mapping[str, Any]) -> dict[str, Any]:
    key = repr([(name, context.get(name)) for name in _INPUTS])
    found = _CACHE.get(key)
    if found is None:
        if len(_CACHE) > 256:
            _CACHE.clear()
        found = _CACHE[key] = derive(
            {name: context.get(name) for name in _INPUTS if name in context}
        )
    return found


class ContextUpdater(ContextHook):
    """Adds the derived names to every render context (files, paths, questions)."""

    def hook(self, context: MutableMapping[str, Any]) -> None:
        context.update(derive_cached(context))


# --- validator filters --------------------------------------------------------


def onex_check(value: object, rule: str, question: str | None = None) -> str:
    """``""`` if ``value`` passes ``naming.check(rule)``, else ``"<question>: <why>"``."""
    problem = naming.check(rule, value)
    if not problem:
        return ""
    return f"{question or rule} {problem} (rule '{rule}'), got {value!r}"


def onex_check_each(value: object, rule: str, question: str, *, allow_empty: bool = False) -> str:
    """Validate a list answer element-wise; also refuses duplicates and non-lists."""
    if not isinstance(value, list):
        return f"{question} must be a list, e.g. [a, b], got {value!r}"
    if not value and not allow_empty:
        return f"{question} must list at least one item"
    for item in value:
        problem = naming.check(rule, item)
        if problem:
            return f"{question} item {item!r} {problem} (rule '{rule}')"
    duplicates = sorted({str(item) for item in value if value.count(item) > 1})
    if duplicates:
        return f"{question} lists {', '.join(duplicates)} more than once"
    return ""


_SERVER = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]):[0-9]{1,5}"
)


def onex_check_servers(value: object, question: str) -> str:
    """Kafka ``bootstrap.servers``: comma-separated ``host:port`` (IPv6 in brackets)."""
    servers = value.split(",") if isinstance(value, str) else []
    if servers and all(
        _SERVER.fullmatch(s.strip()) and 0 < int(s.strip().rpartition(":")[2]) < 65536
        for s in servers
    ):
        return ""
    return (
        f"{question} must be a comma-separated list of host:port, "
        f"e.g. omninode-bridge-redpanda:9092, got {value!r}"
    )


# --- compiled-code cache -----------------------------------------------------
#
# Copier builds a new Jinja environment for every copy and compiles every question
# attribute, path part and ``.jinja`` file again (about 300 compiles per node), which
# was over half of a node's generation time. Compiled code depends only on the source
# and the environment's parsing/code-generation settings, so it is kept per process,
# keyed by both. The store lives in ``sys.modules`` under a fixed name because Copier
# loads this file anew from every template clone (a module global would not survive).

_CODE_CACHE_NAME = "_onex_template_jinja_code_cache"
_CODE_CACHE_LIMIT = 4096


def _code_cache() -> tuple[OrderedDict[Hashable, CodeType], threading.Lock]:
    holder = sys.modules.get(_CODE_CACHE_NAME)
    if holder is None:
        created = ModuleType(_CODE_CACHE_NAME, "Jinja code compiled by the ONEX template")
        created.entries = OrderedDict()  # type: ignore[attr-defined]
        created.lock = threading.Lock()  # type: ignore[attr-defined]
        holder = sys.modules.setdefault(_CODE_CACHE_NAME, created)
    return holder.entries, holder.lock


def _environment_key(env: Environment) -> Hashable:
    """Everything of ``env`` that changes how a source is parsed or compiled."""
    autoescape = env.autoescape if isinstance(env.autoescape, bool) else id(env.autoescape)
    return (
        type(env).__module__,
        type(env).__qualname__,
        env.block_start_string,
        env.block_end_string,
        env.variable_start_string,
        env.variable_end_string,
        env.comment_start_string,
        env.comment_end_string,
        env.line_statement_prefix,
        env.line_comment_prefix,
        env.trim_blocks,
        env.lstrip_blocks,
        env.newline_sequence,
        env.keep_trailing_newline,
        env.optimized,
        env.is_async,
        autoescape,
        id(env.finalize) if env.finalize is not None else None,
        env.code_generator_class.__module__,
        env.code_generator_class.__qualname__,
        env.sandboxed,
        tuple(sorted(getattr(env, "intercepted_binops", ()))),
        tuple(sorted(getattr(env, "intercepted_unops", ()))),
        tuple(sorted(type(ext).__qualname__ for ext in env.extensions.values())),
        tuple(sorted(tag for ext in env.extensions.values() for tag in ext.tags)),
        tuple(sorted(env.filters)),
        tuple(sorted(env.tests)),
    )


def _with_filename(code: CodeType, filename: str) -> CodeType:
    """``code`` (and the functions inside it) reporting ``filename`` in tracebacks."""
    if code.co_filename == filename:
        return code
    consts = tuple(
        _with_filename(item, filename) if isinstance(item, CodeType) else item
        for item in code.co_consts
    )
    return code.replace(co_filename=filename, co_consts=consts)


def cache_compiled_code(environment: Environment) -> None:
    """Make ``environment.compile`` reuse code compiled earlier in this process."""
    original = environment.compile
    entries, lock = _code_cache()

    def compile_cached(
        source: Any,
        name: str | None = None,
        filename: str | None = None,
        raw: bool = False,
        defer_init: bool = False,
    ) -> Any:
        if raw or not isinstance(source, str):
            return original(source, name, filename, raw, defer_init)  # type: ignore[call-overload]
        key = (_environment_key(environment), source, name, defer_init)
        with lock:
            code = entries.get(key)
            if code is not None:
                entries.move_to_end(key)
        if code is None:
            code = original(source, name, filename, False, defer_init)
            with lock:
                entries[key] = code
                while len(entries) > _CODE_CACHE_LIMIT:
                    entries.popitem(last=False)
        return _with_filename(code, filename or "<template>")

    environment.compile = compile_cached  # type: ignore[method-assign]


class OnexFilters(Extension):
    """Registers the text and validator filters on Copier's Jinja environment."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        filters: dict[str, Callable[..., str]] = {
            "py_str": text.py_str,
            "yaml_str": text.yaml_str,
            "toml_str": text.toml_str,
            "md_text": text.md_text,
            "hash_comment": text.hash_comment,
            "one_line": text.one_line,
            "onex_check": onex_check,
            "onex_check_each": onex_check_each,
            "onex_check_servers": onex_check_servers,
        }
        environment.filters.update(filters)
        cache_compiled_code(environment)
