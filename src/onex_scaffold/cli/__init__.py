"""The ``onex-node`` command: one module per command group, one error format.

Each command module has ``register(subparsers)``, which adds its parser and sets ``func``
(``args -> exit code``). Commands raise :class:`~onex_scaffold.OnexError` for anything the
user must act on; :func:`main` catches it once and prints its message as ``error: ...``
lines on stderr (one per line of the message, no traceback), returning its ``exit_code``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from onex_scaffold._exceptions import OnexError

__all__ = ["build_parser", "main"]

#: Sub-command name -> module with ``register(subparsers)``.
_COMMANDS: dict[str, str] = {
    "new": "onex_scaffold.cli.new",
    "generate": "onex_scaffold.cli.generate",
    "dev": "onex_scaffold.cli.dev",
    "nodes": "onex_scaffold.cli.nodes",
    "pipeline": "onex_scaffold.cli.pipeline",
}

#: What ``onex-node`` exits with after Ctrl-C (128 + SIGINT, as shells do).
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="onex-node", description="Generate, update and run ONEX nodes."
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module_name in _COMMANDS.values():
        importlib.import_module(module_name).register(subparsers)
    return parser


def print_error(message: str) -> None:
    """The one error format of ``onex-node``: ``error: <line>`` per line, on stderr."""
    for line in str(message).splitlines() or [""]:
        print(f"error: {line}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
    except OnexError as error:
        print_error(str(error))
        return error.exit_code
    except KeyboardInterrupt:
        # A command may say what the interruption left behind (`dev up` stops what it started).
        hint = getattr(args, "interrupted_hint", None)
        print_error(f"interrupted; {hint}" if hint else "interrupted")
        return EXIT_INTERRUPTED
    return result
