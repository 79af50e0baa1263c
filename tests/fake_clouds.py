"""Fake cloud endpoints on 127.0.0.1 whose access tokens expire within seconds: Google's
OAuth2 token endpoint, Azure App Service's managed-identity endpoint, and the upstreams
that check those tokens — Claude and Gemini on Vertex AI, Azure OpenAI.

Token endpoints (each token lives ``TOKEN_LIFE`` seconds):

    POST /google/token        a refresh grant (google-auth's own request for an
                              ``external_account_authorized_user`` ADC file: the client's
                              basic auth and the refresh token checked)
                              -> {"access_token", "expires_in"}
    GET  /azure/msi/token     App Service managed identity (``X-IDENTITY-HEADER`` checked,
                              ``resource`` must be Azure OpenAI's) -> {"access_token",
                              "expires_on"}, as azure-identity's ManagedIdentityCredential
                              reads it with IDENTITY_ENDPOINT and IDENTITY_HEADER set

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
import itertools
import json
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


@dataclass
class FakeClouds(ThreadedServer):
    host: str = "127.0.0.1"
    port: int = 0
    life: float = TOKEN_LIFE
    project: str = "proj"
    requests: list[Recorded] = field(default_factory=list)
    tokens: dict[str, float] = field(default_factory=dict)  # token -> when it expires
    issued: dict[str, int] = field(default_factory=dict)  # "google"/"azure" -> how many
    refused: list[str] = field(default_factory=list)  # why each refused request was
    _serial: itertools.count = field(default_factory=lambda: itertools.count(1))
    handler_cancellation = False

    def clear(self) -> None:
        self.requests.clear()
        self.refused.clear()

    def to_upstreams(self) -> list[Recorded]:
        return [r for r in self.requests if not r.path.startswith(("/google/", "/azure/"))]

    # ------------------------------------------------------------------ tokens

    def _issue(self, kind: str) -> tuple[str, float]:
        token = f"{kind}-token-{next(self._serial)}"
        expires = time.time() + self.life
        self.tokens[token] = expires
        self.issued[kind] = self.issued.get(kind, 0) + 1
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
