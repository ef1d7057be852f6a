"""Stage 4.5 of the generation pipeline: parsed PRD data in, an ONEX node out, via Copier.

``stage_4_5_event_bus_integration`` fills the pipeline's Stage 4.5 slot and returns its
``PipelineStage``; :func:`generate_node` is the same work for scripts (synchronous), and
:func:`generate_nodes` runs many at once.

The package, by concern: ``_models`` (the pipeline's records), ``_gates`` (gate bookkeeping and
the checks), ``_staging`` (staging, merging, installing, locks), ``_run`` (one run's settings
and state in :class:`~onex_scaffold.stage._run.StageRun`, whose methods do the work), ``_api``
(the entry points) and ``_batch`` (worker processes).

How a run goes:

1. ``parsed_data`` is mapped to Copier answers (:mod:`onex_scaffold._mapping`); every problem is
   reported at once and nothing is written.
2. A new node is rendered into a temporary folder *beside* ``output_directory`` (same
   filesystem), checked (gates below), then renamed into place. Any failure removes it.
3. If ``output_directory`` already holds a node from a Copier template (``.copier-answers.yml``
   with ``_src_path``), the node is *updated* with the configured template instead: the folder
   is copied beside itself, the copy gets a throw-away git repository, ``copier update``
   (conflicts inline) runs there, and only when every gate passes are the changed files moved
   into the real folder. The real folder never sees a half-done update or a conflict marker. If
   it is (inside) a git work tree, it must have no uncommitted changes under the node folder:
   the template's changes are left uncommitted there for review with ``git diff``. A folder that
   is not a git repository stays one without ``.git``.

Gates (``gate_type`` blocking unless noted): input_validation, input_warnings (warning),
output_location, template_available, template_source (warning), template_render,
update_conflicts, required_files, generated_code_compiles, no_template_leftovers,
answers_recorded, install.

Template source: with no ``template`` the bundled template is rendered from a small git snapshot
of it (:mod:`onex_scaffold._snapshot`), so nodes record a commit later runs can find and updates
are real 3-way merges. Such nodes record the template's published git URL
(:func:`onex_scaffold._template.published_source`) as ``_src_path``, so a plain ``copier
update`` works on any machine. The template an existing answers file names is never run: only
the configured one, or the one the caller passes. For a ``template`` that is a local git
checkout the default ``vcs_ref`` is ``"HEAD"`` (the checkout as it is; uncommitted work becomes
a draft commit only Copier's clone has, which the ``template_source`` warning gate reports); for
anything else Copier's default applies, the newest PEP 440 tag. When a node has no reachable
merge base (template without git, lost cache, draft commit) a re-run re-renders it with its
recorded answers instead: template-owned files are replaced, owner-owned ones
(``_skip_if_exists``) kept.

Copier is not thread-safe: it changes the process working directory (plumbum's ``local.cwd``
calls ``os.chdir``) while cloning and diffing. All Copier calls therefore hold one process-wide
lock; everything else (mapping, copying, checks, moves) runs concurrently, and this module never
depends on the working directory itself."""

from __future__ import annotations

from onex_scaffold._exceptions import StageFailed
from onex_scaffold.stage._api import generate_node, stage_4_5_event_bus_integration
from onex_scaffold.stage._batch import generate_nodes
from onex_scaffold.stage._gates import REQUIRED_FILES
from onex_scaffold.stage._models import (
    STAGE_NAME,
    GateStatus,
    GateType,
    PipelineStage,
    StageStatus,
    ValidationGate,
)

__all__ = [
    "REQUIRED_FILES",
    "STAGE_NAME",
    "GateStatus",
    "GateType",
    "PipelineStage",
    "StageFailed",
    "StageStatus",
    "ValidationGate",
    "generate_node",
    "generate_nodes",
    "stage_4_5_event_bus_integration",
]
