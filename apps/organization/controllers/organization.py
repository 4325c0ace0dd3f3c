"""OrganizationController: provisions, updates and deprovisions Organizations.

Pure and level-triggered (see ``eventplane.controller.base``); driven by the controller
runtime, exercised directly by the unit and replay tests. What it decides, from state:

- being deleted, cleanup finalizer present → ``Organization.Deprovisioned`` fact and the
  finalizer removed (the mutate helpers then record ``Organization.Deleted``);
- more owners than the plan's seats → ``Ready=False`` / ``SeatLimitExceeded``, no fact;
- never provisioned → cleanup finalizer, ``Organization.Provisioned`` (with the seat
  quota), ``Ready=True``;
- provisioned at an older generation → ``Organization.Updated`` and, if the plan moved,
  ``Organization.PlanChanged``;
- otherwise (converged) → the same conditions again, which the mutate helpers turn into
  no events at all.

"Already provisioned" and "the previous plan" come from the facts this controller
announced earlier (``state.facts``), never from the triggering event.
"""

from __future__ import annotations

from typing import Any, ClassVar

from apps.organization.models.plans import seats_for
from apps.organization.specs.organization import OrganizationSpec
from eventplane.controller.base import (
    Controller,
    ControllerDecision,
    ReconcileContext,
    Watch,
    condition,
    fact,
)
from eventplane.event.model import Category, Event
from eventplane.event.state import ResourceState

__all__ = ["FINALIZER", "OrganizationController"]

FINALIZER = "organization.eventplane.io/cleanup"
_ANNOUNCED = ("Provisioned", "Updated")


class OrganizationController(Controller):
    """Reconciles ``Organization`` resources."""

    KIND: ClassVar[str] = "Organization"
    WATCH: ClassVar[tuple[Watch, ...]] = (
        Watch(kind="Organization", categories=(Category.INTENT,)),
    )

    def reconcile(
        self, event: Event, state: ResourceState, ctx: ReconcileContext
    ) -> ControllerDecision:
        if not state.exists or state.spec is None:
            return ControllerDecision.nothing()
        if state.deletion_requested:
            return self._deprovision(state)
        spec = OrganizationSpec.model_validate(state.spec)
        seats = seats_for(spec.plan)
        if len(spec.owners) > seats:
            return ControllerDecision.done(
                conditions=[
                    condition(
                        "Ready",
                        False,
                        "SeatLimitExceeded",
                        f"{len(spec.owners)} owners but plan {spec.plan.value!r} has "
                        f"{seats} seats; remove owners or choose a larger plan",
                    )
                ],
                phase="Blocked",
            )
        snapshot: dict[str, Any] = {
            "display_name": spec.display_name,
            "plan": spec.plan.value,
            "seats": seats,
            "owners": list(spec.owners),
            "billing_account": spec.billing_account,
            "generation": state.generation,
        }
        announced = state.latest_fact(*_ANNOUNCED)
        events = []
        if announced is None:
            events.append(fact("Provisioned", **snapshot))
        else:
            previous = announced[1]
            if previous.get("generation") != state.generation:
                events.append(fact("Updated", **snapshot))
                if previous.get("plan") != spec.plan.value:
                    events.append(
                        fact(
                            "PlanChanged",
                            previous_plan=previous.get("plan"),
                            plan=spec.plan.value,
                            seats=seats,
                            generation=state.generation,
                        )
                    )
        return ControllerDecision.done(
            *events,
            conditions=[
                condition("Ready", True, "Provisioned", f"{spec.plan.value} plan, {seats} seats")
            ],
            phase="Active",
            add_finalizers=() if FINALIZER in state.finalizers else (FINALIZER,),
        )

    @staticmethod
    def _deprovision(state: ResourceState) -> ControllerDecision:
        if FINALIZER not in state.finalizers:
            return ControllerDecision.nothing()
        announced = state.latest_fact(*_ANNOUNCED)
        return ControllerDecision.done(
            fact(
                "Deprovisioned",
                plan=announced[1].get("plan") if announced else None,
                generation=state.generation,
            ),
            remove_finalizers=(FINALIZER,),
        )
