"""``onex-node new DIR``: create a node project from the template, answers given as flags.

It runs the same staged, checked path as ``onex-node generate`` (Stage 4.5, with the
answers given directly instead of mapped from a PRD).
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path
from typing import Any

from onex_scaffold._exceptions import AnswerError, OnexError, StageFailed

NODE_TYPES = ("effect", "compute", "reducer", "orchestrator")


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "new",
        help="create a node project from the ONEX template",
        description=(
            "Create an ONEX node project with Copier. Answers not given take the "
            "template's defaults; the project can later be refreshed with "
            "`copier update --trust`."
        ),
    )
    parser.add_argument("directory", help="where to create the project (must be empty or new)")
    parser.add_argument("--type", dest="node_type", required=True, choices=NODE_TYPES)
    parser.add_argument("--name", dest="node_name", required=True, help="PascalCase core name")
    parser.add_argument("--service", dest="service_name", required=True, help="DNS label")
    parser.add_argument("--domain", required=True, help="lower-case identifier, e.g. database")
    parser.add_argument("--description")
    parser.add_argument("--version", dest="version")
    parser.add_argument(
        "--action", dest="actions", action="append", help="an action (repeat for several)"
    )
    parser.add_argument("--tag", dest="tags", action="append", help="a tag (repeat)")
    parser.add_argument("--http-port", type=int)
    parser.add_argument("--kafka-bootstrap-servers")
    parser.add_argument("--kafka-environment")
    effect = parser.add_argument_group("effect nodes")
    effect.add_argument(
        "--use-postgres", action="store_true", default=None, help="add a PostgreSQL pool"
    )
    compute = parser.add_argument_group("compute nodes")
    compute.add_argument(
        "--no-event-bus",
        dest="event_bus_enabled",
        action="store_false",
        default=None,
        help="HTTP/in-process only, no Kafka",
    )
    reducer = parser.add_argument_group("reducer nodes")
    reducer.add_argument("--aggregation-window", dest="aggregation_window_s", type=float)
    reducer.add_argument("--state-backend", choices=("sqlite", "postgres"))
    reducer.add_argument(
        "--input-event", dest="input_events", action="append", help="kebab-case event (repeat)"
    )
    orchestrator = parser.add_argument_group("orchestrator nodes")
    orchestrator.add_argument(
        "--workflow-step", dest="workflow_steps", action="append", help="step name (repeat)"
    )
    source = parser.add_argument_group("template source")
    source.add_argument("--template", help="template folder or git URL (default: bundled)")
    source.add_argument(
        "--vcs-ref", help="template tag or commit; HEAD includes uncommitted template work"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")
    parser.set_defaults(func=run)


_ANSWER_KEYS = (
    "node_type",
    "node_name",
    "service_name",
    "domain",
    "description",
    "version",
    "actions",
    "tags",
    "http_port",
    "kafka_bootstrap_servers",
    "kafka_environment",
    "use_postgres",
    "event_bus_enabled",
    "aggregation_window_s",
    "state_backend",
    "input_events",
    "workflow_steps",
)

# Questions that only apply to one node type: refuse them elsewhere instead of
# silently dropping them.
_TYPE_OPTIONS = {
    "use_postgres": ("effect", "--use-postgres"),
    "event_bus_enabled": ("compute", "--no-event-bus"),
    "aggregation_window_s": ("reducer", "--aggregation-window"),
    "state_backend": ("reducer", "--state-backend"),
    "input_events": ("reducer", "--input-event"),
    "workflow_steps": ("orchestrator", "--workflow-step"),
}


def answers_from_args(args: argparse.Namespace) -> dict[str, Any]:
    data = {key: getattr(args, key) for key in _ANSWER_KEYS if getattr(args, key) is not None}
    for key, (node_type, flag) in _TYPE_OPTIONS.items():
        if key in data and data["node_type"] != node_type:
            raise AnswerError(f"{flag} applies to {node_type} nodes only, not {data['node_type']}")
    return data


def run(args: argparse.Namespace) -> int:
    target = Path(args.directory).expanduser().absolute()
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise OnexError(f"{target} exists and is not a folder")
    if target.exists() and any(target.iterdir()):
        # `new` never updates: Stage 4.5 would update a node found here.
        raise OnexError(
            f"{target} is not empty; choose a new or empty folder "
            "(to refresh a generated node, run `copier update --trust` in it)"
        )
    data = answers_from_args(args)
    from onex_scaffold.stage._run import StageRun

    # The same staged, checked path as `onex-node generate`: rendered beside the folder,
    # gated, then moved in; a failure leaves the folder as it was.
    stage, result = StageRun(
        None, target, template=args.template, vcs_ref=args.vcs_ref, answers_given=data
    ).run()
    if stage.status != "completed":
        raise StageFailed(stage)
    if not args.quiet:
        version = result.get("template_version") or "unversioned"
        print(f"created {result['output_path']} (template {version})")
        for gate in stage.warning_gates:
            print(f"  warning: {gate.name}: {gate.message}")
        postgres = bool(data.get("use_postgres")) or data.get("state_backend") == "postgres"
        print(next_steps(Path(result["output_path"]), data["service_name"], postgres=postgres))
    return 0


def next_steps(folder: Path, service_name: str, *, postgres: bool = False) -> str:
    """What to run after ``onex-node new``: the node's own README says the same at length."""
    dev_up = "onex-node dev up --postgres" if postgres else "onex-node dev up"
    services = "Kafka, Consul and PostgreSQL" if postgres else "Kafka and Consul"
    commit = (
        f'git init && git add -A && git commit -m "Generate {service_name} from the ONEX template"'
    )
    return "\n".join(
        [
            "",
            "next steps:",
            f"  cd {shlex.quote(str(folder))}",
            f"  {commit}   # copier update needs it",
            "  python -m pip install -e '.[dev]'",
            "  pytest                            # integration tests skip until a broker runs",
            f"  {dev_up:<33} # {services} on 127.0.0.1",
            "  set -a; . .onex-dev/env; set +a   # their addresses for the node",
            "  python start_node.py",
        ]
    )
