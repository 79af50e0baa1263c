"""The stream-chunk hook pipeline: each whole event of a stream through ``on_chunk`` hooks.

Without chunk hooks the gateway never looks inside a stream. With them, the bytes are
split on event boundaries (``wire.sse``), each hook sees each whole event in order, and
the events are written back out: by the relay itself, between each read and its write,
when every hook is plain (``ChunkHooks.feed``); through a generator between the reads
and the relay when some are async (``run_chunk_hooks``).
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


class ChunkHooks:
    """One stream's ``on_chunk`` hooks as a filter: each read of the stream in, the bytes
    that go to the client out.

    Events that arrived in one read leave in one write; a dropped event leaves nothing.
    When the hooks only looked, the read goes out as it came, without a copy. A hook
    that raises stops the filter: what went before its event comes out, and ``failure``
    holds the error (the stream then breaks with it).

    The relay calls ``feed`` (plain hooks) between its read and its write, with no
    generator in between: this runs for every read of every hooked stream. A read of
    usual events (one ``data:`` line each) is cut into their data by one split, and one
    event object serves event after event.
    """

    __slots__ = ("_chain", "_look", "_split", "_splitter", "failure", "plain")

    def __init__(
        self, hooks: HookList, ctx: RequestContext, json_type: type[msgspec.Struct] | None
    ) -> None:
        self._chain = chain = _Chain(hooks, ctx, json_type)
        self.plain = chain.plain is not None  # no async hook: ``feed`` and ``end`` serve
        self._look = chain.look
        self._splitter = splitter = EventSplitter()
        self._split = splitter.split
        self.failure: Exception | None = None

    def feed(self, chunk: bytes) -> bytes:
        """What a read of the stream becomes (``b""``: nothing yet). Plain hooks only."""
        try:
            datas = self._split(chunk)
            if datas is not None:
                if not datas:
                    return b""
                kept = self._look(datas)
                return self._splitter.whole if kept is None else events_bytes(kept)
            events = self._splitter.feed(chunk)
            if not events:
                return b""
            return self._out(chunk, events, self._chain.rest(events, False))
        except _HookFailed as failed:
            return self._failed(failed)
        except Exception as error:  # what a hook left cannot go out (data set to a str, say)
            self.failure = error
            return b""

    async def feed_async(self, chunk: bytes) -> bytes:
        """``feed`` for hooks among which some are ``async``."""
        try:
            datas = self._split(chunk)
            usual = datas is not None
            items = datas if datas is not None else self._splitter.feed(chunk)
            if not items:
                return b""
            kept = await self._chain.through(items, usual)
            if usual:
                return self._splitter.whole if kept is None else events_bytes(kept)
            return self._out(chunk, items, kept)
        except _HookFailed as failed:
            return self._failed(failed)
        except Exception as error:  # (as in feed)
            self.failure = error
            return b""

    def end(self) -> bytes:
        """The stream is over: its last event, if it came without its blank line."""
        rest = self._splitter.flush()
        if rest is None:
            return b""
        try:
            return self._out(None, [rest], self._chain.rest([rest], False))
        except _HookFailed as failed:
            return self._failed(failed)
        except Exception as error:  # (as in feed)
            self.failure = error
            return b""

    async def end_async(self) -> bytes:
        """``end`` for hooks among which some are ``async``."""
        rest = self._splitter.flush()
        if rest is None:
            return b""
        try:
            return self._out(None, [rest], await self._chain.through([rest], False))
        except _HookFailed as failed:
            return self._failed(failed)
        except Exception as error:  # (as in feed)
            self.failure = error
            return b""

    def _out(self, chunk: bytes | None, events: list[bytes], kept: list[bytes] | None) -> bytes:
        if kept is not None:
            return events_bytes(kept)
        return chunk if chunk is not None and self._splitter.exact else events_bytes(events)

    def _failed(self, failed: _HookFailed) -> bytes:
        self.failure = failed.error
        return events_bytes(failed.kept)


async def run_chunk_hooks(
    hooks: HookList,
    ctx: RequestContext,
    chunks: AsyncIterator[bytes],
    json_type: type[msgspec.Struct] | None,
) -> AsyncIterator[bytes]:
    """The stream with each whole event passed through the ``on_chunk`` hooks, in order
    (``ChunkHooks`` as a generator: for streams read from an iterator, and async hooks)."""
    filtered = ChunkHooks(hooks, ctx, json_type)
    plain = filtered.plain
    try:
        async for chunk in chunks:
            out = filtered.feed(chunk) if plain else await filtered.feed_async(chunk)
            if out:
                yield out
            if filtered.failure is not None:
                raise filtered.failure
        out = filtered.end() if plain else await filtered.end_async()
        if out:
            yield out
        if filtered.failure is not None:
            raise filtered.failure
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
        # The event ``look`` shows next: the last one, unless a hook kept it or changed it.
        self.spare = SSEEvent.of_data(b"", json_type)
        self.alone = self._references()  # its reference count while no hook holds it

    def _references(self) -> int:
        event = self.spare  # (as ``look`` holds it when it asks)
        return getrefcount(event)

    def look(self, datas: list[bytes]) -> list[bytes] | None:
        """Usual events (``datas``: each one's data) through plain hooks: the hot path.
        Returns the events going out, or ``None`` while no hook changed one (the read
        goes out as it came); raises ``_HookFailed`` when a hook raised."""
        ctx, one, fns, alone = self.ctx, self.one, self.plain, self.alone
        event = self.spare
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
                self.spare = SSEEvent.of_data(b"", self.json_type)
                kept = _settle(event, data, None, None, datas, index, True)
                return self.rest(datas, True, index + 1, kept)
            # The next event reuses this one unless a hook kept it: no object made and
            # freed per event.
            if getrefcount(event) > alone:
                event = self.spare = SSEEvent.of_data(b"", self.json_type)
        return None

    def rest(
        self, items: list[bytes], usual: bool, start: int = 0, kept: list[bytes] | None = None
    ) -> list[bytes] | None:
        """``look`` for any events, from ``items[start]`` on: their data when ``usual``,
        else their bytes; ``kept``: the events going out before ``start``, if any changed."""
        ctx, fns = self.ctx, self.plain
        assert fns is not None
        event, alone = self.spare, self.alone
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
                    event = self.spare = SSEEvent.of_data(b"", self.json_type)
            else:
                kept = _settle(event, data, raw, kept, items, index, usual)
                event = self.spare = SSEEvent.of_data(b"", self.json_type)
        event._raw = event._data = None  # as look() shows it: a usual event
        return kept

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
