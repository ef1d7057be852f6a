"""Start one stage node: ``python -m onex_scaffold.pipeline.launch <stage-folder>``.

Creates the pipeline's topics first (with enough partitions for several instances per
stage; a consumer subscribing first would create them with the broker's default of one),
then runs the node's own ``start_node.py`` in this process.
"""

from __future__ import annotations

import logging
import os
import runpy
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m onex_scaffold.pipeline.launch <stage node folder>", file=sys.stderr)
        return 2
    folder = Path(argv[0]).resolve()
    start = folder / "start_node.py"
    if not start.is_file():
        print(f"error: {start} not found: not a node folder", file=sys.stderr)
        return 2
    servers = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    environment = os.environ.get("KAFKA_ENVIRONMENT", "dev")
    if servers:
        from onex_scaffold.pipeline.bus import ensure_topics

        for attempt in range(1, 6):
            try:
                ensure_topics(servers, environment, timeout_s=5.0)
                break
            except Exception as error:  # the node starts anyway and tries again itself
                logging.getLogger(__name__).warning("pipeline topics (try %d): %s", attempt, error)
                time.sleep(attempt)
    os.chdir(folder)
    sys.path.insert(0, str(folder))
    sys.argv = [str(start)]
    runpy.run_path(str(start), run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
