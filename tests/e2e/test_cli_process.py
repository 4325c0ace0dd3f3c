"""``evtctl`` as a real process: every exit code a user can meet, errors as one line with no
traceback (``-v`` adds the cause), and an interactive ``apply`` answering prompts on a
pseudo-terminal. The embedded stack only (a scratch SQLite file), plus URLs nothing listens
on for the unreachable-backend codes; the flows against PostgreSQL + NATS are in
``test_cli_flow.py``.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]
EVTCTL = [sys.executable, "-c", "from evtctl.main import main; main()"]
PARTIAL = "apiVersion: organization/v1\nkind: Organization\nmetadata: {name: acme}\n"
FULL = (
    "apiVersion: organization/v1\nkind: Organization\nmetadata: {name: crowded}\n"
    "spec: {display_name: Crowded, plan: free, owners: [a@x.example, b@x.example, "
    "c@x.example, d@x.example]}\n"
)
DENY_ALL_BUT_CI = """
[[security.policy]]
actors = ["ci@acme.example"]
verbs = ["apply"]
kinds = ["*"]
tenants = ["*"]
"""

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # closed again: nothing listens there


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "bad.yaml").write_text("apiVersion: [organization/v1\n")
    (tmp_path / "partial.yaml").write_text(PARTIAL)
    (tmp_path / "crowded.yaml").write_text(FULL)
    (tmp_path / "broken.toml").write_text("tenant = \n")
    (tmp_path / "policy.toml").write_text(DENY_ALL_BUT_CI)
    return tmp_path


def evtctl(workdir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("EVENTPLANE_")}
    base["PYTHONPATH"] = str(ROOT)
    db = workdir / "stack" / "eventplane.db"
    base["EVENTPLANE_STORE_URL"] = base["EVENTPLANE_BUS_URL"] = f"sqlite:///{db}"
    base.update(env)
    return subprocess.run(
        [*EVTCTL, *args],
        cwd=workdir,
        env=base,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def errors_of(stderr: str) -> list[str]:
    """stderr without the development-mode policy warning (security's own line)."""
    return [line for line in stderr.splitlines() if not line.startswith("warning:")]


CASES = {
    "0-success": (0, ("specs", "list"), {}),
    "2-usage-bad-flag": (2, ("apply", "Organization", "--no-such-flag"), {}),
    "3-missing-file": (3, ("apply", "Organization", "-f", "nope.yaml"), {}),
    "3-bad-yaml": (3, ("apply", "Organization", "-f", "bad.yaml"), {}),
    "3-missing-fields-off-a-terminal": (3, ("apply", "Organization", "-f", "partial.yaml"), {}),
    "4-unknown-kind": (4, ("apply", "Galaxy", "-f", "partial.yaml"), {}),
    "5-not-found": (5, ("describe", "Organization", "ghost"), {}),
    "6-not-authorized": (
        6,
        ("apply", "Organization", "-f", "crowded.yaml"),
        {"EVENTPLANE_CONFIG": "policy.toml"},
    ),
    "9-bad-config": (9, ("get", "Organization"), {"EVENTPLANE_CONFIG": "broken.toml"}),
    "12-resource-failed": (
        12,
        ("apply", "Organization", "-f", "crowded.yaml", "--wait", "--timeout", "60"),
        {},
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_exit_code_on_a_real_process_with_one_line_and_no_traceback(
    workdir: Path, case: str
) -> None:
    code, args, env = CASES[case]
    done = evtctl(workdir, *args, **env)
    assert done.returncode == code, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    if code == 0:
        assert done.stdout.startswith("KIND")
    elif code == 2:
        assert "No such option '--no-such-flag'" in done.stderr
    else:
        lines = errors_of(done.stderr)
        assert len(lines) == 1, done.stderr
        assert lines[0].startswith("error: ")


def test_an_unreachable_postgresql_exits_8_in_one_line_and_v_adds_the_cause(
    workdir: Path,
) -> None:
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere"
    done = evtctl(workdir, "get", "Organization", EVENTPLANE_STORE_URL=url)
    assert done.returncode == 8, done.stderr
    assert errors_of(done.stderr) == [errors_of(done.stderr)[0]]
    assert "unreachable" in done.stderr
    verbose = evtctl(workdir, "-v", "get", "Organization", EVENTPLANE_STORE_URL=url)
    assert verbose.returncode == 8
    assert "caused by" in verbose.stderr
    assert "Traceback" not in verbose.stderr


def test_an_unreachable_nats_exits_8_in_one_line(workdir: Path) -> None:
    done = evtctl(
        workdir,
        "apply",
        "Organization",
        "-f",
        "crowded.yaml",
        EVENTPLANE_BUS_URL=f"nats://127.0.0.1:{free_port()}",
    )
    assert done.returncode == 8, done.stderr
    lines = errors_of(done.stderr)
    assert len(lines) == 1, done.stderr
    assert "cannot reach NATS" in lines[0]


def read_until(fd: int, marker: bytes, seen: bytearray) -> None:
    """Read the terminal until ``marker`` shows (the test's timeout bounds a hang)."""
    while marker not in seen:
        ready, _, _ = select.select([fd], [], [], 30)
        assert ready, f"no {marker!r} on the terminal; got {bytes(seen)!r}"
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            chunk = b""
        assert chunk, f"terminal closed before {marker!r}; got {bytes(seen)!r}"
        seen += chunk


def test_interactive_apply_prompts_for_each_missing_field_on_a_terminal(workdir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVENTPLANE_")}
    env["PYTHONPATH"] = str(ROOT)
    env["TERM"] = "dumb"
    answers = [
        (b"spec.display_name", b"Acme Corp"),
        (b"spec.plan", b"enterprise"),
        (b"spec.owners", b"ada@acme.example, grace@acme.example"),
    ]
    primary, secondary = os.openpty()
    proc = subprocess.Popen(
        [*EVTCTL, "apply", "Organization", "-f", "partial.yaml", "--dry-run", "-o", "json"],
        cwd=workdir,
        env=env,
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        close_fds=True,
    )
    os.close(secondary)
    seen = bytearray()
    try:
        for field, answer in answers:  # one prompt per missing field, in spec order
            read_until(primary, field, seen)
            read_until(primary, b"): ", seen)
            os.write(primary, answer + b"\r")
        while True:  # drain to EOF so the child never blocks on a full terminal
            ready, _, _ = select.select([primary], [], [], 30)
            try:
                chunk = os.read(primary, 4096) if ready else b""
            except OSError:  # EIO on Linux once the child has closed the terminal
                chunk = b""
            if not chunk:
                break
            seen += chunk
        assert proc.wait(timeout=60) == 0, bytes(seen).decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        os.close(primary)
    text = bytes(seen).decode().replace("\r\n", "\n")
    document = orjson.loads(text[text.index("{") : text.rindex("}") + 1])
    assert document["type"] == "Organization.Requested"
    assert document["data"]["spec"]["display_name"] == "Acme Corp"
    assert document["data"]["spec"]["plan"] == "enterprise"
    assert document["data"]["spec"]["owners"] == ["ada@acme.example", "grace@acme.example"]


def test_a_progress_line_per_tenth_when_rebuilding_off_a_terminal(workdir: Path) -> None:
    applied = evtctl(workdir, "apply", "Organization", "-f", "crowded.yaml", "--wait")
    assert applied.returncode == 12, applied.stderr
    done = evtctl(workdir, "projections", "rebuild", "organizations")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("projection organizations rebuilt from ")
    progress = [line for line in done.stderr.splitlines() if line.startswith("rebuilding")]
    assert progress[-1].endswith("(100%)")
    assert "\r" not in done.stderr
