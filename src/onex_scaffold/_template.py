"""The Copier template: where it lives, its parts, where a render takes it from, and the
runtime modules it shares with us. Modelled on Copier's ``_template.py``.

* **Where it lives.** In a checkout the template is the repository root (``copier.yml``
  beside ``src/``); in an installed wheel it ships as ``onex_scaffold/_template``.
* **Its parts.** ``copier.yml``, ``template/`` and ``extensions/`` (:data:`TEMPLATE_PARTS`),
  copied by :func:`copy_template`.
* **Source of a render.** A folder or a git URL (:func:`is_url`, :func:`resolve_source`),
  at a vcs ref (:func:`default_vcs_ref`).
* **The recorded source.** Nodes made from the bundled template record
  :func:`published_source` as their ``_src_path``: the template's published git URL
  (``$ONEX_TEMPLATE_URL``, default :data:`DEFAULT_TEMPLATE_URL`), which works on any machine,
  rather than this machine's template cache (:mod:`onex_scaffold._snapshot`).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import sys
import uuid
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Final, Protocol, cast

from onex_scaffold._git import toplevel

_PACKAGE_DIR = Path(__file__).resolve().parent
RUNTIME_DIR_IN_TEMPLATE = Path("template", "{{package_name}}", "runtime")
#: What the template is made of, relative to :func:`template_root`.
TEMPLATE_PARTS: Final = ("copier.yml", "template", "extensions")
#: Where this template is published; nodes record it (with their version tag) as ``_src_path``.
DEFAULT_TEMPLATE_URL: Final = "https://github.com/OmniNode-ai/onex-node-template.git"
#: Overrides :data:`DEFAULT_TEMPLATE_URL` (a fork, a mirror, an internal Git server).
TEMPLATE_URL_ENV: Final = "ONEX_TEMPLATE_URL"

_URL: Final = re.compile(r"^([a-z][a-z0-9+.-]*://|git@|gh:|gl:)", re.IGNORECASE)


@cache
def template_root() -> Path:
    """The folder holding ``copier.yml``: the checkout root, else the packaged copy."""
    for candidate in (_PACKAGE_DIR.parents[1], _PACKAGE_DIR / "_template"):
        if (candidate / "copier.yml").is_file() and (candidate / "template").is_dir():
            return candidate
    raise FileNotFoundError(
        "the ONEX Copier template was not found next to onex_scaffold; "
        "reinstall onex-node-template or pass --template"
    )


def copy_template(destination: Path, root: Path | None = None) -> Path:
    """Copy the template's parts (:data:`TEMPLATE_PARTS`) from ``root`` (default: the
    bundled template) into ``destination``, tool caches left out; returns ``destination``."""
    # Imported here: _files reads its list from the template through this module.
    from onex_scaffold._files import SKIPPED_DIRS

    source_root = root if root is not None else template_root()
    ignore = shutil.ignore_patterns(*SKIPPED_DIRS, "*.pyc", "*.pyo")
    destination.mkdir(parents=True, exist_ok=True)
    for part in TEMPLATE_PARTS:
        source = source_root / part
        if source.is_dir():
            shutil.copytree(source, destination / part, ignore=ignore)
        else:
            shutil.copy2(source, destination / part)
    return destination


def is_url(source: str) -> bool:
    """Whether ``source`` is a git URL (``https://``, ``file://``, ``git@``, ``gh:``...)."""
    return bool(_URL.match(source))


def resolve_source(template: str | os.PathLike[str] | None) -> tuple[str, Path | None]:
    """(source for Copier, local folder or None for URLs). Local paths are made absolute,
    because Copier records the path as given and a relative one breaks later updates."""
    if template is None:
        root = template_root()
        return str(root), root
    text = os.fspath(template)
    if is_url(text):
        return text, None
    path = Path(text).expanduser().resolve()
    return str(path), path


def default_vcs_ref(template_dir: Path | None) -> str | None:
    """``"HEAD"`` for a local git checkout, else ``None`` (Copier: newest PEP 440 tag)."""
    if template_dir is not None and toplevel(template_dir) == template_dir.resolve():
        return "HEAD"
    return None


def published_source() -> str:
    """The ``_src_path`` nodes made from the bundled template record: a URL that works on
    any machine (``$ONEX_TEMPLATE_URL``, default :data:`DEFAULT_TEMPLATE_URL`)."""
    return os.environ.get(TEMPLATE_URL_ENV, "").strip() or DEFAULT_TEMPLATE_URL


def owner_files(package: str, *template_dirs: Path | None) -> set[str]:
    """The owner's files of a node with package ``package``: the ``_skip_if_exists`` entries
    of the given templates' ``copier.yml`` and of the bundled one (a template version that
    stops listing a file does not make it the template's)."""
    import yaml

    entries: set[str] = set()
    for folder in (*template_dirs, template_root()):
        if folder is None or not (folder / "copier.yml").is_file():
            continue
        config = yaml.safe_load((folder / "copier.yml").read_text(encoding="utf-8"))
        listed = config.get("_skip_if_exists", []) if isinstance(config, dict) else []
        entries.update(str(entry) for entry in listed or [])
    return {re.sub(r"\{\{\s*package_name\s*\}\}", package, entry) for entry in entries}


class NamingModule(Protocol):
    """What the template's ``runtime/naming.py`` offers (it is loaded from the template
    at run time, so its types are stated here; ``tests/unit`` checks both agree)."""

    NODE_TYPES: tuple[str, ...]
    TOPIC_NAMESPACE: str
    RULES: dict[str, tuple[str, str]]
    OUTCOMES: dict[str, tuple[str, ...]]
    EVENT_NODE_INTROSPECTION: str
    EVENT_NODE_HEARTBEAT: str
    EVENT_NODE_SHUTDOWN: str
    EVENT_INTROSPECTION_REQUESTED: str
    EVENT_DEAD_LETTER: str

    def check(self, rule: str, value: object) -> str: ...
    def class_name(self, node_name: str, node_type: str) -> str: ...
    def package_name(self, service_name: str) -> str: ...
    def snake_case(self, text: str) -> str: ...
    def kebab_case(self, text: str) -> str: ...
    def node_id_for(self, service_name: str, instance_id: str) -> uuid.UUID: ...
    def consul_service_id(self, service_name: str, node_id: uuid.UUID | str) -> str: ...
    def consul_kv_key(self, node_id: uuid.UUID | str) -> str: ...
    def node_event_type(self, domain: str, service_name: str, outcome: str) -> str: ...
    def command_event_type(self, domain: str, service_name: str) -> str: ...
    def topic(self, environment: str, kind: str, event: str, version: int = 1) -> str: ...
    def introspection_topic(self, environment: str) -> str: ...
    def heartbeat_topic(self, environment: str) -> str: ...
    def shutdown_topic(self, environment: str) -> str: ...
    def introspection_request_topic(self, environment: str) -> str: ...
    def command_topic(self, environment: str, service_name: str) -> str: ...
    def node_event_topic(self, environment: str, service_name: str, outcome: str) -> str: ...
    def dead_letter_topic(self, source_topic: str) -> str: ...
    def discovery_topics(self, environment: str) -> dict[str, str]: ...
    def reducer_input_topic(self, environment: str, event_name: str) -> str: ...
    def node_topics(
        self,
        environment: str,
        service_name: str,
        node_type: str,
        input_events: Sequence[str] = (),
    ) -> dict[str, str]: ...


@cache
def naming() -> NamingModule:
    """The template's ``runtime/naming.py``: the one definition of names and topics."""
    return cast(NamingModule, load_runtime_module("naming"))


def load_runtime_module(name: str) -> ModuleType:
    """Import ``template/{{package_name}}/runtime/<name>.py`` as ``onex_scaffold._runtime.<name>``.

    Only runtime modules that need nothing beyond this package's own dependencies (stdlib,
    pydantic, pydantic-settings, confluent-kafka: ``naming``, ``events``, ``config``,
    ``topics``) are meant to be loaded this way.
    """
    return _load_template_module("onex_scaffold._runtime", RUNTIME_DIR_IN_TEMPLATE, name)


def load_extension_module(name: str) -> ModuleType:
    """Import the template's ``extensions/<name>.py`` as ``onex_scaffold._extensions.<name>``.

    For stdlib-only rules the template's own scripts share with this package
    (``project_files``: the folders to skip, the conflict rule):
    the scripts run where this package may not be installed, so the file lives there.
    """
    return _load_template_module("onex_scaffold._extensions", Path("extensions"), name)


def _load_template_module(package: str, folder: Path, name: str) -> ModuleType:
    if package not in sys.modules:
        spec = importlib.util.spec_from_loader(package, loader=None, is_package=True)
        assert spec is not None
        module = importlib.util.module_from_spec(spec)
        module.__path__ = [str(template_root() / folder)]
        sys.modules[package] = module
    qualified = f"{package}.{name}"
    if qualified in sys.modules:
        return sys.modules[qualified]
    path = template_root() / folder / f"{name}.py"
    spec = importlib.util.spec_from_file_location(qualified, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[qualified] = module
    spec.loader.exec_module(module)
    return module
