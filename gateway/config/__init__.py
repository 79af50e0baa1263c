"""Configuration and the command line: from environment variables (and a TOML file for
what does not fit) to a running gateway.

``settings`` reads and validates the environment and builds the gateway; ``file`` is the
config file's schema; ``cli`` is ``python -m gateway``; ``keys_cli`` is
``python -m gateway keys``. A new setting is a field of ``settings.Settings`` (and a row
in the README's table).
"""

from .settings import ConfigError, Settings, build_gateway

__all__ = ["ConfigError", "Settings", "build_gateway"]
