"""ResourceSpec, Kubernetes-style manifests, and filling in missing fields.

Pure layer (beside ``eventplane.event``): domain packages subclass ``ResourceSpec``
(``apps/<domain>/specs``); the registry indexes them by ``KIND``; ``evtctl apply`` calls
``load_manifests`` / ``load_manifest_file`` and hands the result to
``EventFactory.from_manifest``. Reading a file or stdin is the only I/O here, bounded
by ``ManifestLimits``.

A manifest document::

    apiVersion: organization/v1
    kind: Organization
    metadata: {name: acme, tenant: default, labels: {team: core}}
    spec: {...}   # validated by the kind's ResourceSpec; unknown fields are rejected

YAML is parsed with a ``yaml.SafeLoader`` subclass that refuses aliases and anchors (no
alias bombs, no merge keys), duplicate keys, too deep nesting and over-long strings,
after a byte limit on the whole input. Every problem is a ``ManifestError`` naming the
document, the field path and the fix, and all documents are validated before any is
returned — a bad third document means nothing is applied.
"""

from __future__ import annotations

import re
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar, Protocol

import pydantic
import yaml
from pydantic import BaseModel, ConfigDict

from eventplane.errors import FieldError, ManifestError, PayloadTooLargeError, UnknownKindError
from eventplane.utils import DNS_LABEL_RE, is_dns_label, is_kind

__all__ = [
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
]

_API_VERSION_RE = re.compile(r"^[a-z0-9][a-z0-9.-]*/v[0-9]+[a-z0-9]*$")
_LABEL_KEY_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._/-]{0,61}[A-Za-z0-9])?$")
_TOP_LEVEL = ("apiVersion", "kind", "metadata", "spec")
_METADATA = ("name", "tenant", "labels")


class ResourceSpec(BaseModel):
    """Base of every resource's desired state. Subclasses set ``KIND`` and ``API_VERSION``
    and describe each field (``Field(description=...)``): descriptions are shown in
    prompts, in error fixes and in ``evtctl specs show``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    KIND: ClassVar[str] = ""
    API_VERSION: ClassVar[str] = ""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        if cls.KIND and not is_kind(cls.KIND):
            raise TypeError(
                f"{cls.__name__}.KIND {cls.KIND!r} must be PascalCase, e.g. 'Organization'"
            )
        if cls.API_VERSION and not _API_VERSION_RE.match(cls.API_VERSION):
            raise TypeError(
                f"{cls.__name__}.API_VERSION {cls.API_VERSION!r} must look like 'organization/v1'"
            )

    def to_spec_dict(self) -> dict[str, Any]:
        """The JSON form stored on intents (all fields, defaults included, so two specs
        compare equal exactly when they mean the same)."""
        return self.model_dump(mode="json")


class SpecLookup(Protocol):
    """What manifest loading needs from a registry."""

    def spec_for(self, kind: str) -> type[ResourceSpec]: ...

    def kinds(self) -> list[str]: ...


PromptFn = Callable[[str, str, Any], Any]
"""``prompt(field_path, description, default) -> value`` — click.prompt in the CLI."""


@dataclass(frozen=True, slots=True)
class ManifestLimits:
    """Bounds on untrusted manifest input; generous for people, tight for attackers."""

    max_bytes: int = 1024 * 1024
    max_documents: int = 100
    max_depth: int = 32
    max_string: int = 64 * 1024
    max_nodes: int = 100_000


@dataclass(frozen=True, slots=True)
class Manifest:
    """One validated manifest document."""

    kind: str
    api_version: str
    name: str
    spec: ResourceSpec
    tenant: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    document: int = 0  # 0-based position in its stream


# -- YAML parsing with limits ---------------------------------------------------------------


class _Refused(yaml.MarkedYAMLError):
    """A limit or rule of ours, reported with the position PyYAML knows."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(None, None, problem, mark)


class _ManifestLoader(yaml.SafeLoader):
    def __init__(self, stream: str, limits: ManifestLimits) -> None:
        super().__init__(stream)
        self._limits = limits
        self._depth = 0
        self._nodes = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            raise _Refused("YAML aliases (*name) are not allowed", event.start_mark)
        if getattr(event, "anchor", None) is not None:
            raise _Refused("YAML anchors (&name) are not allowed", event.start_mark)
        if isinstance(event, yaml.ScalarEvent) and len(event.value) > self._limits.max_string:
            raise _Refused(
                f"a string is longer than {self._limits.max_string} characters",
                event.start_mark,
            )
        self._nodes += 1
        if self._nodes > self._limits.max_nodes:
            raise _Refused(f"more than {self._limits.max_nodes} YAML nodes", event.start_mark)
        self._depth += 1
        if self._depth > self._limits.max_depth:
            raise _Refused(f"nesting deeper than {self._limits.max_depth} levels", event.start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in seen:
                    raise _Refused(
                        f"duplicate key {key_node.value!r}",
                        key_node.start_mark,
                    )
                seen.add(key_node.value)
        return super().construct_mapping(node, deep=deep)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = exc.problem or exc.context or "invalid YAML"
        return f"{what}{where}"
    return str(exc)


def parse_documents(
    text: str | bytes, *, limits: ManifestLimits | None = None
) -> list[tuple[int, Any]]:
    """Parse a multi-document YAML (or JSON) stream safely into ``(index, document)``
    pairs. Empty documents (a stray ``---``) are skipped but keep their index."""
    limits = limits or ManifestLimits()
    if len(text) > limits.max_bytes:
        raise PayloadTooLargeError(
            f"manifest input is {len(text)} bytes, over the {limits.max_bytes}-byte limit",
            [FieldError("", "input too large", "split it into several files")],
        )
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ManifestError(
                "manifest is not UTF-8 text",
                [FieldError("", str(exc), "save the file as UTF-8")],
            ) from exc
    documents: list[tuple[int, Any]] = []
    index = 0
    loader: _ManifestLoader | None = None
    try:
        # Inside the try: PyYAML's reader rejects non-printable characters already here.
        loader = _ManifestLoader(text, limits)
        while loader.check_data():  # type: ignore[no-untyped-call]
            if index >= limits.max_documents:
                raise ManifestError(
                    f"more than {limits.max_documents} documents in one input",
                    [FieldError("", "too many documents", "apply them in several batches")],
                    document=index,
                )
            data = loader.get_data()
            if data is not None:
                documents.append((index, data))
            index += 1
    except yaml.YAMLError as exc:
        raise ManifestError(
            "not valid YAML",
            [FieldError("", _yaml_problem(exc), "fix the YAML syntax at that position")],
            document=index,
        ) from exc
    except RecursionError as exc:  # belt and braces: max_depth normally stops this first
        raise ManifestError(
            "YAML nesting too deep",
            [FieldError("", "too deep", "flatten the document")],
            document=index,
        ) from exc
    finally:
        if loader is not None:
            loader.dispose()
    if not documents:
        raise ManifestError(
            "no manifest documents found",
            [
                FieldError(
                    "",
                    "the input is empty",
                    "give at least one apiVersion/kind/metadata/spec document",
                )
            ],
        )
    return documents


# -- validation ------------------------------------------------------------------------------


def _loc_path(loc: Sequence[str | int], prefix: str) -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    return path


def _field_description(spec_cls: type[BaseModel], loc: Sequence[str | int]) -> str:
    model: Any = spec_cls
    desc = ""
    for part in loc:
        fields = getattr(model, "model_fields", None)
        if not isinstance(part, str) or fields is None or part not in fields:
            break
        info = fields[part]
        desc = info.description or ""
        model = info.annotation
    return desc


def validation_errors(
    spec_cls: type[ResourceSpec], exc: pydantic.ValidationError, *, prefix: str = "spec"
) -> list[FieldError]:
    """pydantic's errors as FieldErrors whose fix says what the field wants."""
    allowed = ", ".join(spec_cls.model_fields)
    errors: list[FieldError] = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        path = _loc_path(loc, prefix)
        desc = _field_description(spec_cls, loc)
        if err["type"] == "missing":
            errors.append(
                FieldError(
                    path, "required field is missing", f"add it: {desc}" if desc else "add it"
                )
            )
        elif err["type"] == "extra_forbidden":
            where = f"{prefix} of {spec_cls.KIND}" if len(loc) == 1 else "this object"
            fix = f"remove it; {where} accepts: {allowed}" if len(loc) == 1 else "remove it"
            errors.append(FieldError(path, "unknown field", fix))
        else:
            msg = err["msg"].removeprefix("Value error, ")
            errors.append(
                FieldError(path, msg, f"expected {desc[0].lower()}{desc[1:]}" if desc else "")
            )
    return errors


def _unwrap_list(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (list, tuple, set, frozenset, Sequence):
        return True
    if origin is typing.Union or str(origin) == "types.UnionType":
        return any(_unwrap_list(a) for a in typing.get_args(annotation) if a is not type(None))
    if origin is typing.Annotated:
        return _unwrap_list(typing.get_args(annotation)[0])
    return False


def missing_required_fields(spec_cls: type[ResourceSpec], data: Mapping[str, Any]) -> list[str]:
    """Names of the required top-level spec fields absent from ``data``, in declaration order."""
    return [
        name
        for name, info in spec_cls.model_fields.items()
        if info.is_required() and name not in data
    ]


def fill_missing(
    spec_cls: type[ResourceSpec],
    data: Mapping[str, Any],
    prompt: PromptFn,
    *,
    prefix: str = "spec",
) -> dict[str, Any]:
    """A copy of ``data`` with every missing required field asked for through
    ``prompt(field_path, description, default)``. List fields accept comma-separated
    answers. Validation still happens afterwards, on the completed data."""
    result = dict(data)
    for name in missing_required_fields(spec_cls, data):
        info = spec_cls.model_fields[name]
        answer = prompt(f"{prefix}.{name}" if prefix else name, info.description or name, None)
        if isinstance(answer, str) and _unwrap_list(info.annotation):
            result[name] = [part.strip() for part in answer.split(",") if part.strip()]
        else:
            result[name] = answer
    return result


def _default_lookup() -> SpecLookup:
    # Deferred: registry imports this module.
    from eventplane.registry import get_default_registry

    return get_default_registry()


def _check_document(
    doc: Any,
    index: int,
    lookup: SpecLookup,
    kind: str | None,
    prompt: PromptFn | None,
) -> tuple[Manifest | None, list[FieldError]]:
    if not isinstance(doc, dict):
        return None, [
            FieldError(
                "",
                f"document is a {type(doc).__name__}, not a mapping",
                "each document needs apiVersion, kind, metadata and spec keys",
            )
        ]
    errors: list[FieldError] = []
    for key in doc:
        if key not in _TOP_LEVEL:
            errors.append(
                FieldError(
                    str(key),
                    "unknown field",
                    "remove it; a manifest has only apiVersion, kind, metadata and spec",
                )
            )
    doc_kind = doc.get("kind")
    spec_cls: type[ResourceSpec] | None = None
    if not isinstance(doc_kind, str) or not doc_kind:
        errors.append(
            FieldError("kind", "required string is missing", f"set kind: {kind or 'Organization'}")
        )
    elif kind is not None and doc_kind != kind:
        errors.append(
            FieldError(
                "kind",
                f"is {doc_kind!r} but {kind!r} is being applied",
                f"set kind: {kind} or apply {doc_kind}",
            )
        )
    else:
        try:
            spec_cls = lookup.spec_for(doc_kind)
        except UnknownKindError:
            errors.append(
                FieldError(
                    "kind",
                    f"unknown kind {doc_kind!r}",
                    f"use one of: {', '.join(lookup.kinds()) or '(none registered)'}",
                )
            )
    api_version = doc.get("apiVersion")
    if spec_cls is not None and api_version != spec_cls.API_VERSION:
        shown = "missing" if api_version is None else f"{api_version!r} is not supported"
        errors.append(FieldError("apiVersion", shown, f"set apiVersion: {spec_cls.API_VERSION}"))

    name: str | None = None
    tenant: str | None = None
    labels: dict[str, str] = {}
    meta = doc.get("metadata")
    if not isinstance(meta, dict):
        errors.append(
            FieldError(
                "metadata", "required mapping is missing", "add metadata: {name: <dns-label>}"
            )
        )
    else:
        for key in meta:
            if key not in _METADATA:
                errors.append(
                    FieldError(
                        f"metadata.{key}",
                        "unknown field",
                        "remove it; metadata accepts name, tenant and labels",
                    )
                )
        raw_name = meta.get("name")
        if not isinstance(raw_name, str) or not is_dns_label(raw_name):
            errors.append(_dns_error("metadata.name", raw_name))
        else:
            name = raw_name
        raw_tenant = meta.get("tenant")
        if raw_tenant is not None:
            if not isinstance(raw_tenant, str) or not is_dns_label(raw_tenant):
                errors.append(_dns_error("metadata.tenant", raw_tenant))
            else:
                tenant = raw_tenant
        raw_labels = meta.get("labels", {})
        if not isinstance(raw_labels, dict):
            errors.append(
                FieldError(
                    "metadata.labels", "must be a mapping of strings", "write labels: {key: value}"
                )
            )
        else:
            for key, value in raw_labels.items():
                path = f"metadata.labels.{key}"
                if not isinstance(key, str) or not _LABEL_KEY_RE.match(key):
                    errors.append(
                        FieldError(
                            path,
                            "invalid label key",
                            "use at most 63 letters, digits, '.', '_', '/', '-'",
                        )
                    )
                elif not isinstance(value, str) or len(value) > 63:
                    errors.append(
                        FieldError(
                            path,
                            "label value must be a string of at most 63 characters",
                            "quote it, e.g. '\"1\"'",
                        )
                    )
                else:
                    labels[key] = value

    spec_data = doc.get("spec")
    spec: ResourceSpec | None = None
    if spec_data is None and "spec" not in doc:
        spec_data = {} if prompt is not None else None
    if spec_data is None:
        errors.append(
            FieldError(
                "spec",
                "required mapping is missing",
                "add spec: with the kind's fields (see evtctl specs show KIND)",
            )
        )
    elif not isinstance(spec_data, dict):
        errors.append(
            FieldError(
                "spec",
                f"is a {type(spec_data).__name__}, not a mapping",
                "write spec: as key: value pairs",
            )
        )
    elif spec_cls is not None:
        if prompt is not None:
            spec_data = fill_missing(spec_cls, spec_data, prompt)
        try:
            spec = spec_cls.model_validate(spec_data)
        except pydantic.ValidationError as exc:
            errors.extend(validation_errors(spec_cls, exc))
    if errors or spec is None or name is None or spec_cls is None:
        return None, errors
    return (
        Manifest(
            kind=spec_cls.KIND,
            api_version=spec_cls.API_VERSION,
            name=name,
            spec=spec,
            tenant=tenant,
            labels=labels,
            document=index,
        ),
        [],
    )


def _dns_error(path: str, value: Any) -> FieldError:
    if value is None:
        return FieldError(
            path, "required field is missing", "add it: a lowercase DNS label, e.g. 'acme'"
        )
    return FieldError(
        path,
        f"{value!r} is not a DNS-1123 label",
        "use 1-63 lowercase letters, digits and '-', starting and ending alphanumeric "
        f"({DNS_LABEL_RE.pattern})",
    )


def load_manifests(
    text: str | bytes,
    *,
    kind: str | None = None,
    registry: SpecLookup | None = None,
    prompt: PromptFn | None = None,
    limits: ManifestLimits | None = None,
) -> list[Manifest]:
    """Parse and validate every document; return them all or raise one ``ManifestError``.

    ``kind`` (if given) is what the caller means to apply; other kinds are errors.
    ``prompt`` (if given) is asked for missing required spec fields before validation.
    """
    lookup = registry if registry is not None else _default_lookup()
    manifests: list[Manifest] = []
    failures: list[tuple[int, list[FieldError]]] = []
    seen: dict[tuple[str | None, str, str], int] = {}
    for index, doc in parse_documents(text, limits=limits):
        manifest, errors = _check_document(doc, index, lookup, kind, prompt)
        if manifest is not None:
            key = (manifest.tenant, manifest.kind, manifest.name)
            if key in seen:
                errors = [
                    FieldError(
                        "metadata.name",
                        f"{manifest.kind} {manifest.name!r} is also defined "
                        f"in document {seen[key] + 1}",
                        "keep one document per resource",
                    )
                ]
            else:
                seen[key] = index
                manifests.append(manifest)
        if errors:
            failures.append((index, errors))
    if len(failures) == 1:
        index, errors = failures[0]
        raise ManifestError("invalid manifest", errors, document=index)
    if failures:
        raise ManifestError(
            f"{len(failures)} documents are invalid; nothing was applied",
            [
                FieldError(f"document {index + 1} {e.path}".rstrip(), e.message, e.fix)
                for index, errors in failures
                for e in errors
            ],
        )
    return manifests


def _read_bounded(stream: IO[bytes], limits: ManifestLimits) -> bytes:
    data = stream.read(limits.max_bytes + 1)
    if len(data) > limits.max_bytes:
        raise PayloadTooLargeError(
            f"manifest input is over the {limits.max_bytes}-byte limit",
            [FieldError("", "input too large", "split it into several files")],
        )
    return data


def load_manifest_stream(
    stream: IO[bytes],
    *,
    kind: str | None = None,
    registry: SpecLookup | None = None,
    prompt: PromptFn | None = None,
    limits: ManifestLimits | None = None,
) -> list[Manifest]:
    """``load_manifests`` over a binary stream (stdin), reading at most the byte limit."""
    limits = limits or ManifestLimits()
    return load_manifests(
        _read_bounded(stream, limits), kind=kind, registry=registry, prompt=prompt, limits=limits
    )


def load_manifest_file(
    path: str | Path,
    *,
    kind: str | None = None,
    registry: SpecLookup | None = None,
    prompt: PromptFn | None = None,
    limits: ManifestLimits | None = None,
) -> list[Manifest]:
    """``load_manifests`` over a file; a missing or unreadable file is a ManifestError."""
    limits = limits or ManifestLimits()
    try:
        with open(path, "rb") as handle:
            data = _read_bounded(handle, limits)
    except OSError as exc:
        raise ManifestError(
            f"cannot read manifest file {str(path)!r}",
            [FieldError("", exc.strerror or str(exc), "check the path given to -f")],
        ) from exc
    return load_manifests(data, kind=kind, registry=registry, prompt=prompt, limits=limits)
