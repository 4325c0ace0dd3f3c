"""Registry: discovery through apps/ and entry points, registration rules, default swapping."""

from __future__ import annotations

import sys
import types
from typing import Any, ClassVar

import pytest

from apps.organization.controllers import OrganizationController
from apps.organization.specs import OrganizationSpec
from eventplane.controller import Controller, ControllerDecision, ReconcileContext
from eventplane.errors import ConfigError, NotFoundError, UnknownKindError
from eventplane.event import Event, ResourceState
from eventplane.registry import (
    Registry,
    get_default_registry,
    is_controller_class,
    is_projection_class,
    set_default_registry,
)
from eventplane.spec import ResourceSpec


class ProjectSpec(ResourceSpec):
    """A project."""

    KIND: ClassVar[str] = "Project"
    API_VERSION: ClassVar[str] = "project/v1"
    title: str


class OtherOrganizationSpec(ResourceSpec):
    KIND: ClassVar[str] = "Organization"
    API_VERSION: ClassVar[str] = "organization/v9"


class ProjectController(Controller):
    KIND = "Project"

    def reconcile(
        self, event: Event, state: ResourceState, ctx: ReconcileContext
    ) -> ControllerDecision:
        return ControllerDecision.nothing()


class Projection:  # stands in for eventplane.projection's base (a higher layer)
    NAME = ""

    def apply(self, event: Event, session: Any) -> None:
        raise NotImplementedError


class ProjectList(Projection):
    NAME = "project_list"

    def apply(self, event: Event, session: Any) -> None:
        return None


def test_discovery_finds_the_organization_domain_through_apps_and_the_entry_point() -> None:
    registry = Registry().discover()
    assert registry.kinds() == ["Organization"]
    assert registry.spec_for("Organization") is OrganizationSpec
    assert registry.controllers("Organization") == [OrganizationController]
    assert registry.sources == ["apps.organization"]
    registry.check()


def test_discovery_through_entry_points_alone_finds_the_domain() -> None:
    registry = Registry().discover(packages=(), entry_points=True)
    assert registry.kinds() == ["Organization"]


def test_unknown_kind_raises_with_the_known_kinds() -> None:
    with pytest.raises(UnknownKindError, match="known kinds: Organization"):
        Registry().discover().spec_for("Galaxy")


def test_registering_the_same_class_twice_is_idempotent_but_a_second_class_for_a_kind_is_not() -> (
    None
):
    registry = Registry()
    registry.register_spec(OrganizationSpec)
    registry.register_spec(OrganizationSpec)
    with pytest.raises(ConfigError, match="registered twice"):
        registry.register_spec(OtherOrganizationSpec)


def test_register_decorators_return_the_class() -> None:
    registry = Registry()
    assert registry.register_spec(ProjectSpec) is ProjectSpec
    assert registry.register_controller(ProjectController) is ProjectController
    assert registry.register_projection(ProjectList) is ProjectList
    assert registry.projection("project_list") is ProjectList
    with pytest.raises(NotFoundError, match="known: project_list"):
        registry.projection("nope")


def test_shapes_are_recognised_without_importing_higher_layers() -> None:
    assert is_controller_class(ProjectController)
    assert not is_controller_class(Controller)  # abstract, no KIND
    assert is_projection_class(ProjectList)
    assert not is_projection_class(Projection)  # the base itself
    assert not is_projection_class(ProjectController)


def test_a_controller_without_a_spec_fails_the_check() -> None:
    registry = Registry()
    registry.register_controller(ProjectController)
    with pytest.raises(ConfigError, match="no registered ResourceSpec"):
        registry.check()


def test_register_module_uses_a_register_hook_when_present() -> None:
    module = types.ModuleType("fake_domain_specs")
    calls: list[Registry] = []

    def register(registry: Registry) -> None:
        calls.append(registry)
        registry.register_spec(ProjectSpec)

    module.register = register  # type: ignore[attr-defined]
    module.IgnoredSpec = OtherOrganizationSpec  # type: ignore[attr-defined]
    registry = Registry()
    registry.register_module(module)
    assert calls == [registry]
    assert registry.kinds() == ["Project"]


def test_register_module_registers_exported_classes_by_shape() -> None:
    module = types.ModuleType("fake_domain_all")
    module.__all__ = ["ProjectSpec", "ProjectController", "ProjectList", "ResourceSpec"]  # type: ignore[attr-defined]
    module.ProjectSpec = ProjectSpec  # type: ignore[attr-defined]
    module.ProjectController = ProjectController  # type: ignore[attr-defined]
    module.ProjectList = ProjectList  # type: ignore[attr-defined]
    module.ResourceSpec = ResourceSpec  # type: ignore[attr-defined]
    registry = Registry()
    registry.register_module(module)
    assert registry.kinds() == ["Project"]
    assert registry.controllers() == [ProjectController]
    assert registry.projections() == [ProjectList]


def test_a_domain_package_that_cannot_be_imported_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cannot import domain package"):
        Registry().register_package("no_such_domain_pkg")


def test_register_package_imports_present_submodules(monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = types.ModuleType("thirdparty_projects")
    pkg.__path__ = []  # type: ignore[attr-defined]
    specs = types.ModuleType("thirdparty_projects.specs")
    specs.ProjectSpec = ProjectSpec  # type: ignore[attr-defined]
    specs.__spec__ = types.SimpleNamespace(name="thirdparty_projects.specs")  # type: ignore[assignment]
    monkeypatch.setitem(sys.modules, "thirdparty_projects", pkg)
    monkeypatch.setitem(sys.modules, "thirdparty_projects.specs", specs)
    registry = Registry()
    registry.register_package("thirdparty_projects")
    assert registry.kinds() == ["Project"]


def test_the_default_registry_can_be_replaced_and_reset(registry: Registry) -> None:
    assert get_default_registry() is registry
    custom = Registry()
    custom.register_spec(ProjectSpec)
    set_default_registry(custom)
    assert get_default_registry().kinds() == ["Project"]
    set_default_registry(None)
    assert get_default_registry().kinds() == ["Organization"]
