"""Organization read models (registered through ``eventplane.registry``)."""

from apps.organization.projections.organizations import OrganizationRow, OrganizationsProjection

__all__ = ["OrganizationRow", "OrganizationsProjection"]
