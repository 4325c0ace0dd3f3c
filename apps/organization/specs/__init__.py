"""Organization specs (registered by kind through ``eventplane.registry``)."""

from apps.organization.specs.organization import OrganizationSpec

__all__ = ["OrganizationSpec"]
