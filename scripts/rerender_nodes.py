"""Re-render the nodes under nodes/ from the committed template (owner files are kept).

    python scripts/rerender_nodes.py            # write
    python scripts/rerender_nodes.py --check    # list drift, exit 1 if any
    python scripts/rerender_nodes.py registry   # only nodes/registry

The same as ``nox -s rerender [-- --check]``; the logic is ``onex_scaffold._rerender``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from onex_scaffold._rerender import main

if __name__ == "__main__":
    sys.exit(main(["--root", str(Path(__file__).resolve().parents[1]), *sys.argv[1:]]))
