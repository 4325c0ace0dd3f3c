"""Projections: read models rebuilt from the event log.

``Projection`` (``base``) is what a domain subclasses in ``apps/<domain>/projections``;
``ProjectionWorker`` (``worker``) applies the stored events a projection watches together
with its checkpoint in one transaction, and rebuilds a read model from scratch. Started by
``eventplane.runner``; see ARCHITECTURE.md "Projections".
"""

from eventplane.projection.base import (
    PROJECTION_NAME_RE,
    Projection,
    ProjectionWatch,
    checkpoint_name,
)
from eventplane.projection.worker import (
    ProgressFn,
    ProjectionWorker,
    create_read_model_engine,
    create_read_model_tables,
)

__all__ = [
    "PROJECTION_NAME_RE",
    "ProgressFn",
    "Projection",
    "ProjectionWatch",
    "ProjectionWorker",
    "checkpoint_name",
    "create_read_model_engine",
    "create_read_model_tables",
]
