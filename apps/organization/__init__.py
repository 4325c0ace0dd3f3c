"""The Organization domain: the reference for how a domain package is laid out.

``specs/`` (what can be asked for), ``models/`` (plans and their seat quotas, pure
data), ``controllers/`` (how an Organization is reconciled). Discovered by
``eventplane.registry`` through the ``eventplane.apps`` entry point.
"""

__all__: list[str] = []
