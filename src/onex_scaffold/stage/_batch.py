"""Many nodes at once: :func:`generate_nodes` spreads the jobs over child interpreters.

Copier holds a process-wide lock while it renders (it changes the working directory), so one
process renders one node at a time; child interpreters use every core.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from onex_scaffold._exceptions import SnapshotError
from onex_scaffold.stage._models import PipelineStage, refused
from onex_scaffold.stage._run import StageRun

__all__ = ["generate_nodes", "worker_main"]

Outcome = tuple[PipelineStage, dict[str, Any]]


def _run_job(
    parsed_data: object,
    output_directory: str,
    template: str | None,
    vcs_ref: str | None,
    extra_answers: Mapping[str, Any] | None,
) -> Outcome:
    return StageRun(
        parsed_data,
        output_directory,
        template=template,
        vcs_ref=vcs_ref,
        extra_answers=extra_answers,
    ).run()


def worker_main() -> None:
    """A batch worker: pickled jobs on stdin, pickled ``(stage, result)`` list on stdout."""
    jobs, template, vcs_ref, extra_answers = pickle.load(sys.stdin.buffer)
    # stdout carries the results only: whatever runs meanwhile (Copier, the template's
    # migrations, which are subprocesses) prints to stderr instead, at the fd level.
    results_channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    out = [_run_job(parsed, folder, template, vcs_ref, extra_answers) for parsed, folder in jobs]
    with results_channel:
        pickle.dump(out, results_channel, protocol=pickle.HIGHEST_PROTOCOL)


def _run_in_workers(
    items: list[tuple[Mapping[str, Any], str]],
    chunks: list[list[int]],
    template: str | None,
    vcs_ref: str | None,
    extra_answers: Mapping[str, Any] | None,
) -> list[list[Outcome]]:
    """Run each chunk of jobs in its own ``python`` process, all at once.

    Plain child interpreters rather than ``multiprocessing``: fork would copy the
    caller's threads and locks in whatever state they are in, and spawn re-imports the
    caller's ``__main__`` (scripts without a ``__main__`` guard would recurse).
    """
    command = [
        sys.executable,
        "-c",
        "from onex_scaffold.stage._batch import worker_main; worker_main()",
    ]
    # The children import this very copy of onex_scaffold, even when the caller found it
    # through a sys.path entry of its own rather than an installation.
    here = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (here, env.get("PYTHONPATH")) if p)
    processes = []
    try:
        for chunk in chunks:
            payload = ([items[index] for index in chunk], template, vcs_ref, extra_answers)
            # The jobs go in through an unnamed temporary file: no pipe to keep fed.
            with tempfile.TemporaryFile() as jobs_file:
                pickle.dump(payload, jobs_file, protocol=pickle.HIGHEST_PROTOCOL)
                jobs_file.seek(0)
                process = subprocess.Popen(
                    command,
                    stdin=jobs_file,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    env=env,
                )
            processes.append((process, chunk))
        outcomes: list[list[Outcome]] = []
        for process, chunk in processes:
            stdout, stderr = process.communicate()
            try:
                outcome = pickle.loads(stdout) if process.returncode == 0 else None
            except (pickle.UnpicklingError, EOFError):
                outcome = None
            if not isinstance(outcome, list) or len(outcome) != len(chunk):
                tail = stderr.decode(errors="replace").strip().splitlines()[-1:]
                reason = (
                    f"the worker process generating this node failed (exit "
                    f"{process.returncode}): {tail[0] if tail else 'no message'}"
                )
                outcome = [
                    refused(items[index][1], reason, "G0", "batch_worker") for index in chunk
                ]
            outcomes.append(outcome)
        return outcomes
    finally:
        for process, _chunk in processes:
            if process.poll() is None:
                process.kill()
                process.wait()


def generate_nodes(
    jobs: Sequence[tuple[Mapping[str, Any], str | os.PathLike[str]]],
    *,
    template: str | os.PathLike[str] | None = None,
    vcs_ref: str | None = None,
    extra_answers: Mapping[str, Any] | None = None,
    workers: int | None = None,
) -> list[Outcome]:
    """Generate (or update) many nodes: ``jobs`` are ``(parsed_data, output_directory)``.

    Results come back in the order of ``jobs``, one ``(PipelineStage, result)`` each, as
    :func:`~onex_scaffold.generate_node` returns them; nothing raises for bad data. The
    jobs are split over ``workers`` child processes (default: one per CPU) to use every
    core; ``workers=1`` runs them here. An output folder named twice in one batch is
    refused for all but its first job.
    """
    items = [(parsed, os.fspath(folder)) for parsed, folder in jobs]
    results: list[Outcome | None] = [None] * len(items)
    todo: list[int] = []
    seen: set[Path] = set()
    for index, (_parsed, folder) in enumerate(items):
        key = Path(folder).expanduser().absolute()
        if key in seen:
            results[index] = refused(
                folder,
                f"{folder} is the output_directory of an earlier job in this batch; "
                "give every node its own folder",
            )
            continue
        seen.add(key)
        todo.append(index)
    template_text = os.fspath(template) if template is not None else None
    count = min(workers or os.cpu_count() or 1, len(todo))
    if count <= 1:
        for index in todo:
            parsed, folder = items[index]
            results[index] = _run_job(parsed, folder, template_text, vcs_ref, extra_answers)
    else:
        if template is None and vcs_ref is None:
            # Snapshot once here, so the workers all find it made instead of queueing.
            from onex_scaffold import __version__, _template
            from onex_scaffold._snapshot import snapshot

            with contextlib.suppress(SnapshotError, OSError):  # each job reports it itself
                snapshot(_template.template_root(), __version__)
        chunks = [todo[offset::count] for offset in range(count)]
        for chunk, outcome in zip(
            chunks,
            _run_in_workers(items, chunks, template_text, vcs_ref, extra_answers),
            strict=True,
        ):
            for index, result in zip(chunk, outcome, strict=True):
                results[index] = result
    return [result for result in results if result is not None]
