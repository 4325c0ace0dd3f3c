"""Manifest loading: the happy paths and every error path, each naming document, field and fix."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest

from apps.organization.specs import OrganizationSpec
from eventplane.errors import ManifestError, PayloadTooLargeError
from eventplane.spec import (
    ManifestLimits,
    fill_missing,
    load_manifest_file,
    load_manifest_stream,
    load_manifests,
    missing_required_fields,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

GOOD = """\
apiVersion: organization/v1
kind: Organization
metadata:
  name: acme
  labels: {team: core}
spec:
  display_name: Acme
  plan: pro
  owners: [ada@acme.example]
"""


def doc(**overrides: Any) -> str:
    """GOOD with top-level keys replaced (None removes a key), as YAML."""
    import yaml

    data = yaml.safe_load(GOOD)
    for key, value in overrides.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return yaml.safe_dump(data)


def error_of(text: str | bytes, **kwargs: Any) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        load_manifests(text, **kwargs)
    return info.value


def paths(err: ManifestError) -> list[str]:
    return [e.path for e in err.errors]


def test_a_valid_manifest_loads_with_its_metadata_and_typed_spec() -> None:
    [manifest] = load_manifests(GOOD)
    assert manifest.kind == "Organization"
    assert manifest.api_version == "organization/v1"
    assert manifest.name == "acme"
    assert manifest.tenant is None
    assert manifest.labels == {"team": "core"}
    assert isinstance(manifest.spec, OrganizationSpec)
    assert manifest.spec.plan.value == "pro"


def test_the_example_files_load() -> None:
    assert [m.name for m in load_manifest_file(EXAMPLES / "org.yaml")] == ["acme"]
    orgs = load_manifest_file(EXAMPLES / "orgs.yaml", kind="Organization")
    assert [m.name for m in orgs] == ["globex", "initech", "umbrella"]
    assert orgs[2].tenant == "research"


def test_multi_document_streams_skip_empty_documents_and_keep_indexes() -> None:
    manifests = load_manifests("---\n" + GOOD + "---\n---\n" + GOOD.replace("acme", "globex"))
    assert [(m.name, m.document) for m in manifests] == [("acme", 0), ("globex", 2)]


def test_json_input_is_accepted() -> None:
    import json

    import yaml

    assert load_manifests(json.dumps(yaml.safe_load(GOOD)))[0].name == "acme"


def test_stdin_stream_loads() -> None:
    assert load_manifest_stream(io.BytesIO(GOOD.encode()))[0].name == "acme"


def test_bad_yaml_syntax_names_line_and_document() -> None:
    err = error_of(GOOD + "---\nkind: [unclosed\n")
    assert err.document == 1
    assert "line" in err.errors[0].message
    assert "document 2" in str(err)


def test_unknown_spec_field_is_rejected_with_the_allowed_fields() -> None:
    err = error_of(GOOD.replace("plan: pro", "plan: pro\n  colour: red"))
    [problem] = err.errors
    assert problem.path == "spec.colour"
    assert problem.message == "unknown field"
    assert "display_name, plan, owners, billing_account" in problem.fix


def test_unknown_top_level_and_metadata_fields_are_rejected() -> None:
    err = error_of(GOOD.replace("metadata:", "status: {}\nmetadata:\n  uid: x"))
    assert sorted(paths(err)) == ["metadata.uid", "status"]


def test_every_missing_required_field_is_listed() -> None:
    err = error_of(doc(spec={"plan": "pro"}))
    assert paths(err) == ["spec.display_name", "spec.owners"]
    assert all(e.message == "required field is missing" for e in err.errors)
    assert "Human-readable name" in err.errors[0].fix


def test_missing_spec_metadata_and_kind_are_each_named() -> None:
    assert paths(error_of(doc(spec=None))) == ["spec"]
    assert paths(error_of(doc(metadata=None))) == ["metadata"]
    assert "kind" in paths(error_of(doc(kind=None)))


def test_wrong_kind_for_the_command_is_rejected() -> None:
    registry_kind = "Project"
    err = error_of(GOOD, kind=registry_kind)
    assert paths(err) == ["kind"]
    assert "'Organization' but 'Project' is being applied" in err.errors[0].message


def test_unregistered_kind_lists_the_known_kinds() -> None:
    err = error_of(GOOD.replace("kind: Organization", "kind: Galaxy"))
    assert paths(err) == ["kind"]
    assert "Organization" in err.errors[0].fix


def test_wrong_api_version_says_which_one_to_use() -> None:
    err = error_of(GOOD.replace("organization/v1", "organization/v2"))
    assert paths(err) == ["apiVersion"]
    assert err.errors[0].fix == "set apiVersion: organization/v1"


@pytest.mark.parametrize("name", ["Acme", "acme_corp", "-acme", "a" * 64, ""])
def test_bad_names_are_rejected_as_dns_labels(name: str) -> None:
    err = error_of(doc(metadata={"name": name}))
    assert paths(err) == ["metadata.name"]
    assert "DNS-1123" in err.errors[0].message


def test_bad_tenant_and_labels_are_rejected() -> None:
    err = error_of(
        doc(metadata={"name": "acme", "tenant": "Big Co", "labels": {"k": 1, "bad key": "v"}})
    )
    assert sorted(paths(err)) == ["metadata.labels.bad key", "metadata.labels.k", "metadata.tenant"]


def test_bad_field_values_name_the_field_path() -> None:
    err = error_of(
        doc(
            spec={
                "display_name": "A",
                "plan": "gold",
                "owners": ["nope"],
                "billing_account": "4111-1111",
            }
        )
    )
    assert sorted(paths(err)) == ["spec.billing_account", "spec.owners[0]", "spec.plan"]
    by_path = {e.path: e for e in err.errors}
    assert "secretref://" in by_path["spec.billing_account"].message
    assert "e-mail" in by_path["spec.owners[0]"].message


@pytest.mark.parametrize(
    ("text", "what"),
    [
        pytest.param("- a\n- b\n", "list", id="list"),
        pytest.param("just a string\n", "str", id="scalar"),
        pytest.param("42\n", "int", id="number"),
    ],
)
def test_a_document_that_is_not_a_mapping_is_rejected(text: str, what: str) -> None:
    err = error_of(text)
    assert f"document is a {what}, not a mapping" in err.errors[0].message


def test_spec_that_is_not_a_mapping_is_rejected() -> None:
    assert paths(error_of(doc(spec=["x"]))) == ["spec"]


def test_empty_input_is_an_error() -> None:
    assert "no manifest documents" in str(error_of("---\n"))


def test_too_large_input_is_rejected_before_parsing() -> None:
    with pytest.raises(PayloadTooLargeError, match="over the 100-byte limit"):
        load_manifests(GOOD, limits=ManifestLimits(max_bytes=100))
    with pytest.raises(PayloadTooLargeError):
        load_manifest_stream(io.BytesIO(GOOD.encode() * 10), limits=ManifestLimits(max_bytes=100))


def test_too_many_documents_are_rejected() -> None:
    err = error_of(
        "---\n".join([GOOD.replace("acme", f"o{i}") for i in range(4)]),
        limits=ManifestLimits(max_documents=3),
    )
    assert "more than 3 documents" in str(err)


def test_an_alias_bomb_fails_fast_with_a_clear_error() -> None:
    bomb = 'a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n'
    bomb += "".join(
        f"{chr(99 + i)}: &{chr(99 + i)} [" + ",".join([f"*{chr(98 + i)}"] * 9) + "]\n"
        for i in range(7)
    )
    err = error_of(bomb)
    assert "anchors (&name) are not allowed" in err.errors[0].message


def test_a_plain_alias_is_rejected_too() -> None:
    err = error_of(GOOD.replace("owners: [ada@acme.example]", "owners: *who"))
    assert "not allowed" in err.errors[0].message


def test_too_deep_nesting_is_rejected() -> None:
    deep = "spec: " + "[" * 50 + "]" * 50 + "\n"
    assert "nesting deeper than" in str(error_of(deep))


def test_over_long_strings_are_rejected() -> None:
    text = GOOD.replace("display_name: Acme", "display_name: " + "x" * 200)
    err = error_of(text, limits=ManifestLimits(max_string=100))
    assert "longer than 100 characters" in str(err)


def test_duplicate_keys_are_rejected() -> None:
    err = error_of(GOOD.replace("plan: pro", "plan: pro\n  plan: free"))
    assert "duplicate key 'plan'" in str(err)


def test_non_utf8_input_is_rejected() -> None:
    assert "not UTF-8" in str(error_of(b"\xff\xfe\x00garbage"))


def test_a_missing_file_is_a_manifest_error() -> None:
    with pytest.raises(ManifestError, match="cannot read manifest file"):
        load_manifest_file("/nonexistent/org.yaml")


def test_all_documents_are_validated_before_any_is_returned() -> None:
    bad = GOOD.replace("acme", "second").replace("plan: pro", "plan: gold")
    worse = GOOD.replace("acme", "third").replace("kind: Organization", "kind: Galaxy")
    err = error_of(GOOD + "---\n" + bad + "---\n" + worse)
    assert err.document is None
    assert "2 documents are invalid; nothing was applied" in str(err)
    assert [e.path for e in err.errors] == ["document 2 spec.plan", "document 3 kind"]


def test_the_same_resource_twice_in_one_stream_is_rejected() -> None:
    err = error_of(GOOD + "---\n" + GOOD)
    assert err.document == 1
    assert "also defined in document 1" in err.errors[0].message


# -- prompting ---------------------------------------------------------------------------------


def test_missing_required_fields_are_listed_in_declaration_order() -> None:
    assert missing_required_fields(OrganizationSpec, {"plan": "pro"}) == ["display_name", "owners"]
    assert (
        missing_required_fields(
            OrganizationSpec, {"display_name": "A", "plan": "pro", "owners": []}
        )
        == []
    )


def test_fill_missing_asks_for_each_missing_required_field_only() -> None:
    asked: list[tuple[str, str, object]] = []

    def prompt(path: str, description: str, default: object) -> str:
        asked.append((path, description, default))
        return {"spec.display_name": "Acme", "spec.owners": "ada@acme.example, bob@acme.example"}[
            path
        ]

    filled = fill_missing(OrganizationSpec, {"plan": "pro"}, prompt)
    assert [a[0] for a in asked] == ["spec.display_name", "spec.owners"]
    assert "Human-readable" in asked[0][1]
    assert filled == {
        "plan": "pro",
        "display_name": "Acme",
        "owners": ["ada@acme.example", "bob@acme.example"],
    }
    assert OrganizationSpec.model_validate(filled).owners == [
        "ada@acme.example",
        "bob@acme.example",
    ]


def test_loading_with_a_prompt_fills_fields_before_validating() -> None:
    text = doc(spec={"plan": "free"})
    answers = {"spec.display_name": "Acme", "spec.owners": "ada@acme.example"}
    [manifest] = load_manifests(text, prompt=lambda path, _d, _default: answers[path])
    assert manifest.spec.model_dump()["display_name"] == "Acme"


def test_prompted_values_are_still_validated() -> None:
    err = error_of(doc(spec={"plan": "free"}), prompt=lambda path, _d, _default: "not-an-email")
    assert "spec.owners[0]" in paths(err)
