"""onex_scaffold: generate, update and run ONEX nodes on Kafka and Consul.

The public API is what ``__all__`` lists, imported from here (``from onex_scaffold import
generate_node``). Modules whose names start with ``_`` are internal and may change in any
release. Two sub-packages are public too: :mod:`onex_scaffold.devstack` (the local stack)
and :mod:`onex_scaffold.stage` (Stage 4.5, re-exported here).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from onex_scaffold._exceptions import (
    AnswerError,
    ConsulQueryError,
    InvalidInputError,
    InvalidParsedData,
    OnexError,
    RenderError,
    SnapshotError,
    StageFailed,
)

if TYPE_CHECKING:
    from onex_scaffold._answers import read_answers
    from onex_scaffold._conflicts import leftovers
    from onex_scaffold._fleet import NodeRow, list_nodes
    from onex_scaffold._mapping import MappingResult, Problem, map_parsed_data
    from onex_scaffold._render import (
        RenderedNode,
        jinja_leftovers,
        render_node,
        template_version,
        update_node,
    )
    from onex_scaffold._template import NamingModule, naming, template_root
    from onex_scaffold.stage import (
        PipelineStage,
        ValidationGate,
        generate_node,
        generate_nodes,
        stage_4_5_event_bus_integration,
    )

__all__ = [
    "AnswerError",
    "ConsulQueryError",
    "InvalidInputError",
    "InvalidParsedData",
    "MappingResult",
    "NamingModule",
    "NodeRow",
    "OnexError",
    "PipelineStage",
    "Problem",
    "RenderError",
    "RenderedNode",
    "SnapshotError",
    "StageFailed",
    "ValidationGate",
    "__version__",
    "generate_node",
    "generate_nodes",
    "jinja_leftovers",
    "leftovers",
    "list_nodes",
    "map_parsed_data",
    "naming",
    "read_answers",
    "render_node",
    "stage_4_5_event_bus_integration",
    "template_root",
    "template_version",
    "update_node",
]

__version__ = "0.1.0"

# Loaded on first use so that ``import onex_scaffold`` stays cheap (no pydantic, no Copier,
# no Consul client): the CLI imports this package for every command.
_LAZY: dict[str, str] = {
    "MappingResult": "onex_scaffold._mapping",
    "NamingModule": "onex_scaffold._template",
    "NodeRow": "onex_scaffold._fleet",
    "PipelineStage": "onex_scaffold.stage",
    "Problem": "onex_scaffold._mapping",
    "RenderedNode": "onex_scaffold._render",
    "ValidationGate": "onex_scaffold.stage",
    "generate_node": "onex_scaffold.stage",
    "generate_nodes": "onex_scaffold.stage",
    "jinja_leftovers": "onex_scaffold._render",
    "leftovers": "onex_scaffold._conflicts",
    "list_nodes": "onex_scaffold._fleet",
    "map_parsed_data": "onex_scaffold._mapping",
    "naming": "onex_scaffold._template",
    "read_answers": "onex_scaffold._answers",
    "render_node": "onex_scaffold._render",
    "stage_4_5_event_bus_integration": "onex_scaffold.stage",
    "template_root": "onex_scaffold._template",
    "template_version": "onex_scaffold._render",
    "update_node": "onex_scaffold._render",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'onex_scaffold' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
