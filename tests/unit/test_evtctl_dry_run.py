"""evtctl's first cut through click's CliRunner: apply --dry-run, specs, errors and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from cloudevents.core.formats.json import JSONFormat

from eventplane import errors
from eventplane.event import decode
from eventplane.utils import json_dumps
from evtctl import main as evtctl_main
from evtctl.commands import apply as apply_module

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
PARTIAL = (
    "apiVersion: organization/v1\nkind: Organization\nmetadata: {name: acme}\nspec: {plan: pro}\n"
)


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No stray .eventplane.toml or EVENTPLANE_* variable may influence a CLI test."""
    monkeypatch.chdir(tmp_path)
    for var in (
        "EVENTPLANE_CONFIG",
        "EVENTPLANE_TENANT",
        "EVENTPLANE_STORE_URL",
        "EVENTPLANE_BUS_URL",
    ):
        monkeypatch.delenv(var, raising=False)


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(evtctl_main.cli, list(args), input=input, catch_exceptions=False)


def test_apply_dry_run_prints_the_intent_as_a_cloudevent_any_sdk_parses() -> None:
    result = run(
        "apply", "Organization", "-f", str(EXAMPLES / "org.yaml"), "--dry-run", "-o", "json"
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["type"] == "Organization.Requested"
    assert document["subject"] == "organization/acme"
    assert document["tenant"] == "default"
    assert document["category"] == "intent"
    assert document["data"]["spec"]["plan"] == "pro"
    parsed = JSONFormat().read(None, result.stdout.encode())
    assert parsed.get_id() == document["id"]
    assert parsed.get_extension("tenant") == "default"
    event = decode(json_dumps(document))
    assert event.metadata.labels == {"team": "platform"}


def test_apply_reads_stdin_with_dash() -> None:
    result = run(
        "apply", "Organization", "-f", "-", "--dry-run", input=(EXAMPLES / "org.yaml").read_text()
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["subject"] == "organization/acme"


def test_apply_of_several_documents_prints_a_list_sharing_one_correlation() -> None:
    result = run(
        "apply", "organization", "-f", str(EXAMPLES / "orgs.yaml"), "--dry-run", "-o", "json"
    )
    assert result.exit_code == 0, result.output
    documents = json.loads(result.stdout)
    assert [d["subject"] for d in documents] == [
        "organization/globex",
        "organization/initech",
        "organization/umbrella",
    ]
    assert len({d["correlationid"] for d in documents}) == 1
    assert documents[2]["tenant"] == "research"


def test_apply_yaml_and_table_outputs() -> None:
    as_yaml = run(
        "apply", "Organization", "-f", str(EXAMPLES / "org.yaml"), "--dry-run", "-o", "yaml"
    )
    assert "type: Organization.Requested" in as_yaml.stdout
    table = run(
        "-o", "table", "apply", "Organization", "-f", str(EXAMPLES / "orgs.yaml"), "--dry-run"
    )
    assert table.stdout.splitlines()[0].split() == ["ID", "TYPE", "TENANT", "NAME", "CORRELATIONID"]
    assert len(table.stdout.splitlines()) == 4


def test_global_tenant_applies_to_manifests_without_one_and_conflicts_are_errors() -> None:
    result = run(
        "--tenant",
        "acme-co",
        "apply",
        "Organization",
        "-f",
        str(EXAMPLES / "org.yaml"),
        "--dry-run",
    )
    assert json.loads(result.stdout)["tenant"] == "acme-co"
    clash = run(
        "--tenant",
        "acme-co",
        "apply",
        "Organization",
        "-f",
        str(EXAMPLES / "orgs.yaml"),
        "--dry-run",
    )
    assert clash.exit_code == 3
    assert "metadata.tenant" in clash.stderr


def test_a_bad_manifest_exits_3_with_one_line_naming_the_field() -> None:
    bad = (EXAMPLES / "org.yaml").read_text().replace("plan: pro", "plan: gold")
    result = run("apply", "Organization", "-f", "-", "--dry-run", input=bad)
    assert result.exit_code == 3
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: document 1: invalid manifest: spec.plan")


def test_verbose_errors_list_each_field_on_its_own_line() -> None:
    bad = (EXAMPLES / "org.yaml").read_text().replace("plan: pro", "plan: gold\n  colour: red")
    result = run("-v", "apply", "Organization", "-f", "-", "--dry-run", input=bad)
    assert result.exit_code == 3
    assert "  - spec.plan:" in result.stderr
    assert "  - spec.colour: unknown field" in result.stderr


def test_missing_fields_off_a_terminal_are_all_listed_not_prompted() -> None:
    text = PARTIAL
    result = run("-v", "apply", "Organization", "-f", "-", "--dry-run", input=text)
    assert result.exit_code == 3
    assert "spec.display_name: required field is missing" in result.stderr
    assert "spec.owners: required field is missing" in result.stderr


def test_missing_fields_on_a_terminal_are_prompted_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(apply_module, "_is_interactive", lambda: True)
    manifest = tmp_path / "partial.yaml"
    manifest.write_text(PARTIAL)
    result = run(
        "apply",
        "Organization",
        "-f",
        str(manifest),
        "--dry-run",
        input="Acme\nada@acme.example, bob@acme.example\n",
    )
    assert result.exit_code == 0, result.output
    spec = json.loads(result.stdout)["data"]["spec"]
    assert spec["display_name"] == "Acme"
    assert spec["owners"] == ["ada@acme.example", "bob@acme.example"]
    assert "spec.display_name" in result.stderr


def test_unknown_kind_exits_4_listing_known_kinds() -> None:
    result = run("apply", "Galaxy", "-f", str(EXAMPLES / "org.yaml"), "--dry-run")
    assert result.exit_code == 4
    assert "known kinds: Organization" in result.stderr


def test_a_missing_file_exits_3() -> None:
    result = run("apply", "Organization", "-f", "nope.yaml", "--dry-run")
    assert result.exit_code == 3
    assert "cannot read manifest file" in result.stderr


def test_a_bad_config_file_exits_9(tmp_path: Path) -> None:
    (tmp_path / ".eventplane.toml").write_text('tenant = "NOT VALID"\n')
    result = run("apply", "Organization", "-f", str(EXAMPLES / "org.yaml"), "--dry-run")
    assert result.exit_code == 9
    assert "tenant" in result.stderr


def test_specs_list_shows_the_registered_kinds() -> None:
    result = run("specs", "list")
    assert result.exit_code == 0
    assert result.stdout.split()[:3] == ["KIND", "API_VERSION", "DESCRIPTION"]
    assert "Organization" in result.stdout
    as_json = json.loads(run("specs", "list", "-o", "json").stdout)
    assert as_json[0]["kind"] == "Organization"
    assert as_json[0]["api_version"] == "organization/v1"


def test_specs_show_prints_a_json_schema_with_descriptions() -> None:
    result = run("specs", "show", "Organization")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["x-eventplane-kind"] == "Organization"
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"display_name", "plan", "owners"}
    assert "Human-readable" in schema["properties"]["display_name"]["description"]
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(schema)


def test_specs_show_of_an_unknown_kind_exits_4() -> None:
    assert run("specs", "show", "Galaxy").exit_code == 4


def test_each_error_family_has_its_own_exit_code() -> None:
    samples = [
        errors.ManifestError("x"),
        errors.UnknownKindError("K"),
        errors.NotFoundError("x"),
        errors.AuthorizationError("x"),
        errors.ConcurrencyError("s", 1, 2),
        errors.StoreUnavailableError("x"),
        errors.ConfigError("x"),
        errors.WaitTimeoutError("x"),
        errors.StoreError("x"),
        errors.BusError("x"),
        errors.ResourceFailedError("x"),
        errors.EventplaneError("x"),
    ]
    codes = [evtctl_main.exit_code_for(e) for e in samples]
    assert codes == [3, 4, 5, 6, 7, 8, 9, 10, 11, 11, 12, 1]
