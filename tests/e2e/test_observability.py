"""``evtctl run --health-port`` as a real process on both stacks: probes, a Prometheus
scrape while organizations are reconciled, and JSON log lines that carry the event fields.
Also, in-process, ``/readyz`` answering 503 for each way a worker can be unready.
"""

from __future__ import annotations

import asyncio
import http.client
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import IO

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from eventplane.bus import open_bus
from eventplane.observability import HealthServer, WorkerSet
from eventplane.store import open_store
from tests.e2e.conftest import EVTCTL, Cli, org_manifest

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_worker_process_serves_probes_metrics_and_json_logs(cli: Cli) -> None:
    port = free_port()
    log_path = cli.cwd / "run.log"
    with log_path.open("wb") as log:
        proc = cli_popen(cli, log, "-v", "run", "--tenant-only", "--health-port", str(port))
    try:
        deadline = time.monotonic() + 60
        while "workers started" not in log_path.read_text(errors="replace"):
            assert proc.poll() is None, log_path.read_text(errors="replace")
            assert time.monotonic() < deadline, "evtctl run did not start"
            time.sleep(0.05)
        assert get(port, "/healthz") == (200, b"ok\n")
        status, body = get(port, "/readyz")
        assert status == 200, body
        checks = orjson.loads(body)["checks"]
        assert checks["store"] == "ok"
        assert checks["bus"] == "ok"
        assert checks["runtime"] == "running"
        assert get(port, "/nowhere")[0] == 404

        names = [f"obs{i}" for i in range(4)]
        path = cli.write("orgs.yaml", "---\n".join(org_manifest(n) for n in names))
        applied = cli("apply", "Organization", "-f", path)
        assert applied.returncode == 0, applied.stderr
        scrapes = 0
        while True:  # scrape while the workers reconcile, until everything is projected
            status, text = get(port, "/metrics")
            assert status == 200
            scrapes += 1
            found = samples(text.decode())
            done = found.get(
                ("eventplane_reconciles_total", (("kind", "Organization"), ("outcome", "done"))),
                0.0,
            )
            lag = found.get(
                ("eventplane_projection_lag_events", (("projection", "organizations"),)), -1.0
            )
            if done >= len(names) and lag == 0 and found[("eventplane_relay_lag_events", ())] == 0:
                break
            assert proc.poll() is None, log_path.read_text(errors="replace")
            assert time.monotonic() < deadline + 60, text.decode()
            time.sleep(0.1)
        assert found[("eventplane_store_last_position", ())] > 0
        assert (
            found[("eventplane_projection_checkpoint", (("projection", "organizations"),))]
            == (found[("eventplane_store_last_position", ())])
        )
        assert found[
            ("eventplane_reconcile_duration_seconds_count", (("kind", "Organization"),))
        ] >= len(names)
        assert found[("eventplane_runtime_admitted_total", ())] >= len(names)
        pending = [k for k in found if k[0] == "eventplane_consumer_pending_messages"]
        assert pending  # the runtime's durable consumers, as the bus reports them
        assert found[("eventplane_worker_part_running", (("part", "runtime"),))] == 1
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, log_path.read_text(errors="replace")

    lines = [
        orjson.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")
    ]
    reconciled = [line for line in lines if line["message"].startswith("reconciled ")]
    assert {line["name"] for line in reconciled} >= set(names)
    for line in reconciled:
        assert line["tenant"] == cli.env["EVENTPLANE_TENANT"]
        assert line["kind"] == "Organization"
        assert line["event_id"]
        assert line["correlation_id"]
        assert line["level"] == "info"


def cli_popen(cli: Cli, log: IO[bytes], *args: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [*EVTCTL, *args], cwd=cli.cwd, env=cli.env, stdout=log, stderr=subprocess.STDOUT
    )
    cli.workers.append(proc)
    return proc


async def fetch(port: int, path: str) -> tuple[int, dict[str, object]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    raw = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), orjson.loads(body)


async def test_readyz_answers_503_when_a_part_stopped_shutdown_began_or_the_bus_is_gone(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'eventplane.db'}"
    store = open_store(url)
    bus = await open_bus(url)
    stop = asyncio.Event()
    running: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    finished.set_result(None)
    workers = WorkerSet(store, bus, tasks={"relay": running}, stop_event=stop)
    try:
        async with HealthServer(workers, port=0) as server:
            assert (await fetch(server.port, "/readyz"))[0] == 200
            workers.tasks = {"relay": running, "runtime": finished}
            status, body = await fetch(server.port, "/readyz")
            assert status == 503
            assert body["checks"] == {  # type: ignore[comparison-overlap]
                "store": "ok",
                "bus": "ok",
                "relay": "running",
                "runtime": "stopped",
            }
            workers.tasks = {"relay": running}
            stop.set()
            status, body = await fetch(server.port, "/readyz")
            assert status == 503
            assert body["checks"]["process"] == "shutting down"  # type: ignore[index]
            stop.clear()
            await bus.close()
            status, body = await fetch(server.port, "/readyz")
            assert status == 503
            assert str(body["checks"]["bus"]).startswith("unreachable")  # type: ignore[index]
            assert (await fetch(server.port, "/readyz"))[0] == 503
    finally:
        running.cancel()
        await bus.close()
        await store.close()
