"""AWS Bedrock as a provider: the Converse API, and InvokeModel for Claude and embeddings.

A chat request is translated into a Converse request (``gateway.translate.bedrock``)
and sent to ``{endpoint}/model/{modelId}/converse``, or ``/converse-stream`` for a
stream, whose binary event stream is translated into OpenAI's chunks as it arrives.

Claude models (``anthropic_api``: by default, every model id that names one) go through
InvokeModel with Anthropic's own Messages API instead (``/model/{modelId}/invoke``,
``/invoke-with-response-stream``), which keeps what Converse does not carry as sent
(prompt caching's markers, thinking, Anthropic's newer fields): a chat request is
translated by the Anthropic translator, and an Anthropic client's ``/v1/messages``
request goes as it sent it, its stream re-framed from Bedrock's chunks into Anthropic's
SSE. ``/v1/messages/count_tokens`` goes to Bedrock's CountTokens. Embeddings go to Titan
or Cohere embedding models through InvokeModel (``translate.bedrock.embeddings``).

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
from typing import TYPE_CHECKING, Annotated, Any
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
from ..translate.anthropic.answer import message_to_chat
from ..translate.anthropic.request import Facts as MessagesFacts
from ..translate.anthropic.request import chat_to_messages
from ..translate.anthropic.usage import usage_of_message
from ..translate.bedrock.answer import converse_to_chat
from ..translate.bedrock.embeddings import embeddings_to_bedrock, embeddings_to_openai
from ..translate.bedrock.errors import error_to_openai
from ..translate.bedrock.invoke import (
    ANTHROPIC_VERSION,
    InvokeStream,
    MessagesReframe,
    count_tokens_answer,
    to_count_tokens,
    to_invoke,
)
from ..translate.bedrock.request import chat_to_converse, is_claude
from ..translate.bedrock.stream import ConverseStream
from ..translate.chat import usage_of_completion
from ..wire.headers import JSON, UPSTREAM_REQUEST_ID, HeaderList, header_value, retyped
from ..wire.payload import JSONBody
from .anthropic import COUNT_TOKENS, DEFAULT_MAX_TOKENS, MESSAGES
from .base import UpstreamRequest, UpstreamResponse, provider_type, secret
from .http import HTTPProvider
from .openai import HTTPUpstreamResponse
from .translated import TranslatedResponse, Translator

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

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
    # Claude through InvokeModel and Anthropic's Messages API: unset, for every model id
    # that names a Claude model; true, for every chat model (ARNs name none); false, never.
    anthropic_api: bool | None = None
    anthropic_version: str = ANTHROPIC_VERSION  # in the body, Bedrock's Messages API's
    beta: list[str] = []  # anthropic_beta flags sent with every InvokeModel request
    # The flags of a client's anthropic-beta header passed on ("*": all); the others are
    # dropped, for Bedrock refuses a flag it does not know ("invalid beta flag").
    client_betas: list[str] = []
    # Anthropic requires max_tokens; OpenAI does not: this is sent when a request sets none.
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] = DEFAULT_MAX_TOKENS
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
            anthropic_api=settings.anthropic_api,
            anthropic_version=settings.anthropic_version,
            beta=settings.beta,
            client_betas=settings.client_betas,
            max_tokens=settings.max_tokens,
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
        anthropic_api: bool | None = None,
        anthropic_version: str = ANTHROPIC_VERSION,
        beta: list[str] | tuple[str, ...] = (),
        client_betas: list[str] | tuple[str, ...] = (),
        max_tokens: int = DEFAULT_MAX_TOKENS,
    ) -> None:
        self.name = name
        self.region = region
        self.anthropic_api = anthropic_api
        self.anthropic_version = anthropic_version
        self.beta = tuple(beta)
        self.client_betas = frozenset(client_betas)
        self.max_tokens = max_tokens
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
        self._model_urls: dict[tuple[str, str], URL] = {}
        # The headers of each kind of call, before signing: the Accept each asks for.
        self._as_json: HeaderList = [*self._headers, ("accept", JSON)]
        self._as_stream: HeaderList = [*self._headers, ("accept", EVENT_STREAM)]
        self._invoke_stream: HeaderList = [*self._as_stream, ("x-amzn-bedrock-accept", JSON)]
        super().__init__()

    def describe(self) -> str:
        where = "named credentials" if self._session is None else "the AWS credential chain"
        return f"{self.name} -> {self.base_url} (bedrock, {self.region}, {where})"

    def messages_api(self, model: str) -> bool:
        """Whether ``model`` is served through Anthropic's Messages API (InvokeModel)."""
        return is_claude(model) if self.anthropic_api is None else self.anthropic_api

    async def start(self, session: Any) -> None:
        await super().start(session)
        self._resolving = asyncio.Lock()
        if self._credentials is None:
            try:
                await self._resolve()
            except UpstreamUnavailableError as exc:  # the requests will say so, and try again
                logger.warning("provider %s: %s", self.name, exc.message)

    def _url(self, model: str, method: str) -> URL:
        """The URL of an operation on a model: ``converse``, ``converse-stream``,
        ``invoke``, ``invoke-with-response-stream``, ``count-tokens``."""
        url = self._model_urls.get((model, method))
        if url is None:
            # The model id names a path segment: quoted (as botocore does), so that it
            # cannot name another path; ':' and '/' of ARNs and versions included.
            url = URL(f"{self.base_url}/model/{quote(model, safe='')}/{method}", encoded=True)
            if len(self._model_urls) < 1024:  # (names come from clients: kept bounded)
                self._model_urls[(model, method)] = url
        return url

    async def _post(
        self, request: UpstreamRequest, url: URL, body: bytes, headers: HeaderList
    ) -> HTTPResponse:
        """One signed POST of ``body`` to ``url``."""
        signed = await self.signed(url, body, headers)
        return await self.request("POST", url, body, signed, request.connect_timeout)

    async def send(self, ctx: RequestContext, request: UpstreamRequest) -> UpstreamResponse:
        endpoint = request.endpoint
        if endpoint == "chat.completions":
            if self.messages_api(_model_of(ctx, request)):
                return await self._chat_invoke(ctx, request)
            body, facts = chat_to_converse(request.body)
            stream = facts.stream
            url = self._url(facts.model, "converse-stream" if stream else "converse")
            headers = self._as_stream if stream else self._as_json
            response = await self._post(request, url, body, headers)
            translator = ConverseStream(facts) if stream else None
            whole = functools.partial(converse_to_chat, facts=facts)
            return EventStreamResponse(response, ctx, whole, translator, REQUEST_ID)
        if endpoint in (MESSAGES, COUNT_TOKENS) and self.messages_api(_model_of(ctx, request)):
            return await self._messages(ctx, request)
        if endpoint == "embeddings":
            return await self._embeddings(ctx, request)
        raise NotFoundError(
            f"The model's provider ({self.name}, Bedrock) serves chat completions, "
            f"embeddings and, for Claude models, /v1/messages; not {request.method} "
            f"/v1{request.path} for this model.",
            code="unsupported_endpoint",
        )

    async def _chat_invoke(self, ctx: RequestContext, request: UpstreamRequest) -> UpstreamResponse:
        """A chat request to Claude as Anthropic's Messages API, through InvokeModel."""
        messages, facts = chat_to_messages(request.body, self.max_tokens)
        model, stream, body = to_invoke(messages, self.anthropic_version, self.beta)
        if stream:
            url = self._url(model, "invoke-with-response-stream")
            response = await self._post(request, url, body, self._invoke_stream)
            translator: Translator | None = InvokeStream(facts)
        else:
            response = await self._post(request, self._url(model, "invoke"), body, self._as_json)
            translator = None
        whole = functools.partial(_message_to_chat, facts)
        return EventStreamResponse(response, ctx, whole, translator, REQUEST_ID)

    async def _messages(self, ctx: RequestContext, request: UpstreamRequest) -> UpstreamResponse:
        """An Anthropic client's request as it sent it, through InvokeModel (or CountTokens);
        the answer as Anthropic's, its stream as Anthropic's SSE."""
        if request.endpoint == COUNT_TOKENS:
            version, most = self.anthropic_version, self.max_tokens
            model, body = to_count_tokens(request.body, version, most)
            response = await self._post(
                request, self._url(model, "count-tokens"), body, self._as_json
            )
            return EventStreamResponse(response, ctx, count_tokens_answer, None, REQUEST_ID)
        betas = self._betas(request.headers)
        model, stream, body = to_invoke(request.body, self.anthropic_version, betas)
        if stream:
            url = self._url(model, "invoke-with-response-stream")
            response = await self._post(request, url, body, self._invoke_stream)
            translator: Translator | None = MessagesReframe()
        else:
            response = await self._post(request, self._url(model, "invoke"), body, self._as_json)
            translator = None
        return EventStreamResponse(response, ctx, _as_sent, translator, REQUEST_ID)

    def _betas(self, client: HeaderList) -> tuple[str, ...]:
        """This provider's anthropic_beta flags, and those of the client's the table lets
        through (``client_betas``)."""
        given = header_value(client, "anthropic-beta")
        allowed = self.client_betas
        if not given or not allowed:
            return self.beta
        flags = (f.strip() for f in given.split(","))
        passed = [f for f in flags if f and ("*" in allowed or f in allowed)]
        return tuple(dict.fromkeys([*passed, *self.beta]))

    async def _embeddings(self, ctx: RequestContext, request: UpstreamRequest) -> UpstreamResponse:
        """Embeddings through InvokeModel: one call per Titan input (per 96 Cohere inputs),
        a few at a time; the first error answer is the answer, else one OpenAI list."""
        bodies, facts = embeddings_to_bedrock(request.body)
        url = self._url(facts.model, "invoke")
        room = asyncio.Semaphore(EMBEDDING_CALLS)

        async def call(body: bytes) -> tuple[HTTPUpstreamResponse, bytes]:
            async with room:
                answer = HTTPUpstreamResponse(await self._post(request, url, body, self._as_json))
                return answer, await answer.read()

        try:
            async with asyncio.TaskGroup() as group:  # a failure cancels the calls still going
                tasks = [group.create_task(call(body)) for body in bodies]
        except ExceptionGroup as failed:  # the first failure, as any one call's would be
            raise failed.exceptions[0] from None
        answers = [task.result() for task in tasks]
        first = answers[0][0]
        request_id = header_value(first.headers, REQUEST_ID)
        for answer, content in answers:
            if answer.status >= 300:
                return ReadyResponse(answer.status, answer.headers, content, request_id)
        counts = [_count(answer.headers) for answer, _ in answers]
        try:
            content = embeddings_to_openai([c for _, c in answers], counts, facts)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise UpstreamProtocolError(f"the upstream's answer could not be read: {exc}") from exc
        headers = [h for h in first.headers if not h[0].startswith("x-amzn-bedrock-")]
        return ReadyResponse(200, headers, content, request_id)

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
            try:
                return await asyncio.to_thread(credentials.get_frozen_credentials)
            except Exception as exc:  # botocore's: a refresh that failed when it had to be
                raise UpstreamUnavailableError(
                    f"upstream '{self.name}' has no valid AWS credentials "
                    f"(refreshing them failed: {exc})"
                ) from exc
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
        # An OpenAI client's answer was translated; an Anthropic client's came as sent.
        if b'"prompt_tokens"' in content:
            return usage_of_completion(content)
        return usage_of_message(content)


# Embedding calls of one request under way at once (Titan takes one text per call).
EMBEDDING_CALLS = 8


def _model_of(ctx: RequestContext, request: UpstreamRequest) -> str:
    """The model this attempt asks for (the forwarder wrote it into the body)."""
    model = ctx.outcome.upstream_model
    if model is None:
        try:
            model = JSONBody(request.body).get("model")
        except (msgspec.DecodeError, msgspec.ValidationError):
            model = None
    return model if isinstance(model, str) else ""


def _message_to_chat(facts: MessagesFacts, content: bytes) -> bytes:
    return message_to_chat(content, facts)[0]


def _as_sent(content: bytes) -> bytes:
    return content


def _count(headers: HeaderList) -> int | None:
    """Bedrock's ``x-amzn-bedrock-input-token-count`` (Cohere's answers have no other)."""
    value = header_value(headers, "x-amzn-bedrock-input-token-count")
    return int(value) if value is not None and value.isdigit() else None


class ReadyResponse:
    """An answer already read whole (the embeddings' calls, joined), or one of them that
    failed: its status, headers and body as they are."""

    __slots__ = ("_body", "content_type", "headers", "request_id", "status")
    streamed = False

    def __init__(
        self, status: int, headers: HeaderList, body: bytes, request_id: str | None
    ) -> None:
        self.status = status
        self._body = body
        self.request_id = request_id
        renamed = [(UPSTREAM_REQUEST_ID if k == REQUEST_ID else k, v) for k, v in headers]
        if status < 300:
            renamed = retyped(renamed, JSON)
        self.headers = renamed
        self.content_type = header_value(renamed, "content-type") or JSON

    async def read(self) -> bytes:
        return self._body

    async def first_chunk(self) -> bytes:
        return self._body

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        yield self._body

    def close(self) -> None:
        pass


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
