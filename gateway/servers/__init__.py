"""Server adapters: each turns its server's requests into ``gateway.http.Request`` and
writes back the core's responses. No routing, hook or error logic lives here."""

from __future__ import annotations

import gc


def freeze_startup_heap() -> None:
    """Move everything made before serving out of the cyclic collector's sight.

    Modules, Structs, the session: they live as long as the worker, yet every full
    collection would walk them again. Frozen, the collector only walks what requests
    allocate. Call once per worker, after start-up.
    """
    gc.collect()
    gc.freeze()
