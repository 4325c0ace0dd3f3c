"""Organization plans and their seat quotas.

Read by ``OrganizationSpec`` (which plans exist) and ``OrganizationController`` (how
many owners a plan allows, announced in the Provisioned/Updated facts).
"""

from __future__ import annotations

from enum import StrEnum
from types import MappingProxyType
from typing import Final

__all__ = ["PLAN_SEATS", "Plan", "seats_for"]


class Plan(StrEnum):
    FREE = "free"
    PRO = "pro"
    ENTERPRISE = "enterprise"


PLAN_SEATS: Final = MappingProxyType({Plan.FREE: 3, Plan.PRO: 25, Plan.ENTERPRISE: 1000})


def seats_for(plan: Plan | str) -> int:
    """The seat quota of ``plan``."""
    return PLAN_SEATS[Plan(plan)]
