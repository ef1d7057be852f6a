"""``onex-node new DIR``: create a node project from the template (``copier copy``)."""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path
from typing import Any

from onex_scaffold._exceptions import AnswerError, OnexError, RenderError, SnapshotError
from onex_scaffold._render import render_node

logger = logging.getLogger(__name__)

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


def _bundled_snapshot() -> tuple[str | None, str | None]:
    """(template, vcs_ref) for the bundled template: its git snapshot, as Stage 4.5 uses,
    so the project records a commit that ``copier update`` can merge from. (None, None)
    when the cache is not writable: Copier then renders the bundled folder itself."""
    from onex_scaffold import __version__
    from onex_scaffold._snapshot import snapshot
    from onex_scaffold._template import template_root

    try:
        repo, commit = snapshot(template_root(), __version__)
    except (SnapshotError, OSError) as error:
        logger.warning("template cache not usable (%s); rendering the bundled folder", error)
        return None, None
    return str(repo), commit


def _remove_partial(target: Path, existed: bool) -> None:
    """Undo a failed copy: the folder is left as it was (absent, or empty)."""
    if not existed:
        shutil.rmtree(target, ignore_errors=True)
        return
    for child in target.iterdir() if target.is_dir() else ():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def run(args: argparse.Namespace) -> int:
    target = Path(args.directory).expanduser().absolute()
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise OnexError(f"{target} exists and is not a folder")
    existed = target.exists()
    if existed and any(target.iterdir()):
        # Copier would write file after file and stop at the first one that exists,
        # leaving a half-made project mixed with what was there.
        raise OnexError(
            f"{target} is not empty; choose a new or empty folder "
            "(to refresh a generated node, run `copier update --trust` in it)"
        )
    template, vcs_ref = args.template, args.vcs_ref
    if template is None and vcs_ref is None:
        template, vcs_ref = _bundled_snapshot()
    try:
        data = answers_from_args(args)
        node = render_node(
            target,
            data,
            template=template,
            vcs_ref=vcs_ref,
            quiet=args.quiet,
        )
    except RenderError:  # AnswerError (exit 2) included
        _remove_partial(target, existed)
        raise
    if not args.quiet:
        print(f"created {node.path} (template {node.template_version or 'unversioned'})")
    return 0
