"""AWS Bedrock as a provider: chat completions through the Converse API.

A chat request is translated into a Converse request (``gateway.translate.bedrock``)
and sent to ``{endpoint}/model/{modelId}/converse``, or ``/converse-stream`` for a
stream, whose binary event stream is translated into OpenAI's chunks as it arrives.

Every request is signed with AWS Signature Version 4 by botocore's own code (the ``aws``
extra: botocore is imported only when a bedrock provider is configured), over the exact
URL and bytes sent. Credentials come from the environment variables the provider's
table names, or else from AWS's usual chain (environment, shared config and profiles,
web identity, container and instance roles), refreshed by botocore before they expire.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import msgspec
from yarl import URL

from ..core.errors import (
    NotFoundError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamUnavailableError,
)
from ..core.outcome import Usage
from ..translate.bedrock.answer import converse_to_chat
from ..translate.bedrock.errors import error_to_openai
from ..translate.bedrock.request import chat_to_converse
from ..translate.bedrock.stream import ConverseStream
from ..translate.chat import usage_of_completion
from ..wire.headers import JSON, HeaderList, header_value, retyped
from .base import UpstreamRequest, UpstreamResponse, provider_type, secret
from .http import HTTPProvider
from .translated import TranslatedResponse, Translator

if TYPE_CHECKING:
    from collections.abc import Callable

    from ..core.context import RequestContext
    from .client import HTTPResponse

logger = logging.getLogger("gateway")

SERVICE = "bedrock"  # the signing name of bedrock-runtime
EVENT_STREAM = "application/vnd.amazon.eventstream"
REQUEST_ID = "x-amzn-requestid"
NEEDS_EXTRA = "type bedrock needs the aws extra: pip install 'gateway[aws]'"


class BedrockSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[providers.<name>]`` with ``type = "bedrock"``."""

    region: str | None = None  # default: AWS_REGION, AWS_DEFAULT_REGION, the profile's
    base_url: str | None = None  # default: https://bedrock-runtime.{region}.amazonaws.com
    access_key_id_env: str | None = None  # the variables holding the keys; unset: the chain
    secret_access_key_env: str | None = None
    session_token_env: str | None = None
    profile: str | None = None  # a shared-config profile, for the chain
    headers: dict[str, str] = {}


class _AWS:
    """The parts of botocore the provider uses, imported when one is configured."""

    def __init__(self) -> None:
        try:
            import botocore.auth
            import botocore.awsrequest
            import botocore.credentials
            import botocore.session
        except ImportError:
            raise ValueError(NEEDS_EXTRA) from None
        self.SigV4Auth = botocore.auth.SigV4Auth
        self.AWSRequest = botocore.awsrequest.AWSRequest
        self.Credentials = botocore.credentials.Credentials
        self.RefreshableCredentials = botocore.credentials.RefreshableCredentials
        self.Session = botocore.session.Session


@provider_type("bedrock")
class BedrockProvider(HTTPProvider):
    """Models on AWS Bedrock through the Converse API, every request SigV4-signed."""

    Settings = BedrockSettings
    stream_usage = "own"

    @classmethod
    def from_settings(
        cls, name: str, settings: BedrockSettings, environ: Mapping[str, str]
    ) -> BedrockProvider:
        aws = _AWS()
        session = None
        credentials = None
        named = (settings.access_key_id_env, settings.secret_access_key_env)
        if any(named) or settings.session_token_env:
            if not all(named):
                raise ValueError(
                    "access_key_id_env and secret_access_key_env go together "
                    "(or set neither, for AWS's usual credential chain)"
                )
            credentials = aws.Credentials(
                secret(None, settings.access_key_id_env, environ),
                secret(None, settings.secret_access_key_env, environ),
                secret(None, settings.session_token_env, environ),
            )
        region = settings.region or environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
        if credentials is None or region is None:
            session = aws.Session(profile=settings.profile)
            if region is None:
                try:
                    region = session.get_config_variable("region")
                except Exception as exc:  # botocore's: a profile that is not there…
                    raise ValueError(str(exc)) from None
        if not region:
            raise ValueError('no region: set region = "us-east-1" (or AWS_REGION)')
        if not re.fullmatch(r"[a-z0-9-]+", region):
            raise ValueError(f"region {region!r} is not an AWS region's name")
        return cls(
            name,
            region=region,
            base_url=settings.base_url,
            credentials=credentials,
            session=session if credentials is None else None,
            headers=settings.headers,
            aws=aws,
        )

    def __init__(
        self,
        name: str = "bedrock",
        *,
        region: str,
        base_url: str | None = None,
        credentials: Any = None,
        session: Any = None,
        headers: Mapping[str, str] | None = None,
        aws: _AWS | None = None,
    ) -> None:
        self.name = name
        self.region = region
        base = (base_url or f"https://bedrock-runtime.{region}.amazonaws.com").rstrip("/")
        parsed = URL(base)
        if parsed.scheme not in ("http", "https") or not parsed.host:
            raise ValueError(f"provider {name!r}: base_url must be an http(s) URL, got {base!r}")
        self.base_url = base
        self._aws = aws or _AWS()
        self._credentials = credentials  # botocore's: static, or refreshable (the chain)
        self._session = session  # the chain, when no credentials were named
        self._resolving: asyncio.Lock | None = None
        self._headers: HeaderList = [
            ("content-type", "application/json"),
            ("accept-encoding", "identity"),
            *((k.lower(), v) for k, v in (headers or {}).items()),
        ]
        self._model_urls: dict[tuple[str, bool], URL] = {}
        super().__init__()

    def describe(self) -> str:
        where = "named credentials" if self._session is None else "the AWS credential chain"
        return f"{self.name} -> {self.base_url} (bedrock, {self.region}, {where})"

    async def start(self, session: Any) -> None:
        await super().start(session)
        self._resolving = asyncio.Lock()
        if self._credentials is None:
            try:
                await self._resolve()
            except UpstreamUnavailableError as exc:  # the requests will say so, and try again
                logger.warning("provider %s: %s", self.name, exc.message)

    def _url(self, model: str, stream: bool) -> URL:
        url = self._model_urls.get((model, stream))
        if url is None:
            # The model id names a path segment: quoted (as botocore does), so that it
            # cannot name another path; ':' and '/' of ARNs and versions included.
            method = "converse-stream" if stream else "converse"
            url = URL(f"{self.base_url}/model/{quote(model, safe='')}/{method}", encoded=True)
            if len(self._model_urls) < 1024:  # (names come from clients: kept bounded)
                self._model_urls[(model, stream)] = url
        return url

    async def send(self, ctx: RequestContext, request: UpstreamRequest) -> UpstreamResponse:
        if request.endpoint != "chat.completions":
            raise NotFoundError(
                f"The model's provider ({self.name}, Bedrock) serves chat completions, "
                f"not {request.method} /v1{request.path}.",
                code="unsupported_endpoint",
            )
        body, facts = chat_to_converse(request.body)
        url = self._url(facts.model, facts.stream)
        accept = EVENT_STREAM if facts.stream else "application/json"
        headers = await self.signed(url, body, [*self._headers, ("accept", accept)])
        response = await self.request("POST", url, body, headers, request.connect_timeout)
        translator = ConverseStream(facts) if facts.stream else None
        whole = functools.partial(converse_to_chat, facts=facts)
        return EventStreamResponse(response, ctx, whole, translator, REQUEST_ID)

    async def signed(self, url: URL, body: bytes, headers: HeaderList) -> HeaderList:
        """``headers`` and the SigV4 headers that sign this request: the URL as sent,
        and the body's SHA-256 (botocore's SigV4Auth; the host is taken from the URL)."""
        frozen = await self._frozen()
        aws = self._aws
        signing = aws.AWSRequest(method="POST", url=str(url), headers=dict(headers), data=body)
        aws.SigV4Auth(frozen, SERVICE, self.region).add_auth(signing)
        added = [
            (name, value)
            for name in ("x-amz-date", "x-amz-security-token", "authorization")
            if (value := signing.headers.get(name)) is not None
        ]
        return [*headers, *added]

    async def _frozen(self) -> Any:
        """This request's credentials: botocore refreshes the chain's before they expire
        (in a thread when it must: a refresh is a request to AWS)."""
        credentials = self._credentials
        if credentials is None:
            credentials = await self._resolve()
        if isinstance(credentials, self._aws.RefreshableCredentials) and (
            credentials.refresh_needed()
        ):
            return await asyncio.to_thread(credentials.get_frozen_credentials)
        return credentials.get_frozen_credentials()

    async def _resolve(self) -> Any:
        """AWS's credential chain, once (looked up in a thread: it may ask the network)."""
        lock = self._resolving or asyncio.Lock()
        async with lock:
            if self._credentials is not None:
                return self._credentials
            try:
                found = await asyncio.to_thread(self._session.get_credentials)
            except Exception as exc:  # botocore's: a missing profile, a refused role…
                raise UpstreamUnavailableError(
                    f"upstream '{self.name}' has no AWS credentials ({exc})"
                ) from exc
            if found is None:
                raise UpstreamUnavailableError(
                    f"upstream '{self.name}' has no AWS credentials (none in the environment, "
                    "the shared config, or a role)"
                )
            self._credentials = found
            return found

    def error(self, status: int, headers: HeaderList, content: bytes) -> UpstreamStatusError:
        failure = error_to_openai(status, header_value(headers, "x-amzn-errortype"), content)
        failure.headers = retyped(headers, JSON)
        return failure

    def usage(self, content: bytes) -> Usage | None:
        return usage_of_completion(content)


class EventStreamResponse(TranslatedResponse):
    """A Bedrock answer: a whole Converse answer, or an event stream (binary framing,
    ``application/vnd.amazon.eventstream``) translated into OpenAI's SSE."""

    __slots__ = ()

    def __init__(
        self,
        response: HTTPResponse,
        ctx: RequestContext,
        whole: Callable[[bytes], bytes],
        translator: Translator | None,
        request_id_header: str,
    ) -> None:
        upstream_type = response.headers.get("Content-Type", "")
        super().__init__(response, ctx, whole, translator, request_id_header)
        if translator is not None and self.status < 300 and upstream_type.startswith(EVENT_STREAM):
            self.streamed = True
            self.content_type = "text/event-stream"
            self.headers = retyped(self.headers, self.content_type)

    async def first_chunk(self) -> bytes:
        try:
            return await super().first_chunk()
        except UpstreamProtocolError:  # a corrupt frame: the connection is not reusable
            self._response.close()
            raise
