"""The ``onex-node`` command: each sub-command lives in its own module."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# sub-command name -> module with ``register(subparsers)``; each sets ``func`` on its parser.
_COMMANDS: dict[str, str] = {
    "new": "onex_scaffold.new",
    "generate": "onex_scaffold.generate_cli",
    "dev": "onex_scaffold.devstack.cli",
    "nodes": "onex_scaffold.nodes_cli",
    "pipeline": "onex_scaffold.pipeline.cli",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onex-node", description="Generate, update and run ONEX nodes."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in _COMMANDS.values():
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
