"""Examples to copy from: a config file (``gateway.toml``) and hooks (``hooks.py``)."""
