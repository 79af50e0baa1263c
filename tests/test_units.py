"""Small parts on their own: hooks registry, errors, auth, multipart, registry, config."""

from __future__ import annotations

import asyncio

import msgspec
import pytest

from gateway import (
    AuthenticationError,
    InvalidRequestError,
    MockProvider,
    ModelNotFoundError,
    ModelRegistry,
    OpenAIProvider,
    RateLimitError,
    RequestContext,
    UpstreamStatusError,
    UpstreamTimeoutError,
)
from gateway.access.auth import APIKeyAuth, presented_key
from gateway.config.settings import ConfigError, Settings, build_registry
from gateway.core.hooks import FunctionHook, Hooks, load_hook
from gateway.wire import multipart
from gateway.wire.endpoints import CHAT
from gateway.wire.headers import forwardable_headers, passable_headers
from gateway.wire.http import error_response

# --------------------------------------------------------------------------- hooks


class Both:
    def authenticate(self, ctx, key):
        return "me" if key == "k" else None

    async def before_request(self, ctx, request):
        return None


def test_a_hook_takes_part_in_every_event_it_implements():
    hooks = Hooks([Both()])
    assert len(hooks.authenticate) == 1 and len(hooks.before_request) == 1
    assert not hooks.after_response and not hooks.on_chunk and not hooks.on_error


def test_first_non_none_wins_and_async_and_sync_mix():
    class No:
        async def authenticate(self, ctx, key):
            return None

    hooks = Hooks([No(), Both()])
    assert asyncio.run(hooks.authenticate.first(RequestContext(), "k")) == "me"
    assert asyncio.run(hooks.authenticate.first(RequestContext(), "x")) is None


def test_plain_functions_and_classes_are_hooks():
    def on_error(ctx, error):
        return None

    hooks = Hooks([on_error, Both])
    assert isinstance(hooks.hooks[0], FunctionHook)
    assert isinstance(hooks.hooks[1], Both)
    assert len(hooks.on_error) == 1 and len(hooks.authenticate) == 1
    with pytest.raises(TypeError):
        FunctionHook(lambda ctx: None)


def test_a_hook_with_no_event_is_refused():
    with pytest.raises(TypeError, match="implements none"):
        Hooks([object()])


def test_load_hook_by_import_path():
    assert (
        type(load_hook("tests.sample_hooks:AuthenticateAndRewrite")).__name__
        == "AuthenticateAndRewrite"
    )
    with pytest.raises(ValueError):
        load_hook("tests.sample_hooks")
    with pytest.raises(ValueError):
        load_hook("tests.sample_hooks:Missing")


# --------------------------------------------------------------------------- errors


def test_errors_render_as_openai_json_with_status():
    cases = [
        (InvalidRequestError("bad", param="model"), 400, "invalid_request_error", "model", None),
        (AuthenticationError("no"), 401, "authentication_error", None, "invalid_api_key"),
        (ModelNotFoundError("x"), 404, "invalid_request_error", "model", "model_not_found"),
        (
            RateLimitError("slow down", retry_after=2.4),
            429,
            "rate_limit_error",
            None,
            "rate_limit_exceeded",
        ),
        (UpstreamTimeoutError("late"), 504, "timeout_error", None, "upstream_timeout"),
    ]
    for error, status, kind, param, code in cases:
        response = error_response(error)
        assert response.status == status
        body = msgspec.json.decode(response.body)["error"]
        assert (body["type"], body["param"], body["code"]) == (kind, param, code)
    # Rounded up: a client told to come back never comes back too early.
    assert error_response(RateLimitError("x", retry_after=2.4)).header("retry-after") == "3"


def test_upstream_status_error_is_passed_on_as_sent():
    error = UpstreamStatusError(
        418, [("content-type", "text/plain"), ("retry-after", "3")], b"teapot"
    )
    response = error_response(error)
    assert (response.status, response.body, response.header("Retry-After")) == (418, b"teapot", "3")


# ----------------------------------------------------------------------------- auth


def test_presented_key_forms():
    assert presented_key({"authorization": "Bearer  abc "}) == "abc"
    assert presented_key({"authorization": "bearer abc"}) == "abc"
    assert presented_key({"authorization": "Basic abc"}) is None
    assert presented_key({"api-key": "k1"}) == "k1"
    assert presented_key({"x-api-key": "k2"}) == "k2"
    assert presented_key({}) is None


def test_api_key_auth_names_keys_without_revealing_them():
    auth = APIKeyAuth(["alpha", "beta"])
    ctx = RequestContext()
    names = {auth.authenticate(ctx, "alpha"), auth.authenticate(ctx, "beta")}
    assert len(names) == 2 and all(n.startswith("key_") and "alpha" not in n for n in names)
    assert auth.authenticate(ctx, "alph") is None
    assert auth.authenticate(ctx, None) is None
    with pytest.raises(ValueError):
        APIKeyAuth([""])


def test_request_headers_to_forward():
    client = {
        "connection": "close, x-hop",
        "x-hop": "1",
        "authorization": "Bearer c",
        "x-ok": "1",
        "host": "h",
        "content-length": "3",
        "api-key": "c",
        "openai-beta": "assistants=v2",
    }
    assert forwardable_headers(client) == [("x-ok", "1"), ("openai-beta", "assistants=v2")]


def test_response_headers_to_pass_on():
    upstream = [
        ("Content-Type", "application/json"),
        ("Connection", "keep-alive, X-Hop"),
        ("X-Hop", "1"),
        ("Set-Cookie", "a=b"),
        ("Content-Length", "10"),
        ("Retry-After", "3"),
        ("X-Request-Id", "req_upstream_1"),
        ("Content-Encoding", "gzip"),
    ]
    assert passable_headers(upstream) == [
        ("content-type", "application/json"),
        ("retry-after", "3"),
        ("x-upstream-request-id", "req_upstream_1"),
    ]


# ------------------------------------------------------------------------- endpoints


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        (b'{"model": 1, "messages": []}', "model", "Invalid type for 'model'"),
        (b'{"model": "m"}', "messages", "Missing required parameter: 'messages'."),
        (b"[]", None, "must be a JSON object, not array"),
        (b"{", None, "not valid JSON"),
    ],
)
def test_routing_fields_errors(body, param, message):
    with pytest.raises(InvalidRequestError) as caught:
        CHAT.parse(body)
    assert caught.value.param == param
    assert message in caught.value.message


# ------------------------------------------------------------------------ multipart

BOUNDARY = b"XyZ"
FORM = (
    b'--XyZ\r\nContent-Disposition: form-data; name="file"; filename="model"\r\n\r\n'
    b'bin name="model" data\r\n'
    b'--XyZ\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-1\r\n'
    b"--XyZ--\r\n"
)


def test_multipart_field_is_found_past_decoys_and_replaced():
    assert multipart.boundary_of('multipart/form-data; boundary="XyZ"') == BOUNDARY
    assert multipart.boundary_of("application/json") is None
    assert multipart.read_field(FORM, BOUNDARY, "model") == "whisper-1"
    assert multipart.read_field(FORM, BOUNDARY, "missing") is None
    replaced = multipart.replace_field(FORM, BOUNDARY, "model", "w-2")
    assert replaced == FORM.replace(b"whisper-1", b"w-2")
    assert multipart.replace_field(FORM, BOUNDARY, "missing", "x") is FORM


# ------------------------------------------------------------------------- registry


def test_open_registry_sends_every_model_to_the_default():
    default = MockProvider()
    registry = ModelRegistry(default)
    route = registry.resolve("anything")
    assert registry.is_open and route.provider is default and route.upstream_model is None


def test_listed_registry_resolves_names_aliases_and_rewrites():
    a, b = MockProvider("a"), MockProvider("b")
    registry = ModelRegistry(a)
    registry.add("public", b, "private", aliases=["alias"])
    registry.add("same", a, "same")
    assert registry.resolve("alias").upstream_model == "private"
    assert registry.resolve("same").upstream_model == "same"  # sent as it came: no re-encoding
    assert registry.names() == ["public", "alias", "same"]
    with pytest.raises(ModelNotFoundError):
        registry.resolve("other")
    with pytest.raises(ValueError):
        registry.add("alias", a)


# --------------------------------------------------------------------------- config


def test_settings_defaults_and_parsing():
    settings = Settings.from_env({})
    assert (settings.host, settings.port, settings.server, settings.workers) == (
        "127.0.0.1",
        8080,
        "granian",
        1,
    )
    settings = Settings.from_env({"GATEWAY_API_KEYS": " a, b ,,", "GATEWAY_SERVER": "Robyn"})
    assert settings.api_keys == ("a", "b") and settings.server == "robyn"
    with pytest.raises(
        ConfigError, match=r"^GATEWAY_WORKERS: expected an integer from 1 to 256, got 'x'$"
    ):
        Settings.from_env({"GATEWAY_WORKERS": "x"})


def test_registry_from_env_only():
    mock = build_registry(Settings.from_env({}))
    assert isinstance(mock.default, MockProvider)
    real = build_registry(Settings.from_env({"OPENAI_API_KEY": "k"}))
    assert (
        isinstance(real.default, OpenAIProvider)
        and real.default.base_url == "https://api.openai.com/v1"
    )
    assert "k" not in real.default.describe()
