"""An upstream's answer, translated into OpenAI's shape as it arrives.

Translating providers (Anthropic, Gemini) send their own request and get their own
API's answer; ``TranslatedResponse`` hands the gateway an ``UpstreamResponse`` whose
body is already OpenAI's: a whole answer translated once read, a stream translated read
by read (``Translator.feed``: bytes in, the OpenAI events they complete out — never the
whole stream held). Error answers are left as sent: the provider's ``error()`` reads
them. The stream's usage goes to the request's outcome as soon as the translator knows
it (these providers' ``stream_usage`` is ``"own"``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Protocol

import aiohttp

from ..core.errors import (
    UpstreamProtocolError,
    UpstreamStatusError,
)
from ..wire.headers import UPSTREAM_REQUEST_ID, retyped
from .http import BROKE_OFF, let_go
from .openai import HTTPUpstreamResponse

if TYPE_CHECKING:
    from ..core.context import RequestContext
    from ..core.outcome import Usage
    from .client import HTTPResponse


class Translator(Protocol):
    """Turns one upstream stream into OpenAI's chunk events, incrementally."""

    usage: Usage | None  # the stream's usage, once known
    failure: UpstreamStatusError | None  # set when the upstream sent an error event

    def feed(self, data: bytes) -> bytes: ...

    def finish(self) -> bytes:
        """At the end of the upstream's bytes: what is left to send."""
        ...

    @property
    def complete(self) -> bool:
        """Whether the upstream's stream ended whole (else it was cut short)."""
        ...


class TranslatedResponse(HTTPUpstreamResponse):
    """An aiohttp response whose body (or stream) is translated into OpenAI's shape."""

    __slots__ = ("_ctx", "_ended", "_translator", "_whole")
    next_chunk = None  # type: ignore[assignment]  # its chunks go through iter_chunks()

    def __init__(
        self,
        response: HTTPResponse,
        ctx: RequestContext,
        whole: Callable[[bytes], bytes],
        translator: Translator | None,
        request_id_header: str = "x-request-id",
    ) -> None:
        super().__init__(response)
        self._ctx = ctx
        self._whole = whole
        self._translator = translator
        self._ended = False  # the upstream's stream was read to its end by first_chunk
        status = self.status
        upstream_type = self.content_type
        self.streamed = (
            translator is not None
            and status < 400
            and upstream_type.startswith("text/event-stream")
        )
        self.request_id = response.headers.get(request_id_header)
        headers = self.headers
        if status < 300:
            self.content_type = "text/event-stream" if self.streamed else "application/json"
            headers = retyped(headers, self.content_type)
        else:
            self.content_type = upstream_type  # an error: the provider's error() reads it
        if request_id_header != "x-request-id":
            headers = [
                (UPSTREAM_REQUEST_ID if k == request_id_header else k, v) for k, v in headers
            ]
        self.headers = headers

    async def read(self) -> bytes:
        content = await super().read()
        if self.status >= 300:
            return content
        try:
            return self._whole(content)
        except Exception as exc:  # a body that is not what the API promises
            raise UpstreamProtocolError(f"the upstream's answer could not be read: {exc}") from exc

    async def first_chunk(self) -> bytes:
        """Read until the first translated bytes (or the end); an error event before
        them fails the attempt, so that it is retried like an error status."""
        translator = self._translator
        assert translator is not None
        content = self._response.content
        while True:
            try:
                data = await content.readany()
            except (aiohttp.ClientError, ValueError) as exc:
                self._response.close()
                raise UpstreamProtocolError(BROKE_OFF) from exc
            self._ended = not data
            out = translator.feed(data) if data else translator.finish()
            if translator.failure is not None:
                self._response.close()
                raise self._failure()
            if self._ended and not translator.complete:
                self._response.close()
                raise UpstreamProtocolError(BROKE_OFF)
            if out or self._ended:
                self._first = out
                return out

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        translator = self._translator
        assert translator is not None
        response = self._response
        outcome = self._ctx.outcome
        try:
            if translator.usage is not None:
                outcome.usage = translator.usage
            if self._first:
                yield self._first
            if self._ended:
                return
            async for data in response.content.iter_any():
                out = translator.feed(data)
                if translator.usage is not None:
                    outcome.usage = translator.usage
                if out:
                    yield out
                if translator.failure is not None:
                    raise self._failure()  # after what came before it
            out = translator.finish()
            if translator.usage is not None:
                outcome.usage = translator.usage
            if out:
                yield out
            if translator.failure is not None:
                raise self._failure()
            if not translator.complete:
                raise UpstreamProtocolError(BROKE_OFF)
        except (aiohttp.ClientError, ValueError) as exc:
            raise UpstreamProtocolError(BROKE_OFF) from exc  # its words stay in the log
        finally:
            let_go(response)

    def _failure(self) -> UpstreamStatusError:
        """The upstream's error event, taken off the translator to be raised.

        Nothing reachable from the stream may keep the raised error: its traceback holds
        the frames that write to the client, and Granian ends a response only when its
        transport is let go. (Kept by the translator, the error, its traceback and this
        response would make a cycle that only the garbage collector breaks: the client's
        response stayed open until then.)
        """
        translator = self._translator
        assert translator is not None and translator.failure is not None
        failure, translator.failure = translator.failure, None
        return failure
