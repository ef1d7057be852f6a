"""``onex-node generate``: run Stage 4.5 on a parsed PRD file (JSON or YAML).

Exit codes: 0 generated or updated; 2 invalid input (one ``error:`` line per problem on
stderr); 1 any other failure (the failed gate's message on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from onex_scaffold._exceptions import InvalidInputError, StageFailed
from onex_scaffold._yaml import load_untrusted_yaml


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="generate or update a node from parsed PRD data (Stage 4.5)",
        description=(
            "Generate an ONEX node from parsed PRD data (the pipeline's stage 1 output: "
            "node_type, service_name, domain, description, operations, features, confidence). "
            "If --out already holds a node from this template, it is updated with copier update."
        ),
    )
    parser.add_argument(
        "--prd", required=True, type=Path, metavar="FILE", help="parsed_data as JSON or YAML"
    )
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="node folder")
    parser.add_argument(
        "--template",
        metavar="SRC",
        help="template path or git URL (default: the template shipped with onex_scaffold)",
    )
    parser.add_argument(
        "--vcs-ref",
        metavar="REF",
        help="template git ref (default: HEAD for a local checkout, else the newest tag)",
    )
    parser.add_argument(
        "--node-name",
        metavar="NAME",
        help="class or core name, e.g. NodePostgresqlWriterEffect (default: from service_name)",
    )
    parser.add_argument("--json", action="store_true", help="print the PipelineStage as JSON")
    parser.set_defaults(func=run)


@contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send what template tasks and migrations print to stderr, at the file-descriptor
    level (they are subprocesses), so stdout carries only the summary or the JSON."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _load(path: Path) -> Any:
    """The PRD file's data; JSON first, then YAML (safe loader: no Python objects, alias
    expansion bounded)."""
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return load_untrusted_yaml(text)
    except RecursionError as error:
        raise InvalidInputError(f"{path} is nested too deeply to read") from error


def run(args: argparse.Namespace) -> int:
    try:
        parsed_data = _load(args.prd)
    except (OSError, UnicodeDecodeError) as error:
        raise InvalidInputError(f"cannot read {args.prd}: {error}") from error
    except yaml.YAMLError as error:
        raise InvalidInputError(f"{args.prd} is neither JSON nor YAML: {error}") from error

    from onex_scaffold.stage import generate_node

    generation_result: dict[str, Any] = {}
    # A pipeline dump may wrap both: {"parsed_data": {...}, "generation_result": {...}}.
    if isinstance(parsed_data, dict) and isinstance(parsed_data.get("parsed_data"), dict):
        wrapped = parsed_data.get("generation_result")
        if isinstance(wrapped, dict):
            generation_result.update(wrapped)
        parsed_data = parsed_data["parsed_data"]
    if args.node_name:
        generation_result["node_name"] = args.node_name
    with _stdout_to_stderr():
        stage, result = generate_node(
            parsed_data,
            args.out,
            generation_result=generation_result,
            template=args.template,
            vcs_ref=args.vcs_ref,
        )
    if args.json:
        print(stage.model_dump_json(indent=2))
    if stage.status != "completed":
        raise StageFailed(stage)  # exit 2 with one line per refused field, else 1
    if not args.json:
        mode = stage.metadata.get("mode")
        changed = result.get("changed_files", [])
        if mode in ("update", "regenerate"):
            what = f"updated ({len(changed)} files changed)" if changed else "unchanged"
        else:
            what = f"generated ({len(result['generated_files'])} files)"
        print(f"{result['node_name']} {what} in {result['output_path']}")
        print(f"  template {stage.metadata.get('template')} @ {result.get('template_version')}")
        for answer, reason in stage.metadata.get("derived_answers", {}).items():
            print(f"  {answer}: on, because {reason}")
        for gate in stage.warning_gates:
            print(f"  warning: {gate.name}: {gate.message}")
    return 0
