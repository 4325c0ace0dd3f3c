"""evtctl's read and write commands through click's CliRunner on the embedded stack.

A fresh SQLite file per test holds store and bus; with no ``evtctl run`` anywhere,
``apply --wait`` drives the runtime and projections in-process. Output formats and exit
codes are what is checked here; the multi-process flow is in ``tests/e2e``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from eventplane.event import decode
from eventplane.runner import PRESENCE_LEASES
from eventplane.store import open_store
from evtctl import main as evtctl_main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def manifest(name: str, plan: str = "pro", owners: int = 1) -> str:
    listed = ", ".join(f"o{i}@{name}.example" for i in range(owners))
    return (
        f"apiVersion: organization/v1\nkind: Organization\nmetadata: {{name: {name}}}\n"
        f"spec: {{display_name: {name.title()}, plan: {plan}, owners: [{listed}]}}\n"
    )


@pytest.fixture(autouse=True)
def embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EVENTPLANE_CONFIG", raising=False)
    monkeypatch.delenv("EVENTPLANE_TENANT", raising=False)
    url = f"sqlite:///{tmp_path}/stack/eventplane.db"
    monkeypatch.setenv("EVENTPLANE_STORE_URL", url)
    monkeypatch.setenv("EVENTPLANE_BUS_URL", url)
    return url


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(evtctl_main.cli, list(args), input=input, catch_exceptions=False)


def apply_wait(text: str, *extra: str) -> Result:
    return run("apply", "Organization", "-f", "-", "--wait", "--timeout", "30", *extra, input=text)


def test_apply_wait_alone_reconciles_and_reports_ready() -> None:
    result = run("apply", "Organization", "-f", str(EXAMPLES / "org.yaml"), "--wait")
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert header.split() == ["KIND", "NAME", "TENANT", "RESULT", "REASON", "MESSAGE"]
    assert row.split()[:5] == ["Organization", "acme", "default", "ok", "Provisioned"]


def test_get_prints_kubernetes_like_json_yaml_and_a_table() -> None:
    assert apply_wait(manifest("acme") + "---\n" + manifest("beta", "free")).exit_code == 0
    obj = json.loads(run("get", "Organization", "acme", "-o", "json").stdout)
    assert set(obj) == {"apiVersion", "kind", "metadata", "spec", "status"}
    assert (obj["apiVersion"], obj["kind"]) == ("organization/v1", "Organization")
    assert {"name", "tenant", "generation"} <= set(obj["metadata"])
    [ready] = obj["status"]["conditions"]
    assert set(ready) >= {"type", "status", "reason", "message", "lastTransitionTime"}
    assert obj["status"]["observedGeneration"] == 1

    listing = json.loads(run("get", "organization", "-o", "json").stdout)
    assert [o["metadata"]["name"] for o in listing["items"]] == ["acme", "beta"]
    assert yaml.safe_load(run("get", "Organization", "-o", "yaml").stdout) == listing

    table = run("get", "Organization").stdout.splitlines()
    assert table[0].split()[:4] == ["NAME", "DISPLAY_NAME", "PLAN", "SEATS"]
    assert [line.split()[0] for line in table[1:]] == ["acme", "beta"]


def test_reads_are_scoped_to_the_callers_tenant() -> None:
    assert apply_wait(manifest("acme")).exit_code == 0
    other = run("--tenant", "other", "get", "Organization", "-o", "json")
    assert json.loads(other.stdout) == {"items": []}
    assert run("--tenant", "other", "get", "Organization", "acme").exit_code == 5
    assert run("--tenant", "other", "describe", "Organization", "acme").exit_code == 5
    assert run("--tenant", "other", "events", "-o", "json").stdout == ""


def test_a_seat_limit_ends_wait_with_exit_12_and_ready_false_in_the_read_model() -> None:
    result = apply_wait(manifest("crowded", "free", owners=4))
    assert result.exit_code == 12, result.output
    assert "SeatLimitExceeded" in result.stderr
    obj = json.loads(run("get", "Organization", "crowded", "-o", "json").stdout)
    assert obj["status"]["conditions"][0]["status"] == "False"
    assert obj["status"]["seats"] is None


def test_deleting_what_does_not_exist_exits_5_and_unknown_kinds_exit_4() -> None:
    result = run("delete", "Organization", "ghost", "--wait", "--timeout", "30")
    assert result.exit_code == 5, result.output
    assert "NotFound" in result.stderr
    assert run("get", "Galaxy").exit_code == 4
    assert run("get", "Organization", "ghost").exit_code == 5


def test_delete_wait_removes_the_row() -> None:
    assert apply_wait(manifest("acme")).exit_code == 0
    result = run("delete", "Organization", "acme", "--wait", "--timeout", "30")
    assert result.exit_code == 0, result.output
    assert "Deleted" in result.stdout
    assert json.loads(run("get", "Organization", "-o", "json").stdout) == {"items": []}


def test_wait_times_out_with_exit_10_when_workers_hold_the_presence_leases(embedded: str) -> None:
    async def pretend_workers_run() -> None:
        async with open_store(embedded) as store:
            for lease in PRESENCE_LEASES.values():
                assert await store.acquire_lease(lease, "someone-else", 60)

    asyncio.run(pretend_workers_run())
    result = run(
        "apply", "Organization", "-f", "-", "--wait", "--timeout", "0.5", input=manifest("acme")
    )
    assert result.exit_code == 10, result.output
    assert "Organization/acme" in result.stderr


def test_apply_without_wait_publishes_and_prints_the_intent() -> None:
    result = run("apply", "Organization", "-f", "-", input=manifest("acme"))
    assert result.exit_code == 0, result.output
    assert result.stdout.split()[:4] == ["KIND", "NAME", "TENANT", "INTENT"]


def test_describe_shows_state_and_history_and_events_prints_cloudevents() -> None:
    assert apply_wait(manifest("acme")).exit_code == 0
    described = run("describe", "Organization", "acme")
    assert described.exit_code == 0
    assert "Organization.Provisioned" in described.stdout
    assert "Ready=True Provisioned" in described.stdout
    as_json = json.loads(run("describe", "Organization", "acme", "-o", "json").stdout)
    assert as_json["state"]["generation"] == 1
    assert next(e["type"] for e in as_json["events"]) == "Organization.Requested"

    lines = run("events", "-o", "json").stdout.splitlines()
    events = [decode(line) for line in lines]
    positions = [e.metadata.position for e in events]
    assert positions == sorted(positions)
    assert len(positions) == 4
    facts = run("events", "--category", "fact", "-o", "json").stdout.splitlines()
    assert [decode(line).type for line in facts] == ["Organization.Provisioned"]
    later = run("events", "--since", "2", "-o", "json").stdout.splitlines()
    assert [decode(line).metadata.position for line in later] == [3, 4]


def test_projections_list_and_rebuild() -> None:
    assert apply_wait(manifest("acme")).exit_code == 0
    before = run("get", "Organization", "-o", "json").stdout
    [status] = json.loads(run("projections", "list", "-o", "json").stdout)
    assert (status["name"], status["checkpoint"], status["lag"]) == ("organizations", 4, 0)
    rebuilt = run("projections", "rebuild", "organizations")
    assert rebuilt.exit_code == 0, rebuilt.output
    assert "rebuilt from 4 events" in rebuilt.stdout
    assert "position 4/4" in rebuilt.stderr
    assert run("get", "Organization", "-o", "json").stdout == before
    assert run("projections", "rebuild", "nope").exit_code == 5
