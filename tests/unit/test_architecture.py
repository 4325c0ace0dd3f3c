"""The layer rule of DESIGN.md §2 and the public API are contracts, checked like code."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Each package's curated public API. Changing a line here is changing the public API:
# do it on purpose, and say so in the changelog / ARCHITECTURE.md.
PUBLIC_API: dict[str, list[str]] = {
    "eventplane": [
        "AuthorizationError",
        "Category",
        "ConcurrencyError",
        "Condition",
        "ConditionStatus",
        "ConflictError",
        "Controller",
        "ControllerDecision",
        "DuplicateEventError",
        "Event",
        "EventFactory",
        "EventMetadata",
        "EventplaneError",
        "Manifest",
        "ManifestError",
        "NotFoundError",
        "Outcome",
        "PermanentError",
        "ReconcileContext",
        "ResourceSpec",
        "ResourceState",
        "ResourceStatus",
        "SecretMaterialError",
        "TransientError",
        "UnavailableError",
        "UnknownKindError",
        "ValidationError",
        "Watch",
        "condition",
        "fact",
        "fold",
    ],
    "eventplane.errors": [
        "AuthorizationError",
        "BusError",
        "BusUnavailableError",
        "ConcurrencyError",
        "ConfigError",
        "ConflictError",
        "DuplicateEventError",
        "EventplaneError",
        "FieldError",
        "ManifestError",
        "NotFoundError",
        "PayloadTooLargeError",
        "ResourceFailedError",
        "SecretMaterialError",
        "StoreError",
        "StoreUnavailableError",
        "UnavailableError",
        "UnknownKindError",
        "ValidationError",
        "WaitTimeoutError",
    ],
    "eventplane.event": [
        "CONTENT_TYPE",
        "DEFAULT_SOURCE",
        "RESERVED_REASONS",
        "Category",
        "Condition",
        "ConditionPatch",
        "ConditionStatus",
        "ControllerDecision",
        "EmitEvent",
        "Event",
        "EventFactory",
        "EventMetadata",
        "Outcome",
        "PermanentError",
        "ReconcileContext",
        "ReconcileError",
        "ResourceState",
        "ResourceStatus",
        "RetryPolicy",
        "TransientError",
        "admit_intent",
        "apply_conditions",
        "apply_decision",
        "condition",
        "decode",
        "encode",
        "evolve",
        "fact",
        "fold",
        "record_exception",
        "reject_intent",
        "rejection_id",
        "state_summary",
        "stream_id",
        "to_cloudevent",
    ],
    "eventplane.config": [
        "CONFIG_FILENAME",
        "ENV_PREFIX",
        "PolicyRule",
        "RuntimeSettings",
        "SecuritySettings",
        "Settings",
        "find_config_file",
        "load_settings",
    ],
    "eventplane.spec": [
        "Manifest",
        "ManifestLimits",
        "PromptFn",
        "ResourceSpec",
        "SpecLookup",
        "fill_missing",
        "load_manifest_file",
        "load_manifest_stream",
        "load_manifests",
        "missing_required_fields",
        "parse_documents",
        "validation_errors",
    ],
    "eventplane.registry": [
        "ENTRY_POINT_GROUP",
        "Registry",
        "get_default_registry",
        "is_controller_class",
        "is_projection_class",
        "set_default_registry",
    ],
    "eventplane.utils": [
        "DNS_LABEL_RE",
        "KIND_RE",
        "canonical_json",
        "format_time",
        "is_dns_label",
        "is_kind",
        "json_dumps",
        "json_loads",
        "parse_time",
        "utcnow",
        "uuid7",
        "uuid7_time",
    ],
}


@pytest.mark.parametrize("module_name", sorted(PUBLIC_API))
def test_public_api_is_exactly_the_pinned_list(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert sorted(module.__all__) == sorted(PUBLIC_API[module_name])
    assert len(set(module.__all__)) == len(module.__all__), "duplicates in __all__"


@pytest.mark.parametrize("module_name", sorted(PUBLIC_API))
def test_every_public_name_is_importable(module_name: str) -> None:
    module = importlib.import_module(module_name)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []


def test_importing_eventplane_loads_no_driver() -> None:
    code = (
        "import sys, eventplane, eventplane.event, eventplane.controller, apps.organization;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'asyncpg','aiosqlite','nats','sqlalchemy'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.smoke
def test_import_linter_layer_contracts_are_kept() -> None:
    lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache"], capture_output=True, text=True, cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr
