"""The stream-chunk hook pipeline: each whole event of a stream through ``on_chunk`` hooks.

Without chunk hooks the gateway never looks inside a stream. With them, the bytes are
split on event boundaries (``wire.sse``), each hook sees each whole event in order, and
the events are written back out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from sys import getrefcount
from typing import TYPE_CHECKING

import msgspec

from ..wire.sse import EventSplitter, SSEEvent, aclose, data_of, events_bytes

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
    for every event of every hooked stream, so it is written for speed: a read of usual
    events (one ``data:`` line each) is cut into their data by one split, plain (not
    async) hooks run in a plain loop, and one event object serves event after event.
    """
    chain = _Chain(hooks, ctx, json_type)
    look = chain.look if chain.plain is not None else None
    splitter = EventSplitter()
    split, feed = splitter.split, splitter.feed
    next_chunk = chunks.__anext__
    ended = False
    try:
        while not ended:
            try:
                chunk: bytes | None = await next_chunk()
            except StopAsyncIteration:
                ended, chunk = True, None
            failure: Exception | None = None
            if chunk is not None and (datas := split(chunk)) is not None:
                if not datas:
                    continue
                try:
                    if look is not None:
                        kept = look(datas)
                    else:
                        kept = await chain.through(datas, True)
                except _HookFailed as failed:
                    kept, failure = failed.kept, failed.error
                out = splitter.whole if kept is None else events_bytes(kept)
            else:
                if chunk is None:
                    rest = splitter.flush()
                    events = [rest] if rest is not None else []
                else:
                    events = feed(chunk)
                if not events:
                    continue
                try:
                    if look is not None:
                        kept = chain.rest(events, False)
                    else:
                        kept = await chain.through(events, False)
                except _HookFailed as failed:
                    kept, failure = failed.kept, failed.error
                if kept is not None:
                    out = events_bytes(kept)
                else:
                    out = chunk if chunk is not None and splitter.exact else events_bytes(events)
            if out:
                yield out
            if failure is not None:
                raise failure
    finally:
        await aclose(chunks)


class _HookFailed(Exception):
    """A hook raised ``error``; the events before its event still go out (``kept``)."""

    def __init__(self, kept: list[bytes], error: Exception) -> None:
        self.kept = kept
        self.error = error


class _Chain:
    """One stream's chunk hooks, and the event object they are shown."""

    __slots__ = ("alone", "ctx", "hooks", "json_type", "one", "plain", "spare")

    def __init__(
        self, hooks: HookList, ctx: RequestContext, json_type: type[msgspec.Struct] | None
    ) -> None:
        self.hooks = hooks
        self.ctx = ctx
        self.json_type = json_type
        self.plain = None if any(a for _, a in hooks) else [fn for fn, _ in hooks]
        self.one = self.plain[0] if self.plain is not None and len(self.plain) == 1 else None
        self.spare: SSEEvent | None = None  # an event no hook kept: shown the next one
        self.alone = 0  # its reference count while no hook holds it (see look)

    def look(self, datas: list[bytes]) -> list[bytes] | None:
        """Usual events (``datas``: each one's data) through plain hooks: the hot path.
        Returns the events going out, or ``None`` while no hook changed one (the read
        goes out as it came); raises ``_HookFailed`` when a hook raised."""
        ctx, one, fns = self.ctx, self.one, self.plain
        event = self.spare
        if event is None:
            event = SSEEvent.of_data(b"", self.json_type)
        self.spare = None
        alone = self.alone
        if not alone:  # held by this frame only, as the same call below sees it
            alone = self.alone = getrefcount(event)
        for index, data in enumerate(datas):
            event.data = data
            try:
                if one is not None:
                    one(ctx, event)
                else:
                    for fn in fns:  # type: ignore[union-attr]
                        fn(ctx, event)
                        if event._dropped:
                            break
            except Exception as error:
                raise _HookFailed(_kept(None, datas, index, True), error) from None
            if event.data is not data or event._touched:  # (set by anything but data)
                kept = _settle(event, data, None, None, datas, index, True)
                return self.rest(datas, True, index + 1, kept)
            # The next event reuses this one unless a hook kept it: no object made and
            # freed per event.
            if getrefcount(event) > alone:
                event = SSEEvent.of_data(b"", self.json_type)
        self.spare = event
        return None

    def rest(
        self, items: list[bytes], usual: bool, start: int = 0, kept: list[bytes] | None = None
    ) -> list[bytes] | None:
        """``look`` for any events, from ``items[start]`` on: their data when ``usual``,
        else their bytes; ``kept``: the events going out before ``start``, if any changed."""
        ctx, fns = self.ctx, self.plain
        assert fns is not None
        event = self._event()
        alone = getrefcount(event)
        raw: bytes | None = None
        for index in range(start, len(items)):
            item = items[index]
            if usual:
                data = item
            else:
                raw, data = item, data_of(item)
            event.data, event._raw, event._data = data, raw, data
            try:
                for fn in fns:
                    fn(ctx, event)
                    if event._dropped:
                        break
            except Exception as error:
                raise _HookFailed(_kept(kept, items, index, usual), error) from None
            if event.data is data and not event._touched:
                if kept is not None:
                    kept.append(b"data: " + item if usual else item)
                if getrefcount(event) > alone:
                    event = SSEEvent.of_data(b"", self.json_type)
            else:
                kept = _settle(event, data, raw, kept, items, index, usual)
                event = SSEEvent.of_data(b"", self.json_type)
        event._raw = event._data = None  # as look() shows it: a usual event
        self.spare = event
        return kept

    def _event(self) -> SSEEvent:
        event, self.spare = self.spare, None
        return event if event is not None else SSEEvent.of_data(b"", self.json_type)

    async def through(self, items: list[bytes], usual: bool) -> list[bytes] | None:
        """``rest`` for hooks among which some are ``async``: an event object each."""
        ctx, hooks, json_type = self.ctx, self.hooks, self.json_type
        kept: list[bytes] | None = None
        raw: bytes | None = None
        for index, item in enumerate(items):
            if usual:
                data = item
                event = SSEEvent.of_data(item, json_type)
            else:
                raw = item
                event = SSEEvent(item, json_type)
                data = event.data
            try:
                for fn, is_async in hooks:
                    result = fn(ctx, event)
                    if is_async:
                        await result
                    if event._dropped:
                        break
            except Exception as error:
                raise _HookFailed(_kept(kept, items, index, usual), error) from None
            if event.data is data and not event._touched:
                if kept is not None:
                    kept.append(b"data: " + item if usual else item)
            else:
                kept = _settle(event, data, raw, kept, items, index, usual)
        return kept


def _settle(
    event: SSEEvent,
    data: bytes | None,
    raw: bytes | None,
    kept: list[bytes] | None,
    items: list[bytes],
    index: int,
    usual: bool,
) -> list[bytes] | None:
    """After the hooks, an event that may have changed: ``kept`` (the events going out,
    ``None`` while none changed) with this one added, if it goes out."""
    if event._dropped:
        return _kept(kept, items, index, usual)
    out = event.raw  # writes back what a hook edited through json or typed()
    if event.data is data and event._raw is raw:  # the hooks only looked
        if kept is not None:
            kept.append(out)
        return kept
    kept = _kept(kept, items, index, usual)
    if out:  # (an event left with neither data nor other lines goes out as nothing)
        kept.append(out)
    return kept


def _kept(kept: list[bytes] | None, items: list[bytes], index: int, usual: bool) -> list[bytes]:
    """The events going out so far: ``kept``, or while none changed, the read's events
    before ``index`` as they came."""
    if kept is not None:
        return kept
    if usual:
        return [b"data: " + data for data in items[:index]]
    return items[:index]
