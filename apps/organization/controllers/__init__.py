"""Organization controllers (registered through ``eventplane.registry``)."""

from apps.organization.controllers.organization import FINALIZER, OrganizationController

__all__ = ["FINALIZER", "OrganizationController"]
