"""Configuration: the ``Settings`` schema and how it is loaded (see ``settings``).

Bottom layer; used by ``evtctl``, the runtime, workers and ``eventplane.security``.
"""

from eventplane.config.settings import (
    CONFIG_FILENAME,
    ENV_PREFIX,
    PolicyRule,
    RuntimeSettings,
    SecuritySettings,
    Settings,
    find_config_file,
    load_settings,
)

__all__ = [
    "CONFIG_FILENAME",
    "ENV_PREFIX",
    "PolicyRule",
    "RuntimeSettings",
    "SecuritySettings",
    "Settings",
    "find_config_file",
    "load_settings",
]
