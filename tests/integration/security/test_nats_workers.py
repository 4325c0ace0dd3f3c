"""The real workers under resources/nats/nats-server.conf: fenced tenants, working workers.

``run_workers`` (what ``evtctl run`` runs: runtime, relay, projections, with the real
``NatsBus``) connects as the ``worker`` user of the shipped configuration; the tenant user
``acme`` publishes a signed intent with plain nats-py on the only subject it may publish
to. The intent must be reconciled and the tenant must then read its own fact. The server
fixture (each available nats-server binary, started with the shipped file) is the one of
``test_nats_permissions``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from nats.aio.msg import Msg

from eventplane.config import load_settings
from eventplane.event import EventFactory, encode
from eventplane.runner import run_workers, wait_for
from eventplane.security import actor_identity, sign_intent
from tests.integration.security.test_nats_permissions import Server, connect, server, settle

__all__ = ["server"]  # the shared module-scoped fixture, imported for pytest

pytestmark = pytest.mark.nats


async def test_workers_run_as_the_worker_user_and_reconcile_a_tenant_users_intent(
    server: Server, tmp_path: Path
) -> None:
    address = urlsplit(server.url).netloc
    settings = load_settings(
        cwd=tmp_path,
        env={
            "EVENTPLANE_STORE_URL": f"sqlite:///{tmp_path}/eventplane.db",
            "EVENTPLANE_BUS_URL": f"nats://worker@{address}",
            "EVENTPLANE_BUS_PASSWORD": server.passwords["worker"],
            "EVENTPLANE_TENANT": "acme",
        },
    )
    actor, keypair = actor_identity(settings.security, settings.home)
    intent = sign_intent(
        EventFactory.from_intent(
            {"display_name": "Acme", "plan": "pro", "owners": ["ada@acme.example"]},
            kind="Organization",
            tenant="acme",
            name="acme-workers",
            actor=actor,
        ),
        keypair,
    )
    stop = asyncio.Event()
    started = asyncio.Event()
    workers = asyncio.ensure_future(run_workers(settings, stop_event=stop, started=started.set))
    try:
        await asyncio.wait_for(started.wait(), 60)
        async with connect(server, "acme") as tenant:
            facts: list[str] = []

            async def collect(msg: Msg) -> None:
                facts.append(msg.data.decode())

            await tenant.nc.subscribe("eventplane.acme.*.fact", cb=collect)
            js = tenant.nc.jetstream(timeout=5)
            ack = await js.publish(
                "eventplane.acme.organization.intent",
                encode(intent),
                headers={"Nats-Msg-Id": str(intent.id)},
            )
            assert ack.stream == "EVENTPLANE"
            [result] = await wait_for(settings, [intent], timeout=60, drive=False)
            assert (result.ok, result.reason) == (True, "Provisioned")
            for _ in range(100):  # the relay publishes the fact right after the append
                if any("Organization.Provisioned" in f for f in facts):
                    break
                await settle(tenant.nc)
                await asyncio.sleep(0.05)
            assert any("Organization.Provisioned" in f for f in facts)
            assert tenant.violations() == []
    finally:
        stop.set()
        await workers
