"""The Stage 4.5 entry points: the pipeline's coroutine and the synchronous call for scripts."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from typing import Any, TypedDict, Unpack

from onex_scaffold._exceptions import StageFailed
from onex_scaffold.stage._models import PipelineStage
from onex_scaffold.stage._run import StageRun

__all__ = ["StageOptions", "generate_node", "stage_4_5_event_bus_integration"]


class StageOptions(TypedDict, total=False):
    """The template options both entry points take, all optional.

    ``template``: a template folder or git URL (default: the configured template);
    ``vcs_ref``: its tag or commit; ``extra_answers``: further Copier answers
    (e.g. ``{"use_postgres": True}``), validated by Copier.
    """

    template: str | os.PathLike[str] | None
    vcs_ref: str | None
    extra_answers: Mapping[str, Any] | None


async def stage_4_5_event_bus_integration(
    generation_result: dict[str, Any],
    parsed_data: dict[str, Any],
    *,
    output_directory: str | os.PathLike[str] | None = None,
    **options: Unpack[StageOptions],
) -> tuple[PipelineStage, dict[str, Any]]:
    """Generate (or update) the node described by ``parsed_data``.

    The node goes to ``output_directory``; without it, to ``generation_result["output_path"]``,
    else to the folder of ``generation_result["main_file"]`` (the pipeline's Stage 4 output),
    so the design's two-argument call works. With none of them the stage fails, saying so.

    Returns the stage record and ``generation_result`` updated with the generated files,
    ``main_file``, ``startup_script``, ``env_template``, ``dockerfile``,
    ``compose_fragment``, ``answers_file``, ``node_name`` (the class) and
    ``template_version``. Bad data never raises: the stage is ``failed`` with an
    ``error`` and the failed gates. ``options``: ``template``, ``vcs_ref`` and
    ``extra_answers`` (:class:`StageOptions`).
    """
    # The whole job runs in one worker thread so that cancelling the caller never
    # leaves a staging folder behind: cleanup happens in that thread.
    return await asyncio.to_thread(
        generate_node,
        parsed_data,
        output_directory,
        generation_result=generation_result,
        **options,
    )


def generate_node(
    parsed_data: dict[str, Any],
    output_directory: str | os.PathLike[str] | None = None,
    *,
    generation_result: Mapping[str, Any] | None = None,
    raise_on_failure: bool = False,
    **options: Unpack[StageOptions],
) -> tuple[PipelineStage, dict[str, Any]]:
    """Synchronous :func:`stage_4_5_event_bus_integration` for scripts.

    Safe to call from inside a running event loop (it starts none). With
    ``raise_on_failure`` a failed stage raises :class:`~onex_scaffold.StageFailed`.
    """
    stage, result = StageRun(
        parsed_data, output_directory, generation_result=generation_result, **options
    ).run()
    if raise_on_failure and stage.status != "completed":
        raise StageFailed(stage)
    return stage, result
