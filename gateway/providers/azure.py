"""Azure OpenAI: OpenAI's API on Azure, passed through byte for byte like any
OpenAI-compatible upstream; only the URL and the credentials differ.

Two URL forms. The classic one names the deployment in the path and the API version
in the query: ``{base}/openai/deployments/{deployment}/chat/completions?api-version=…``;
the deployment is the model the request is for (after the gateway's rewrites), or what
``deployments`` maps it to. The v1 form (``v1 = true``) is OpenAI's own API under
``{base}/openai/v1``, the deployment named as the body's ``model`` (rewritten there,
when ``deployments`` maps the name). Credentials: a key (``api-key`` header) or a
Microsoft Entra ID access token (bearer).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import quote

import msgspec
from yarl import URL

from ..wire.payload import JSONBody
from .base import UpstreamRequest, provider_type, secret
from .openai import HTTPUpstreamResponse, OpenAIProvider

if TYPE_CHECKING:
    from ..core.context import RequestContext

API_VERSION = "2024-10-21"  # the data plane's GA version


class AzureSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``[providers.<name>]`` with ``type = "azure"``: ``resource`` or ``base_url``."""

    resource: str | None = None  # https://{resource}.openai.azure.com
    base_url: str | None = None  # or the endpoint itself (without /openai)
    api_version: str = API_VERSION  # the classic form's api-version
    v1: bool = False  # the v1 API: {base}/openai/v1, no api-version
    api_key: str | None = None  # sent as the api-key header
    api_key_env: str | None = None
    entra_token: str | None = None  # or a Microsoft Entra ID access token (bearer)
    entra_token_env: str | None = None
    deployments: dict[str, str] = {}  # model -> deployment name, where they differ
    headers: dict[str, str] = {}
    responses: bool | None = None  # unset: the v1 API serves the Responses API, classic not


@provider_type("azure")
class AzureOpenAIProvider(OpenAIProvider):
    """Azure OpenAI, classic (deployment URLs, ``api-version``) or v1."""

    Settings = AzureSettings  # type: ignore[assignment]

    @classmethod
    def from_settings(  # type: ignore[override]
        cls, name: str, settings: AzureSettings, environ: Mapping[str, str]
    ) -> AzureOpenAIProvider:
        if (settings.resource is None) == (settings.base_url is None):
            raise ValueError("give either resource or base_url")
        base_url = settings.base_url or f"https://{settings.resource}.openai.azure.com"
        return cls(
            name,
            base_url=base_url,
            api_version=settings.api_version,
            v1=settings.v1,
            api_key=secret(settings.api_key, settings.api_key_env, environ),
            entra_token=secret(settings.entra_token, settings.entra_token_env, environ),
            deployments=settings.deployments,
            headers=settings.headers,
            responses=settings.responses,
        )

    def __init__(
        self,
        name: str = "azure",
        *,
        base_url: str,
        api_version: str = API_VERSION,
        v1: bool = False,
        api_key: str | None = None,
        entra_token: str | None = None,
        deployments: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        responses: bool | None = None,
    ) -> None:
        endpoint = base_url.rstrip("/").removesuffix("/openai").removesuffix("/openai/v1")
        root = f"{endpoint}/openai/v1" if v1 else f"{endpoint}/openai"
        super().__init__(
            name, base_url=root, headers=headers, responses=v1 if responses is None else responses
        )
        self.v1 = v1
        self.api_version = api_version
        self.deployments = dict(deployments or {})
        if api_key:
            self._headers.append(("api-key", api_key))
        elif entra_token:
            self._headers.append(("authorization", f"Bearer {entra_token}"))
        self._query = "api-version=" + quote(api_version, safe="")
        self._deployment_urls: dict[tuple[str, str], URL] = {}

    def describe(self) -> str:
        return f"{self.name} -> {self.base_url} (azure{' v1' if self.v1 else ''})"

    def _url(self, ctx: RequestContext, request: UpstreamRequest) -> URL:
        if self.v1:
            url = None if request.query else self._urls.get(request.path)
            return url or self._build_url(request.path, request.query)
        model = ctx.outcome.upstream_model  # the model this attempt asks for, rewritten
        query = f"{self._query}&{request.query}" if request.query else self._query
        if not model:  # files, batches, the model list: not a deployment's
            return self._build_url(request.path, query)
        deployment = self.deployments.get(model, model)
        key = (deployment, request.path)
        url = None if request.query else self._deployment_urls.get(key)
        if url is None:
            # The deployment names a path segment: quoted, so it cannot name another path.
            name = quote(deployment, safe="")
            url = URL(f"{self.base_url}/deployments/{name}{request.path}?{query}", encoded=True)
            if not request.query and len(self._deployment_urls) < 1024:
                self._deployment_urls[key] = url
        return url

    def _body(self, ctx: RequestContext, request: UpstreamRequest) -> bytes:
        """The v1 form names the deployment in the body: renamed there if mapped."""
        body = request.body
        model = ctx.outcome.upstream_model
        if not self.v1 or not model or model not in self.deployments or not body.startswith(b"{"):
            return body
        fields = JSONBody(body)
        fields["model"] = self.deployments[model]
        return fields.to_bytes()

    async def send(self, ctx: RequestContext, request: UpstreamRequest) -> HTTPUpstreamResponse:
        response = await self.request(
            request.method,
            self._url(ctx, request),
            self._body(ctx, request),
            request.headers + self._headers,
            request.connect_timeout,
        )
        return HTTPUpstreamResponse(response)
