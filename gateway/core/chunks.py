"""The stream-chunk hook pipeline: each whole event of a stream through ``on_chunk`` hooks.

Without chunk hooks the gateway never looks inside a stream. With them, the bytes are
split on event boundaries (``wire.sse``), each hook sees each whole event in order, and
the events are written back out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import msgspec

from ..wire.sse import EventSplitter, SSEEvent, aclose, events_bytes

if TYPE_CHECKING:
    from .context import RequestContext
    from .hooks import HookList


async def run_chunk_hooks(
    hooks: HookList,
    ctx: RequestContext,
    chunks: AsyncIterator[bytes],
    json_type: type[msgspec.Struct] | None,
) -> AsyncIterator[bytes]:
    """The stream with each whole event passed through the ``on_chunk`` hooks, in order.

    Events that arrived in one read leave in one write; a dropped event leaves nothing.
    When the hooks only looked, the read goes out as it came, without a copy. This runs
    for every event of every hooked stream, so it is written for speed: one loop, and
    plain (not async) hooks called without awaiting.
    """
    plain = None if any(is_async for _, is_async in hooks) else [fn for fn, _ in hooks]
    splitter = EventSplitter()
    next_chunk = chunks.__anext__
    ended = False
    try:
        while not ended:
            try:
                chunk: bytes | None = await next_chunk()
                events = splitter.feed(chunk)  # type: ignore[arg-type]
            except StopAsyncIteration:
                ended, chunk = True, None
                rest = splitter.flush()
                events = [rest] if rest is not None else []
            if not events:
                continue
            kept: list[bytes] = []
            changed = False
            failure: Exception | None = None
            for raw in events:
                event = SSEEvent(raw, json_type)
                try:
                    if plain is not None:
                        for fn in plain:
                            fn(ctx, event)
                            if event.dropped:
                                break
                    else:
                        for fn, is_async in hooks:
                            result = fn(ctx, event)
                            if is_async:
                                await result
                            if event.dropped:
                                break
                except Exception as error:
                    failure, changed = error, True
                    break
                if event.dropped:
                    changed = True
                elif event._json is None and event._raw is raw:
                    kept.append(raw)
                else:
                    kept.append(event.raw)
                    changed = True
            if changed:
                out = events_bytes(kept)
            else:
                out = chunk if chunk is not None and splitter.exact else events_bytes(events)
            if out:
                yield out
            if failure is not None:
                raise failure
    finally:
        await aclose(chunks)
