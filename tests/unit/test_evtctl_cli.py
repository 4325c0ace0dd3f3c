"""evtctl's shape: start-up cost, global options and their environment variables, help,
completion and the exit-code table (CliRunner; the real-process checks are in
``tests/e2e/test_cli_process.py``)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from eventplane import errors
from evtctl import main as evtctl_main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
HEAVY = ("sqlalchemy", "sqlmodel", "asyncpg", "aiosqlite", "nats")


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for var in (
        "EVENTPLANE_CONFIG",
        "EVENTPLANE_TENANT",
        "EVENTPLANE_STORE_URL",
        "EVENTPLANE_BUS_URL",
        "EVENTPLANE_VERBOSE",
        "EVENTPLANE_OUTPUT",
    ):
        monkeypatch.delenv(var, raising=False)


def run(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Result:
    return CliRunner().invoke(evtctl_main.cli, list(args), env=env, input=input)


def heavy_modules_after(*argv: str) -> list[str]:
    """Run evtctl in a fresh interpreter and list the driver packages it imported."""
    code = (
        "import sys\n"
        "from evtctl.main import cli\n"
        "try:\n"
        f"    cli({list(argv)!r}, prog_name='evtctl')\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {set(HEAVY)!r}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return list(json.loads(out.stdout.strip().splitlines()[-1].replace("'", '"')))


@pytest.mark.parametrize(
    "argv",
    [
        ("--help",),
        ("specs", "list"),
        ("apply", "Organization", "-f", str(EXAMPLES / "org.yaml"), "--dry-run"),
    ],
    ids=["help", "specs-list", "apply-dry-run"],
)
def test_commands_that_touch_no_backend_import_no_driver(argv: tuple[str, ...]) -> None:
    assert heavy_modules_after(*argv) == []


def test_help_imports_no_command_module_and_not_the_event_layer() -> None:
    code = (
        "import sys\nfrom evtctl.main import cli\n"
        "try:\n    cli(['--help'], prog_name='evtctl')\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.startswith(('evtctl.commands.', "
        "'eventplane.event', 'pydantic'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("name", sorted(evtctl_main.COMMANDS))
def test_the_help_listing_matches_each_commands_own_docstring(name: str) -> None:
    module_name, attribute, short = evtctl_main.COMMANDS[name]
    command = getattr(importlib.import_module(f"evtctl.commands.{module_name}"), attribute)
    assert isinstance(command, click.Command)
    assert command.name == name
    assert (command.help or "").strip().splitlines()[0] == short


def test_help_lists_every_command_the_environment_variables_and_the_exit_codes() -> None:
    result = run("--help")
    assert result.exit_code == 0
    for name in [*evtctl_main.COMMANDS, "completion"]:
        assert f"\n  {name} " in result.output
    for var in ("CONFIG", "TENANT", "STORE_URL", "BUS_URL", "VERBOSE", "OUTPUT"):
        assert f"EVENTPLANE_{var}" in result.output
    for code in {code for _, code in evtctl_main.EXIT_CODES}:
        assert f" {code} " in result.output


def test_every_listed_command_resolves_and_an_unknown_one_is_a_usage_error() -> None:
    for name in evtctl_main.COMMANDS:
        assert run(name, "--help").exit_code == 0, name
    result = run("nosuchcommand")
    assert result.exit_code == evtctl_main.USAGE_EXIT_CODE
    assert "No such command" in result.output


def test_exit_codes_are_distinct_per_error_family() -> None:
    families = {
        errors.ValidationError: 3,
        errors.UnknownKindError: 4,
        errors.NotFoundError: 5,
        errors.AuthorizationError: 6,
        errors.ConflictError: 7,
        errors.UnavailableError: 8,
        errors.ConfigError: 9,
        errors.WaitTimeoutError: 10,
        errors.StoreError: 11,
        errors.ResourceFailedError: 12,
    }
    assert dict(evtctl_main.EXIT_CODES) | {errors.BusError: 11} == {
        **families,
        errors.BusError: 11,
    }
    assert len(set(families.values())) == len(families)
    assert evtctl_main.USAGE_EXIT_CODE not in families.values()


def test_output_format_comes_from_the_environment_and_a_flag_overrides_it() -> None:
    args = ("specs", "list")
    assert run(*args, env={"EVENTPLANE_OUTPUT": "json"}).output.lstrip().startswith("[")
    yaml_out = run("-o", "yaml", *args, env={"EVENTPLANE_OUTPUT": "json"}).output
    assert yaml_out.startswith("kind: Organization")
    assert run(*args).output.startswith("KIND")


def test_store_url_from_the_environment_reaches_the_command(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/elsewhere/eventplane.db"
    result = run("db", "migrate", env={"EVENTPLANE_STORE_URL": url})
    assert result.exit_code == 0, result.output
    assert "elsewhere" in result.output


def test_tenant_from_the_environment_is_a_default_but_the_flag_pins_manifests() -> None:
    manifest = (
        "apiVersion: organization/v1\nkind: Organization\n"
        "metadata: {name: acme, tenant: research}\n"
        "spec: {display_name: Acme, plan: pro, owners: [a@acme.example]}\n"
    )
    args = ("apply", "Organization", "-f", "-", "--dry-run", "-o", "json")
    by_env = run(*args, input=manifest, env={"EVENTPLANE_TENANT": "ops"})
    assert by_env.exit_code == 0, by_env.output
    assert json.loads(by_env.stdout)["tenant"] == "research"
    by_flag = run("--tenant", "ops", *args, input=manifest)
    assert by_flag.exit_code == 3
    assert "tenant" in by_flag.output


def test_a_missing_config_file_from_the_environment_exits_9_naming_the_variable() -> None:
    result = run("specs", "list", env={"EVENTPLANE_CONFIG": "nope.toml"})
    assert result.exit_code == 0  # specs list reads no settings
    result = run("db", "status", env={"EVENTPLANE_CONFIG": "nope.toml"})
    assert result.exit_code == 9
    assert "EVENTPLANE_CONFIG" in result.output


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_clicks_script_for_each_shell(shell: str) -> None:
    result = run("completion", shell)
    assert result.exit_code == 0
    assert "_EVTCTL_COMPLETE" in result.output
    assert f"{shell}_complete" in result.output


def test_completion_of_an_unsupported_shell_is_a_usage_error() -> None:
    assert run("completion", "tcsh").exit_code == evtctl_main.USAGE_EXIT_CODE


def test_completion_offers_the_commands() -> None:
    env = {"_EVTCTL_COMPLETE": "bash_complete", "COMP_WORDS": "evtctl sp", "COMP_CWORD": "1"}
    assert run(env=env).output.split() == ["plain,specs"]
