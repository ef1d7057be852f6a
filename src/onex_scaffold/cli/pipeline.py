"""``onex-node pipeline request``: send a PRD through the running pipeline.

Exit codes: 0 completed; 2 invalid PRD (the problems listed); 1 failed or timed out (the
stage it was waiting for named). Errors are :class:`~onex_scaffold.OnexError` (most from
``onex_scaffold.pipeline.errors``), printed once by ``onex_scaffold.cli.main``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from onex_scaffold._exceptions import InvalidInputError, OnexError
from onex_scaffold.pipeline import events
from onex_scaffold.pipeline.errors import PipelineError

#: A node failed or drifted (regenerate-self); errors exit with their OnexError's code.
_FAILED = 1


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "pipeline",
        help="generate nodes through the event-driven pipeline (seven stage nodes on Kafka)",
        description="The generation pipeline as seven ONEX nodes on the event bus.",
    )
    commands = parser.add_subparsers(dest="pipeline_command", required=True, metavar="COMMAND")
    request = commands.add_parser(
        "request",
        help="send a PRD through the running pipeline and wait for the node",
        description=(
            "Publish NODE_GENERATION_REQUESTED for the PRD (Markdown, parsed_data JSON/YAML, "
            "or prose), follow the stages and print where the node is. An --out folder that "
            "already holds a node from the template is updated."
        ),
    )
    request.add_argument("--prd", required=True, type=Path, metavar="FILE", help="the PRD")
    request.add_argument("--out", required=True, type=Path, metavar="DIR", help="node folder")
    _bus_options(request, timeout_s=120)
    request.add_argument(
        "--dry-run",
        action="store_true",
        help="run every stage but write nothing; list the files the node would change",
    )
    request.add_argument(
        "--in-process",
        action="store_true",
        help="run the seven stages in this process instead of on the bus (no Kafka needed)",
    )
    request.set_defaults(func=run_request)

    regenerate = commands.add_parser(
        "regenerate-self",
        help="send the PRD of every node under nodes/ through the running pipeline",
        description=(
            "Regenerate our own nodes (the registry and the seven stage nodes) from the PRD.md "
            "each keeps, through the running pipeline in update mode: owner files are kept, "
            "template-owned files are what the pipeline makes. --check writes nothing and "
            "exits 1 when a template-owned file would change."
        ),
    )
    regenerate.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 on any difference"
    )
    regenerate.add_argument(
        "--root", type=Path, default=Path.cwd(), metavar="DIR", help="the checkout (.)"
    )
    _bus_options(regenerate, timeout_s=600)
    regenerate.set_defaults(func=run_regenerate_self)


def _bus_options(parser: argparse.ArgumentParser, timeout_s: int) -> None:
    """Options every command that talks to the running pipeline takes."""
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument(
        "--timeout",
        type=float,
        default=float(timeout_s),
        metavar="S",
        help=f"seconds to wait ({timeout_s})",
    )
    parser.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT",
        help="Kafka (default: $KAFKA_BOOTSTRAP_SERVERS, else the dev stack's)",
    )
    parser.add_argument(
        "--environment", metavar="ENV", help="topic prefix (default: $KAFKA_ENVIRONMENT or dev)"
    )
    parser.add_argument("--template", metavar="SRC", help="template path or git URL")
    parser.add_argument("--vcs-ref", metavar="REF", help="template git ref (e.g. a tag)")
    parser.add_argument(
        "--fast",
        action="store_true",
        help="validate with parse, ruff and ruff format only (skip mypy and the nodes' tests)",
    )


class _Progress:
    """One line per stage; on a terminal the line of the stage in progress is redrawn."""

    def __init__(self, stream: TextIO, live: bool) -> None:
        self.stream = stream
        self.live = live
        self.started = time.perf_counter()
        self.shown = 0

    def __call__(self, name: str, payload: Any) -> None:
        elapsed = time.perf_counter() - self.started
        stages = list(getattr(payload, "stages", []) or [])
        for record in stages[self.shown :]:
            gates = [g for g in record.validation_gates if g.status == "fail"]
            detail = f" ({gates[0].name}: {gates[0].message})" if gates else ""
            line = (
                f"{record.stage_name:<22} {record.status:<9} {record.duration_ms or 0:>6} ms"
                f"{detail[:120]}"
            )
            self._line(line, final=True)
        self.shown = max(self.shown, len(stages))
        if self.live and name not in (
            events.NODE_GENERATION_COMPLETED,
            events.NODE_GENERATION_FAILED,
        ):
            self._line(f"{name} ... {elapsed:5.1f} s", final=False)

    def _line(self, text: str, final: bool) -> None:
        if self.live:
            self.stream.write("\r\033[K" + text + ("\n" if final else ""))
        elif final:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.live:
            self.stream.write("\r\033[K")
            self.stream.flush()


def run_request(args: argparse.Namespace) -> int:
    from onex_scaffold.cli.generate import _stdout_to_stderr
    from onex_scaffold.pipeline.client import request_node
    from onex_scaffold.pipeline.runner import PipelineResult, make_request, run_in_process

    try:
        prd = args.prd.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidInputError(f"cannot read {args.prd}: {error}") from error
    progress = _Progress(sys.stderr, sys.stderr.isatty() and not args.json)
    validation = "fast" if args.fast else "full"
    try:
        result: PipelineResult
        if args.in_process:
            request = make_request(
                prd, args.out, prd_name=args.prd.name, template=args.template,
                vcs_ref=args.vcs_ref, validation=validation, dry_run=args.dry_run,
            )  # fmt: skip
            # Template migrations print; stdout carries only the result (--json).
            with _stdout_to_stderr():
                result = run_in_process(request)
            progress("", result.completed or result.failure)
        else:
            result = asyncio.run(
                request_node(
                    prd,
                    args.out,
                    bootstrap_servers=args.bootstrap_servers,
                    environment=args.environment,
                    prd_name=args.prd.name,
                    template=args.template,
                    vcs_ref=args.vcs_ref,
                    validation=validation,
                    dry_run=args.dry_run,
                    timeout_s=args.timeout,
                    progress=progress,
                )
            )
    except OnexError:
        raise
    except (RuntimeError, OSError) as error:
        raise PipelineError(str(error)) from error
    finally:
        progress.close()
    if args.json:
        print(json.dumps(result.summary(), indent=2))
    result.raise_for_failure()
    done = result.completed
    assert done is not None
    if not args.json:
        verb = f"would be {done.mode}d" if args.dry_run else f"{done.mode}d"
        print(
            f"{done.node_name} {verb} in {done.output_path} "
            f"({done.files} files, score {done.score:g}, request {result.request_id})"
        )
        if args.dry_run:
            for rel in done.changed_files:
                print(f"  would change {rel}")
    return 0


def run_regenerate_self(args: argparse.Namespace) -> int:
    from onex_scaffold.cli.generate import _stdout_to_stderr
    from onex_scaffold.pipeline.selfhost import regenerate_self, summary

    try:
        with _stdout_to_stderr():
            reports = asyncio.run(
                regenerate_self(
                    args.root,
                    check=args.check,
                    template=args.template,
                    vcs_ref=args.vcs_ref,
                    bootstrap_servers=args.bootstrap_servers,
                    environment=args.environment,
                    validation="fast" if args.fast else "full",
                    timeout_s=args.timeout,
                )
            )
    except OnexError:
        raise
    except (RuntimeError, OSError) as error:
        raise PipelineError(str(error)) from error
    if args.json:
        print(json.dumps(summary(reports), indent=2))
    else:
        for report in reports:
            print(report.line(args.check))
    # The reports above say which node failed or drifted; the exit code says whether any did.
    if any(r.status != "completed" for r in reports):
        return _FAILED
    if args.check and any(r.drifted for r in reports):
        if not args.json:
            print(
                "template-owned files differ from what the pipeline makes from each PRD.md: "
                "run `onex-node pipeline regenerate-self` (without --check) and commit",
                file=sys.stderr,
            )
        return _FAILED
    return 0
