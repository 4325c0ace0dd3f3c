"""Plans and what they grant. Pure data, shared by the spec and the controller."""

from apps.organization.models.plans import PLAN_SEATS, Plan, seats_for

__all__ = ["PLAN_SEATS", "Plan", "seats_for"]
