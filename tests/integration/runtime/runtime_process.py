"""A ControllerRuntime in its own process, for the crash-safety and multi-process tests.

    python -m tests.integration.runtime.runtime_process --store URL --bus URL --tenant T

Runs until SIGTERM/SIGINT (clean shutdown, exit 0) or SIGKILL (the crash under test).
Logs warnings and errors to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from eventplane.bus import open_bus
from eventplane.controller.runtime import ControllerRuntime
from eventplane.store import open_store


async def main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    store = open_store(args.store)
    bus = await open_bus(args.bus)
    try:
        runtime = ControllerRuntime(
            store,
            bus,
            tenant=args.tenant,
            ack_wait=args.ack_wait,
            max_concurrency=args.max_concurrency,
            shutdown_grace=5.0,
            insecure_skip_verification=True,  # the test publishes unsigned intents
        )
        await runtime.run(stop)
        print("runtime stopped", file=sys.stderr, flush=True)
    finally:
        await bus.close()
        await store.close()
        print("closed", file=sys.stderr, flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--store", required=True)
    parser.add_argument("--bus", required=True)
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--ack-wait", type=float, default=2.0)
    parser.add_argument("--max-concurrency", type=int, default=8)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(main(parser.parse_args()))
