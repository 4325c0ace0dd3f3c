"""End-to-end harness: ``evtctl`` as real processes against a real stack.

Two stacks: ``embedded`` (a fresh SQLite file holding store and bus) and ``postgres-nats``
(a fresh migrated PostgreSQL database per test plus the session's nats-server). Every test
gets its own tenant, and ``evtctl run --tenant-only`` so that on a shared nats-server it
only reconciles its own intents.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest

from tests.fixtures.postgres import migrated_database

ROOT = Path(__file__).resolve().parents[2]
EVTCTL = [sys.executable, "-c", "from evtctl.main import main; main()"]


@dataclass
class Cli:
    """Runs evtctl with one stack's environment in a scratch directory."""

    cwd: Path
    env: dict[str, str]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __call__(
        self, *args: str, input: bytes | None = None, timeout: float = 90.0
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*EVTCTL, *args],
            cwd=self.cwd,
            env=self.env,
            input=input.decode() if input else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def json(self, *args: str) -> object:
        done = self(*args, "-o", "json")
        assert done.returncode == 0, done.stderr
        return orjson.loads(done.stdout)

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [*EVTCTL, *args],
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def start_workers(self) -> subprocess.Popen[bytes]:
        path = self.cwd / f"run-{len(self.workers)}.log"
        with path.open("wb") as log:
            proc = subprocess.Popen(
                [*EVTCTL, "run", "--tenant-only"],
                cwd=self.cwd,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.workers.append(proc)
        deadline = time.monotonic() + 60
        while "workers started" not in path.read_text(errors="replace"):
            assert proc.poll() is None, path.read_text(errors="replace")
            assert time.monotonic() < deadline, "evtctl run did not start"
            time.sleep(0.05)
        return proc

    def stop_workers(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers:
            assert proc.wait(timeout=60) == 0, (self.cwd / "run-0.log").read_text()
        self.workers.clear()

    def write(self, name: str, text: str) -> str:
        path = self.cwd / name
        path.write_text(text)
        return str(path)


def org_manifest(name: str, plan: str = "pro", owners: int = 2, display: str = "Acme Corp") -> str:
    owner_lines = "\n".join(f"    - owner{i}@{name}.example" for i in range(owners))
    return (
        "apiVersion: organization/v1\nkind: Organization\n"
        f"metadata:\n  name: {name}\nspec:\n  display_name: {display}\n  plan: {plan}\n"
        f"  owners:\n{owner_lines}\n"
    )


@pytest.fixture(
    params=[
        "embedded",
        pytest.param("postgres-nats", marks=[pytest.mark.postgres, pytest.mark.nats]),
    ]
)
async def stack_env(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[dict[str, str]]:
    tenant = f"e2e-{uuid.uuid4().hex[:10]}"
    if request.param == "embedded":
        db = tmp_path / "stack" / "eventplane.db"
        yield {
            "EVENTPLANE_STORE_URL": f"sqlite:///{db}",
            "EVENTPLANE_BUS_URL": f"sqlite:///{db}",
            "EVENTPLANE_TENANT": tenant,
        }
        return
    admin: str = request.getfixturevalue("postgres_admin_url")
    nats: str = request.getfixturevalue("nats_url")
    async with migrated_database(admin, "eventplane_e2e") as url:
        yield {"EVENTPLANE_STORE_URL": url, "EVENTPLANE_BUS_URL": nats, "EVENTPLANE_TENANT": tenant}


@pytest.fixture
def cli(stack_env: dict[str, str], tmp_path: Path) -> Iterator[Cli]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EVENTPLANE_", "EVTCTL_"))}
    env.update(stack_env)
    env["PYTHONPATH"] = str(ROOT)
    work = tmp_path / "work"
    work.mkdir()
    runner = Cli(work, env)
    try:
        yield runner
    finally:
        for proc in runner.workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
