"""evtctl's commands, one module each; ``evtctl.main`` registers them explicitly."""

__all__: list[str] = []
