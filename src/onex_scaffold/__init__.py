"""onex_scaffold: generate, update and run ONEX nodes on Kafka and Consul."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from onex_scaffold.stage import (
        PipelineStage,
        generate_node,
        generate_nodes,
        stage_4_5_event_bus_integration,
    )

__all__ = [
    "PipelineStage",
    "__version__",
    "generate_node",
    "generate_nodes",
    "stage_4_5_event_bus_integration",
]

__version__ = "0.1.0"

# Loaded on first use so that ``import onex_scaffold`` stays cheap (no pydantic, no Copier).
_LAZY = {
    "PipelineStage": "onex_scaffold.stage",
    "generate_node": "onex_scaffold.stage",
    "generate_nodes": "onex_scaffold.stage",
    "stage_4_5_event_bus_integration": "onex_scaffold.stage",
}


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'onex_scaffold' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value
