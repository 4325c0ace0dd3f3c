"""The whole loop through the CLI as real processes, on both stacks.

``evtctl run`` in the background; ``evtctl apply|delete --wait`` block until the resource
is Ready (or failed) and the read model caught up; ``evtctl get -o json`` reads it.
"""

from __future__ import annotations

import select
import signal
import time
from typing import Any

import orjson
import pytest

from eventplane.event.cloudevents import decode
from tests.e2e.conftest import Cli, org_manifest

pytestmark = pytest.mark.e2e


def ready(obj: Any) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")
    return found


def test_apply_update_block_and_delete_reach_the_read_model(cli: Cli) -> None:
    cli.start_workers()
    done = cli(
        "apply",
        "Organization",
        "-f",
        cli.write("acme.yaml", org_manifest("acme")),
        "--wait",
        "--timeout",
        "60",
    )
    assert done.returncode == 0, done.stderr
    obj: Any = cli.json("get", "Organization", "acme")
    assert obj["kind"] == "Organization"
    assert obj["metadata"]["generation"] == 1
    assert obj["spec"]["plan"] == "pro"
    assert obj["status"]["observedGeneration"] == 1
    assert obj["status"]["seats"] == 25
    assert (ready(obj)["status"], ready(obj)["reason"]) == ("True", "Provisioned")

    # spec update -> new generation -> PlanChanged -> row updated
    done = cli(
        "apply",
        "Organization",
        "-f",
        cli.write("acme2.yaml", org_manifest("acme", plan="enterprise")),
        "--wait",
    )
    assert done.returncode == 0, done.stderr
    obj = cli.json("get", "Organization", "acme")
    assert (obj["metadata"]["generation"], obj["spec"]["plan"], obj["status"]["seats"]) == (
        2,
        "enterprise",
        1000,
    )
    lines = cli("events", "--kind", "Organization", "--name", "acme", "-o", "json").stdout
    types = [decode(line).type for line in lines.splitlines()]
    assert "Organization.PlanChanged" in types

    # seat limit exceeded -> Ready=False, exit 12
    done = cli(
        "apply",
        "Organization",
        "-f",
        cli.write("acme3.yaml", org_manifest("acme", plan="free", owners=5)),
        "--wait",
    )
    assert done.returncode == 12, done.stdout + done.stderr
    assert "SeatLimitExceeded" in done.stderr
    obj = cli.json("get", "Organization", "acme")
    assert (ready(obj)["status"], ready(obj)["reason"]) == ("False", "SeatLimitExceeded")
    assert obj["metadata"]["generation"] == 3

    # delete -> finalizer -> Deleted -> row gone
    done = cli("delete", "Organization", "acme", "--wait")
    assert done.returncode == 0, done.stderr
    gone = cli("get", "Organization", "acme", "-o", "json")
    assert gone.returncode == 5, gone.stderr
    assert cli.json("get", "Organization") == {"items": []}
    history = cli("describe", "Organization", "acme")
    assert "Organization.Deprovisioned" in history.stdout
    assert "Organization.Deleted" in history.stdout

    listing = cli("projections", "list", "-o", "json")
    [status] = orjson.loads(listing.stdout)
    assert (status["name"], status["lag"]) == ("organizations", 0)
    cli.stop_workers()


def test_events_follow_sees_events_appended_while_it_runs(cli: Cli) -> None:
    cli.start_workers()
    follower = cli.popen("events", "--follow", "-o", "json")
    try:
        done = cli(
            "apply", "Organization", "-f", cli.write("f.yaml", org_manifest("followed")), "--wait"
        )
        assert done.returncode == 0, done.stderr
        assert follower.stdout is not None
        seen: list[str] = []
        deadline = time.monotonic() + 60
        buffer = b""
        while "Organization.StatusUpdated" not in seen and time.monotonic() < deadline:
            readable, _, _ = select.select([follower.stdout], [], [], 1.0)
            if readable:
                chunk = follower.stdout.read1(65536)  # type: ignore[attr-defined]
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                seen += [decode(line).type for line in complete if line]
        assert seen[:2] == ["Organization.Requested", "Organization.FinalizersUpdated"]
        assert "Organization.StatusUpdated" in seen
    finally:
        follower.send_signal(signal.SIGTERM)
        _, errors = follower.communicate(timeout=30)
        assert follower.returncode == 0, errors
    cli.stop_workers()


def test_apply_wait_without_workers(cli: Cli) -> None:
    """Embedded: apply --wait drives the loop itself. PostgreSQL + NATS: it times out and
    says that no worker is running."""
    done = cli(
        "apply",
        "Organization",
        "-f",
        cli.write("solo.yaml", org_manifest("solo")),
        "--wait",
        "--timeout",
        "20",
    )
    if cli.env["EVENTPLANE_BUS_URL"].startswith("sqlite"):
        assert done.returncode == 0, done.stderr
        assert cli.json("get", "Organization", "solo")["status"]["seats"] == 25  # type: ignore[index]
    else:
        assert done.returncode == 10, done.stderr
        assert "evtctl run" in done.stderr
