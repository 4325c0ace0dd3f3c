"""The registry: which kinds, controllers and projections exist.

Sits at the spec layer. ``EventFactory`` and manifest loading look specs up here;
the controller runtime and projection workers (later layers) ask it for controllers
and projections; ``evtctl specs`` lists it. It imports nothing above ``eventplane.spec``:
controllers and projections are recognised by shape (duck typing, see
``is_controller_class`` / ``is_projection_class``), never by importing their base classes.

Discovery (``Registry.discover``) imports, for every domain package,
``<pkg>.specs`` and ``<pkg>.controllers`` when they exist; ``<pkg>.projections`` is imported
on the first question about projections (``projections()``, ``projection(name)``), because
read models bring SQLModel/SQLAlchemy with them and commands that only need specs
(``evtctl --help``, ``specs list``, ``apply --dry-run``) must stay fast. Specs therefore
belong in ``<pkg>.specs`` (or ``<pkg>.controllers``), never only in ``<pkg>.projections``. Domain
packages are the subpackages of ``apps`` plus every module named by an entry point in
the ``eventplane.apps`` group (how third-party packages plug in). A domain module may
define ``register(registry)`` to register explicitly; otherwise the classes it exports
(``__all__``, or its public names) are registered by shape.

``get_default_registry()`` discovers lazily once; tests and embedders swap it with
``set_default_registry``.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import pkgutil
import threading
from collections.abc import Iterable
from types import ModuleType
from typing import Any, TypeVar

from eventplane.errors import ConfigError, UnknownKindError
from eventplane.spec import ResourceSpec

__all__ = [
    "ENTRY_POINT_GROUP",
    "Registry",
    "get_default_registry",
    "is_controller_class",
    "is_projection_class",
    "set_default_registry",
]

ENTRY_POINT_GROUP = "eventplane.apps"
_SUBMODULES = ("specs", "controllers", "projections")
_DEFERRED = frozenset({"projections"})  # imported on first use: they pull in SQLAlchemy

T = TypeVar("T", bound=type)


def is_controller_class(obj: object) -> bool:
    """A concrete class with a non-empty ``KIND`` and a ``reconcile`` method."""
    return (
        inspect.isclass(obj)
        and not inspect.isabstract(obj)
        and isinstance(getattr(obj, "KIND", None), str)
        and bool(getattr(obj, "KIND", ""))
        and callable(getattr(obj, "reconcile", None))
    )


def is_projection_class(obj: object) -> bool:
    """A concrete class deriving from something named ``Projection`` with a ``NAME`` and
    an ``apply`` method (the projection base class lives in a higher layer)."""
    return (
        inspect.isclass(obj)
        and not inspect.isabstract(obj)
        and any(base.__name__ == "Projection" for base in obj.__mro__[1:])
        and isinstance(getattr(obj, "NAME", None), str)
        and bool(getattr(obj, "NAME", ""))
        and callable(getattr(obj, "apply", None))
    )


class Registry:
    """Specs by kind, controllers by kind, projections by name."""

    def __init__(self) -> None:
        self._specs: dict[str, type[ResourceSpec]] = {}
        self._controllers: dict[str, type[Any]] = {}
        self._projections: dict[str, type[Any]] = {}
        self._sources: list[str] = []
        self._deferred: list[str] = []  # module names discovered but not imported yet
        self._deferred_lock = threading.RLock()

    # -- registration ----------------------------------------------------------------------

    def register_spec(self, spec_cls: type[ResourceSpec]) -> type[ResourceSpec]:
        """Register a ResourceSpec subclass (usable as a decorator). Re-registering the
        same class is a no-op; a second class for the same kind is a ConfigError."""
        if not (inspect.isclass(spec_cls) and issubclass(spec_cls, ResourceSpec)):
            raise TypeError(f"{spec_cls!r} is not a ResourceSpec subclass")
        if not spec_cls.KIND or not spec_cls.API_VERSION:
            raise TypeError(f"{spec_cls.__qualname__} must set KIND and API_VERSION")
        self._put(self._specs, spec_cls.KIND, spec_cls, "spec for kind")
        return spec_cls

    def register_controller(self, controller_cls: T) -> T:
        """Register a controller class (usable as a decorator); its KIND must have a spec
        by the time the runtime starts (checked by ``check``)."""
        if not is_controller_class(controller_cls):
            raise TypeError(f"{controller_cls!r} is not a concrete controller class with KIND")
        key = f"{controller_cls.__module__}.{controller_cls.__qualname__}"
        self._put(self._controllers, key, controller_cls, "controller")
        return controller_cls

    def register_projection(self, projection_cls: T) -> T:
        """Register a projection class (usable as a decorator), keyed by its NAME."""
        if not is_projection_class(projection_cls):
            raise TypeError(f"{projection_cls!r} is not a concrete Projection class with NAME")
        name: str = getattr(projection_cls, "NAME")  # noqa: B009  (checked above)
        self._put(self._projections, name, projection_cls, "projection")
        return projection_cls

    @staticmethod
    def _put(table: dict[str, Any], key: str, value: type[Any], what: str) -> None:
        existing = table.get(key)
        if existing is not None and existing is not value:
            raise ConfigError(
                f"{what} {key!r} is registered twice: {existing.__module__}.{existing.__qualname__}"
                f" and {value.__module__}.{value.__qualname__}; remove one of them"
            )
        table[key] = value

    # -- lookup ----------------------------------------------------------------------------

    def spec_for(self, kind: str) -> type[ResourceSpec]:
        try:
            return self._specs[kind]
        except KeyError:
            raise UnknownKindError(kind, self.kinds()) from None

    def kinds(self) -> list[str]:
        return sorted(self._specs)

    def specs(self) -> list[type[ResourceSpec]]:
        return [self._specs[k] for k in self.kinds()]

    def controllers(self, kind: str | None = None) -> list[type[Any]]:
        """Controller classes (for one kind if given), in a stable order."""
        found = [self._controllers[k] for k in sorted(self._controllers)]
        return [c for c in found if kind is None or kind == c.KIND]

    def projections(self) -> list[type[Any]]:
        self._load_deferred()
        return [self._projections[k] for k in sorted(self._projections)]

    def projection(self, name: str) -> type[Any]:
        self._load_deferred()
        try:
            return self._projections[name]
        except KeyError:
            from eventplane.errors import NotFoundError

            known = ", ".join(sorted(self._projections)) or "(none)"
            raise NotFoundError(f"no projection named {name!r}; known: {known}") from None

    @property
    def sources(self) -> list[str]:
        """The domain packages discovery imported (for ``evtctl specs list -v``)."""
        return list(self._sources)

    def check(self) -> None:
        """Every controller's KIND has a registered spec."""
        for controller in self.controllers():
            if controller.KIND not in self._specs:
                raise ConfigError(
                    f"controller {controller.__qualname__} watches kind {controller.KIND!r}, "
                    "which has no registered ResourceSpec; register the spec or fix KIND"
                )

    # -- discovery -------------------------------------------------------------------------

    def register_module(self, module: ModuleType) -> None:
        """Register what one ``specs``/``controllers``/``projections`` module offers."""
        hook = getattr(module, "register", None)
        if callable(hook) and not inspect.isclass(hook):
            hook(self)
            return
        names: Iterable[str] = getattr(module, "__all__", None) or [
            n for n in vars(module) if not n.startswith("_")
        ]
        for name in names:
            obj = getattr(module, name, None)
            if not inspect.isclass(obj):
                continue
            if issubclass(obj, ResourceSpec) and obj.KIND and obj.API_VERSION:
                self.register_spec(obj)
            elif is_projection_class(obj):
                self.register_projection(obj)
            elif is_controller_class(obj):
                self.register_controller(obj)

    def register_package(self, package: str) -> None:
        """Import and register ``<package>.specs|controllers|projections`` (those present)."""
        if package in self._sources:
            return
        try:
            importlib.import_module(package)
        except ImportError as exc:
            raise ConfigError(f"cannot import domain package {package!r}: {exc}") from exc
        for sub in _SUBMODULES:
            name = f"{package}.{sub}"
            if importlib.util.find_spec(name) is None:
                continue
            if sub in _DEFERRED:
                with self._deferred_lock:
                    self._deferred.append(name)
                continue
            self.register_module(importlib.import_module(name))
        self._sources.append(package)

    def _load_deferred(self) -> None:
        """Import and register the projection modules discovery only noted."""
        with self._deferred_lock:
            while self._deferred:
                name = self._deferred.pop(0)
                try:
                    module = importlib.import_module(name)
                except ImportError as exc:
                    raise ConfigError(f"cannot import domain module {name!r}: {exc}") from exc
                self.register_module(module)

    def discover(
        self, *, packages: Iterable[str] = ("apps",), entry_points: bool = True
    ) -> Registry:
        """Register every domain under ``packages`` and the ``eventplane.apps`` entry points."""
        for root in packages:
            if importlib.util.find_spec(root) is None:
                continue  # e.g. an install that ships only third-party domains
            module = importlib.import_module(root)
            for info in sorted(
                pkgutil.iter_modules(getattr(module, "__path__", [])), key=lambda i: i.name
            ):
                if info.ispkg:
                    self.register_package(f"{root}.{info.name}")
        if entry_points:
            for ep in sorted(
                importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name
            ):
                self.register_package(ep.value.split(":")[0])
        return self


_default: Registry | None = None
_default_lock = threading.Lock()


def get_default_registry() -> Registry:
    """The process-wide registry, discovered on first use."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Registry().discover()
        return _default


def set_default_registry(registry: Registry | None) -> None:
    """Replace the process-wide registry (None: rediscover on next use)."""
    global _default
    with _default_lock:
        _default = registry
