"""Azure OpenAI: OpenAI's API on Azure, passed through byte for byte like any
OpenAI-compatible upstream; only the URL and the credentials differ.

Two URL forms. The classic one names the deployment in the path and the API version
in the query: ``{base}/openai/deployments/{deployment}/chat/completions?api-version=…``;
the deployment is the model the request is for (after the gateway's rewrites), or what
``deployments`` maps it to. The v1 form (``v1 = true``) is OpenAI's own API under
``{base}/openai/v1``, the deployment named as the body's ``model`` (rewritten there,
when ``deployments`` maps the name). Credentials: a key (``api-key`` header) or a
Microsoft Entra ID access token (bearer): static (``entra_token``), or minted by an
azure-identity credential (``entra``: a client secret, a managed identity, workload
identity, or azure-identity's default chain) and refreshed before it expires.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import quote

import msgspec
from yarl import URL

from ..wire.payload import JSONBody
from .base import UpstreamRequest, provider_type, secret
from .credentials import (
    AzureIdentity,
    EntraSettings,
    StaticToken,
    TokenSource,
    bearer,
    entra_credential,
)
from .openai import HTTPUpstreamResponse, OpenAIProvider

if TYPE_CHECKING:
    import aiohttp

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
    entra_token: str | None = None  # or a static Microsoft Entra ID access token (bearer)
    entra_token_env: str | None = None
    # or Entra ID credentials, refreshed: client_secret, managed_identity, workload_identity,
    # default (azure-identity's DefaultAzureCredential)
    entra: str | None = None
    tenant_id: str | None = None  # client_secret (and workload_identity: else AZURE_TENANT_ID)
    client_id: str | None = None  # the app's, or a user-assigned managed identity's
    client_secret_env: str | None = None  # client_secret: the variable holding it
    authority: str | None = None  # another cloud's login host: login.microsoftonline.us
    disable_instance_discovery: bool = False  # for an authority Microsoft does not know
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
            token=_token_source(name, settings, environ),
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
        token: TokenSource | None = None,
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
        if token is None and entra_token:
            token = StaticToken(entra_token)
        self._token = None if api_key else token  # an Entra ID bearer token, per request
        if api_key:
            self._headers.append(("api-key", api_key))
        self._query = "api-version=" + quote(api_version, safe="")
        self._deployment_urls: dict[tuple[str, str], URL] = {}

    def describe(self) -> str:
        how = f", {self._token.describe()}" if self._token is not None else ""
        return f"{self.name} -> {self.base_url} (azure{' v1' if self.v1 else ''}{how})"

    async def start(self, session: aiohttp.ClientSession) -> None:
        await super().start(session)
        if self._token is not None:
            self._token.warm()

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
            await bearer(self._token, request.headers + self._headers),
            request.connect_timeout,
        )
        return HTTPUpstreamResponse(response)


def _token_source(
    name: str, settings: AzureSettings, environ: Mapping[str, str]
) -> TokenSource | None:
    """The Entra ID token the table names: static, or an azure-identity credential's."""
    static = secret(settings.entra_token, settings.entra_token_env, environ)
    named = (settings.tenant_id, settings.client_id, settings.client_secret_env, settings.authority)
    if settings.entra is None:
        if any(named) or settings.disable_instance_discovery:
            raise ValueError(
                "tenant_id, client_id, client_secret_env, authority, disable_instance_discovery "
                "go with entra"
            )
        return StaticToken(static) if static else None
    if static or settings.api_key or settings.api_key_env:
        raise ValueError("give one credential: api_key, entra_token or entra")
    entra = EntraSettings(settings.entra, *named, settings.disable_instance_discovery)
    return AzureIdentity(name, entra_credential(entra, environ))
