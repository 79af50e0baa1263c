"""Fake cloud endpoints on 127.0.0.1 whose access tokens expire within seconds: Google's
OAuth2 token endpoint and metadata server, Azure App Service's managed-identity endpoint,
Microsoft Entra ID's token endpoint (over TLS), and the upstreams that check those
tokens — Claude and Gemini on Vertex AI, Azure OpenAI.

Token endpoints (each token lives ``TOKEN_LIFE`` seconds):

    POST /google/token        a refresh grant (google-auth's own request for an
                              ``external_account_authorized_user`` ADC file: the client's
                              basic auth and the refresh token checked)
                              -> {"access_token", "expires_in"}
    GET  /azure/msi/token     App Service managed identity (``X-IDENTITY-HEADER`` checked,
                              ``resource`` must be Azure OpenAI's) -> {"access_token",
                              "expires_on"}, as azure-identity's ManagedIdentityCredential
                              reads it with IDENTITY_ENDPOINT and IDENTITY_HEADER set

    The metadata server of GCE, GKE and Cloud Run, as google-auth's compute-engine
    credentials find it with GCE_METADATA_HOST and GCE_METADATA_IP naming this server
    (every request must say ``Metadata-Flavor: Google``, every answer says it back):
    GET  /                                   the ping that detects GCE
    GET  /computeMetadata/v1/project/project-id
    GET  /computeMetadata/v1/instance/service-accounts/default/?recursive=true
                                             the account: {"email", "scopes", "aliases"}
                                             (also by its email, as google-auth asks
                                             once it knows it)
    GET  /computeMetadata/v1/instance/service-accounts/default/token?scopes=…
                                             (cloud-platform must be among the scopes)
                                             -> {"access_token", "expires_in"}

    Microsoft Entra ID, served on ``tls_url`` only (a second, TLS, port: ``tls``, a
    server certificate from ``certificate()``), as MSAL asks it for azure-identity's
    ClientSecretCredential with ``authority`` naming this server:
    GET  /{tenant}/v2.0/.well-known/openid-configuration   the tenant's endpoints
    POST /{tenant}/oauth2/v2.0/token   a client-credentials grant (client id, secret and
                                       Azure OpenAI's scope checked) -> {"access_token",
                                       "expires_in"}; a wrong secret: 401 invalid_client

Upstreams (a bearer token must be one issued here and not expired, give or take
``CLOCK_SKEW`` — real token validators allow minutes; otherwise 401):

    POST /v1/projects/{p}/locations/{l}/publishers/anthropic/models/{model}:rawPredict
         (and :streamRawPredict)   Claude on Vertex: ``anthropic_version`` must be
                                   "vertex-2023-10-16" and ``model`` absent from the body
         .../anthropic/models/count-tokens:rawPredict   {"input_tokens": 42}
    POST /v1/projects/{p}/locations/{l}/publishers/google/models/{model}:generateContent
         (and :streamGenerateContent?alt=sse)            Gemini on Vertex
    POST /openai/deployments/{deployment}/chat/completions?api-version=…   Azure OpenAI

The answers are tests/fake_providers.py's echo shapes ("echo: <last user text>").
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import itertools
import json
import ssl
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fake_providers import (
    AZURE_API_VERSION,
    Recorded,
    _anthropic_error,
    _anthropic_events,
    _gemini_chunks,
    _gemini_whole,
    _google_error,
    _last_user_text,
    _message,
    compact,
)
from tests.threaded_server import ThreadedServer

TOKEN_LIFE = 2.0
CLOCK_SKEW = 1.0
VERTEX_VERSION = "vertex-2023-10-16"
GOOGLE_CLIENT = {"client_id": "fake-client.apps", "client_secret": "fake-secret"}
GOOGLE_REFRESH_TOKEN = "1//fake-refresh-token"
IDENTITY_HEADER = "fake-identity-header"
AZURE_RESOURCE = "https://cognitiveservices.azure.com"
GOOGLE_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
SERVICE_ACCOUNT = "gateway@proj.iam.gserviceaccount.com"
METADATA = "/computeMetadata/v1/"
FLAVOR = {"Metadata-Flavor": "Google"}
ENTRA_TENANT = "00000000-0000-4000-8000-00000000feed"
ENTRA_CLIENT_ID = "11111111-2222-4333-8444-555555555555"
ENTRA_SECRET = "fake-entra-secret~Q8x.never-to-be-seen"


@dataclass
class FakeClouds(ThreadedServer):
    host: str = "127.0.0.1"
    port: int = 0
    life: float = TOKEN_LIFE
    project: str = "proj"
    requests: list[Recorded] = field(default_factory=list)
    tokens: dict[str, float] = field(default_factory=dict)  # token -> when it expires
    # how many tokens each endpoint issued: "google", "azure", "metadata", "entra"
    issued: dict[str, int] = field(default_factory=dict)
    refused: list[str] = field(default_factory=list)  # why each refused request was
    tls: ssl.SSLContext | None = None  # also serve on a TLS port (Entra ID's endpoints)
    tls_port: int = 0
    _serial: itertools.count = field(default_factory=lambda: itertools.count(1))
    handler_cancellation = False

    @property
    def tls_url(self) -> str:
        return f"https://{self.host}:{self.tls_port}"

    async def _start(self) -> None:
        await super()._start()
        if self.tls is not None:
            site = web.TCPSite(self._runner, self.host, 0, ssl_context=self.tls)  # type: ignore[arg-type]
            await site.start()
            self.tls_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    def clear(self) -> None:
        self.requests.clear()
        self.refused.clear()

    def to_upstreams(self) -> list[Recorded]:
        return [r for r in self.requests if not _to_token_endpoint(r.path)]

    def to_token_endpoints(self) -> list[Recorded]:
        return [r for r in self.requests if _to_token_endpoint(r.path)]

    # ------------------------------------------------------------------ tokens

    def _issue(self, kind: str, endpoint: str | None = None) -> tuple[str, float]:
        """A token for ``kind``'s upstreams ("google", "azure"), counted in ``issued``
        under ``endpoint`` (the token endpoint's name, if not ``kind``)."""
        token = f"{kind}-token-{next(self._serial)}"
        expires = time.time() + self.life
        self.tokens[token] = expires
        endpoint = endpoint or kind
        self.issued[endpoint] = self.issued.get(endpoint, 0) + 1
        return token, expires

    def grant(self, token: str, life: float = 3600.0) -> str:
        """Accept a token issued elsewhere (a static one, given in the config)."""
        self.tokens[token] = time.time() + life
        return token

    def _bearer_refused(self, request: web.Request, kind: str) -> str | None:
        """Why the request's bearer token is refused, or None."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        expires = self.tokens.get(token)
        if scheme != "Bearer" or expires is None or not token.startswith(kind):
            why = f"unknown token {token!r}"
        elif time.time() > expires + CLOCK_SKEW:
            why = f"expired token {token!r} ({time.time() - expires:.2f} s ago)"
        else:
            return None
        self.refused.append(f"{request.path}: {why}")
        return why

    async def _google_token(self, request: web.Request) -> web.Response:
        """A refresh grant, its client named in the form or (STS's way) by basic auth."""
        form = dict(await request.post())
        if request.headers.get("authorization", "").startswith("Basic "):
            pair = base64.b64decode(request.headers["authorization"][6:]).decode()
            form["client_id"], _, form["client_secret"] = pair.partition(":")
        expected = {**GOOGLE_CLIENT, "grant_type": "refresh_token"}
        expected["refresh_token"] = GOOGLE_REFRESH_TOKEN
        if any(form.get(k) != v for k, v in expected.items()):
            return web.json_response({"error": "invalid_grant"}, status=400)
        token, _ = self._issue("google")
        body = {"access_token": token, "expires_in": self.life, "token_type": "Bearer"}
        return web.json_response(body)

    async def _azure_token(self, request: web.Request) -> web.Response:
        if request.headers.get("x-identity-header") != IDENTITY_HEADER:
            return web.json_response({"error": "no identity header"}, status=401)
        if request.query.get("resource") != AZURE_RESOURCE:
            return web.json_response({"error": "wrong resource"}, status=400)
        token, expires = self._issue("azure")
        body = {
            "access_token": token,
            "expires_on": str(int(expires)),
            "resource": AZURE_RESOURCE,
            "token_type": "Bearer",
        }
        return web.json_response(body)

    async def _metadata(self, request: web.Request) -> web.Response:
        """The metadata server: the ping, the project, the account, the account's token."""
        if request.headers.get("metadata-flavor") != "Google":
            return web.Response(status=403, text="Missing Metadata-Flavor:Google header.")
        path = request.path.removeprefix(METADATA)
        if request.path == "/":
            return web.Response(text="computeMetadata/\n", headers=FLAVOR)
        if path == "project/project-id":
            return web.Response(text=self.project, headers=FLAVOR)
        accounts = "instance/service-accounts/"
        name, _, rest = path.removeprefix(accounts).partition("/")
        if not path.startswith(accounts) or name not in ("default", SERVICE_ACCOUNT):
            return web.Response(status=404, text="Not Found", headers=FLAVOR)
        if rest == "" and request.query.get("recursive"):  # by its alias, then by its email
            account = {"aliases": ["default"], "email": SERVICE_ACCOUNT, "scopes": [GOOGLE_SCOPE]}
            return web.json_response(account, headers=FLAVOR)
        if rest == "token" and request.method == "GET":
            if GOOGLE_SCOPE not in request.query.get("scopes", "").split(","):
                return web.Response(status=400, text="scopes must include cloud-platform")
            token, _ = self._issue("google", "metadata")
            body = {"access_token": token, "expires_in": round(self.life), "token_type": "Bearer"}
            return web.json_response(body, headers=FLAVOR)
        return web.Response(status=404, text="Not Found", headers=FLAVOR)

    async def _entra(self, request: web.Request) -> web.Response:
        """Entra ID: a tenant's OpenID configuration, and its token endpoint."""
        if not request.secure:
            return web.json_response({"error": "https only"}, status=400)
        tenant, _, path = request.path.removeprefix("/").partition("/")
        if tenant != ENTRA_TENANT:
            return web.json_response({"error": "invalid_tenant"}, status=400)
        base = f"{self.tls_url}/{tenant}"
        if path == "v2.0/.well-known/openid-configuration":
            config = {
                "issuer": f"{base}/v2.0",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": ["client_secret_post"],
            }
            return web.json_response(config)
        if path != "oauth2/v2.0/token" or request.method != "POST":
            return web.json_response({"error": "not_found"}, status=404)
        form = dict(await request.post())
        if form.get("client_id") != ENTRA_CLIENT_ID or form.get("client_secret") != ENTRA_SECRET:
            error = {
                "error": "invalid_client",
                "error_description": "AADSTS7000215: Invalid client secret provided.",
            }
            return web.json_response(error, status=401)
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        if form.get("scope") != f"{AZURE_RESOURCE}/.default":
            return web.json_response({"error": "invalid_scope"}, status=400)
        token, _ = self._issue("azure", "entra")
        life = round(self.life)
        body = {"token_type": "Bearer", "expires_in": life, "ext_expires_in": life}
        return web.json_response({**body, "access_token": token})

    # ------------------------------------------------------------------ dispatch

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        query = request.rel_url.raw_query_string
        self.requests.append(Recorded(request.method, request.path, query, headers, body))
        path = request.path
        if path == "/google/token":
            return await self._google_token(request)
        if path == "/azure/msi/token":
            return await self._azure_token(request)
        if path == "/" or path.startswith(METADATA):
            return await self._metadata(request)
        if path.startswith(f"/{ENTRA_TENANT}/") or request.secure:
            return await self._entra(request)
        prefix = f"/v1/projects/{self.project}/locations/"
        if path.startswith(prefix) and "/publishers/anthropic/models/" in path:
            return await self._claude(request, body)
        if path.startswith(prefix) and "/publishers/google/models/" in path:
            return await self._gemini(request, body)
        if path.startswith("/openai/deployments/"):
            return await self._azure(request, body)
        return web.json_response({"error": {"message": f"no route {path}"}}, status=404)

    # ------------------------------------------------------------------ Claude on Vertex

    async def _claude(self, request: web.Request, body: bytes) -> web.StreamResponse:
        why = self._bearer_refused(request, "google")
        if why is not None:
            return _google_error(401, f"Request had invalid authentication credentials: {why}")
        data = json.loads(body)
        model, _, method = request.path.rsplit("/", 1)[1].partition(":")
        if data.get("anthropic_version") != VERTEX_VERSION:
            return _anthropic_error(400, f"anthropic_version: {data.get('anthropic_version')!r}")
        if model == "count-tokens" and method == "rawPredict":
            if "model" not in data:
                return _anthropic_error(400, "model: Field required")
            return web.json_response({"input_tokens": 42})
        if "model" in data:
            return _anthropic_error(400, "model: Extra inputs are not permitted")
        data["model"] = model
        stream = bool(data.get("stream"))
        if method != ("streamRawPredict" if stream else "rawPredict"):
            return _google_error(400, f"{method} with stream={stream}")
        kind = model.partition("@")[0]
        if not stream:
            return web.json_response(_message(kind, data), headers={"request-id": "req_vtx_1"})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in _anthropic_events(kind, data):
            await response.write(event)
        await response.write_eof()
        return response

    # ------------------------------------------------------------------ Gemini on Vertex

    async def _gemini(self, request: web.Request, body: bytes) -> web.StreamResponse:
        why = self._bearer_refused(request, "google")
        if why is not None:
            return _google_error(401, f"Request had invalid authentication credentials: {why}")
        model, _, method = request.path.rsplit("/", 1)[1].partition(":")
        chunks = _gemini_chunks(model, model, json.loads(body))
        if method == "generateContent":
            return web.json_response(_gemini_whole(chunks))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for chunk in chunks:
            await response.write(b"data: " + compact(chunk) + b"\r\n\r\n")
        await response.write_eof()
        return response

    # ------------------------------------------------------------------ Azure OpenAI

    async def _azure(self, request: web.Request, body: bytes) -> web.StreamResponse:
        why = self._bearer_refused(request, "azure")
        if why is not None:
            error = {"code": "401", "message": f"Access denied: {why}"}
            return web.json_response({"error": error}, status=401)
        if request.query.get("api-version") != AZURE_API_VERSION:
            return web.json_response({"error": {"message": "Resource not found"}}, status=404)
        deployment = request.path.removeprefix("/openai/deployments/").partition("/")[0]
        data = json.loads(body)
        text = f"azure {deployment}: {_last_user_text(data.get('messages') or [])}"
        completion = {
            "id": "chatcmpl-az",
            "object": "chat.completion",
            "created": 1,
            "model": deployment,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7},
        }
        if not data.get("stream"):
            return web.json_response(completion)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        chunk = {**completion, "object": "chat.completion.chunk"}
        chunk["choices"] = [{"index": 0, "delta": {"content": text}, "finish_reason": "stop"}]
        del chunk["usage"]
        await response.write(b"data: " + compact(chunk) + b"\n\n")
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


def adc_file(path: Any, fake: FakeClouds) -> str:
    """An ADC file (``GOOGLE_APPLICATION_CREDENTIALS``) whose token endpoint is the fake's.

    An ``external_account_authorized_user`` file (workforce identity federation's):
    google-auth refreshes it at its ``token_url``. (An ``authorized_user`` file's
    ``token_uri`` is always replaced by Google's own, and a service account's asks
    for a signed JWT: this is the file type that can name a token endpoint on loopback.)
    """
    info = {
        "type": "external_account_authorized_user",
        "audience": "//iam.googleapis.com/locations/global/workforcePools/pool/providers/idp",
        **GOOGLE_CLIENT,
        "refresh_token": GOOGLE_REFRESH_TOKEN,
        "token_url": f"{fake.url}/google/token",
    }
    path.write_text(json.dumps(info))
    return str(path)


def _to_token_endpoint(path: str) -> bool:
    return path == "/" or path.startswith(("/google/", "/azure/", METADATA, f"/{ENTRA_TENANT}/"))


def certificate(directory: Any) -> tuple[ssl.SSLContext, str]:
    """A self-signed certificate for 127.0.0.1, made now: the server's TLS context, and
    the path of the certificate for clients to trust (``REQUESTS_CA_BUNDLE``)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake clouds")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "fake-clouds.pem", directory / "fake-clouds.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    return context, str(cert_path)
