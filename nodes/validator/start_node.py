"""Run the validator node: ``python start_node.py``.

Template-owned. Loads settings from the environment, starts NodeValidatorCompute,
waits for SIGINT/SIGTERM and stops gracefully within SHUTDOWN_GRACE_S; a second
signal exits at once. Exit codes: 0 after a graceful stop, 1 on a fatal error,
2 on invalid settings, 128+signal when forced.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys

from pydantic import ValidationError

from validator.node import (
    NodeValidatorCompute,
)
from validator.runtime import eventloop

log = logging.getLogger("validator")


async def run() -> int:
    node = NodeValidatorCompute()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[int] = []

    def on_signal(signum: int) -> None:
        received.append(signum)
        if len(received) > 1:
            name = signal.Signals(signum).name
            log.warning("second %s: exiting without finishing the graceful stop", name)
            os._exit(128 + signum)
        log.info("%s received: stopping gracefully", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    try:
        # A signal during start-up (e.g. while waiting for Kafka) stops at once.
        starting = asyncio.create_task(node.initialize())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()  # a failed start raises here: exit code 1
            eventloop.settle_heap()
            log.info(
                "%s running: node_id %s, instance_id %s, health at %s, event loop %s",
                node.identity.service_name,
                node.identity.node_id,
                node.identity.instance_id,
                node.health_endpoint,
                eventloop.loop_name(),
            )
            await stopping
        else:
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
    finally:
        await node.shutdown()
    return 0


def main() -> int:
    level = os.environ.get("LOG_LEVEL", "INFO").upper()
    logging.basicConfig(
        level=level if level in logging.getLevelNamesMapping() else "INFO",
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return eventloop.run(run())
    except ValidationError as exc:
        log.error("invalid settings (check the environment variables):\n%s", exc)
        return 2
    except Exception:
        log.exception("fatal error")
        return 1


if __name__ == "__main__":
    sys.exit(main())
