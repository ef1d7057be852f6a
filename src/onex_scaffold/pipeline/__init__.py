"""The generation pipeline as seven stages on the event bus (see docs/pipeline.md).

``request_node`` (client) sends a PRD through the running stage nodes; ``run_in_process``
runs the same stages here; ``stages`` holds the stage logic the stage nodes call.
"""

from __future__ import annotations

from onex_scaffold.pipeline.runner import PipelineResult, make_request, run_in_process

__all__ = ["PipelineResult", "make_request", "run_in_process"]
