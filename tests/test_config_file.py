"""Several providers, model rewrites and aliases from a GATEWAY_CONFIG file."""

from __future__ import annotations

import openai
import pytest

from tests.conftest import SERVERS, start_gateway
from tests.gateway_process import raw_request

CONFIG = """
default_provider = "alpha"

[providers.alpha]
base_url = "{base}"
api_key_env = "ALPHA_KEY"
headers = {{ "x-provider" = "alpha" }}

[providers.beta]
base_url = "{base}"
api_key = "beta-key"
headers = {{ "x-provider" = "beta" }}

[models.public-a]
provider = "alpha"
model = "upstream-a"

[models."public-b"]
provider = "beta"
aliases = ["b-alias"]

[models.whisper-public]
provider = "alpha"
model = "whisper-1"
"""


@pytest.fixture(scope="module", params=SERVERS)
def config_gateway(request, upstream_server, tmp_path_factory):
    path = tmp_path_factory.mktemp("config") / "gateway.toml"
    path.write_text(CONFIG.format(base=upstream_server.base_url))
    env = {"GATEWAY_CONFIG": str(path), "ALPHA_KEY": "alpha-key"}
    process = start_gateway(tmp_path_factory, request.param, env)
    yield process
    process.stop()


def sdk(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="x", max_retries=0)


MESSAGES = [{"role": "user", "content": "hi"}]


def test_models_lists_the_configured_names(config_gateway):
    assert [m.id for m in sdk(config_gateway).models.list().data] == [
        "public-a",
        "public-b",
        "b-alias",
        "whisper-public",
    ]
    assert sdk(config_gateway).models.retrieve("b-alias").id == "b-alias"
    with pytest.raises(openai.NotFoundError):
        sdk(config_gateway).models.retrieve("nope")


def test_model_is_rewritten_for_its_provider(config_gateway, upstream):
    sdk(config_gateway).chat.completions.create(model="public-a", messages=MESSAGES)
    sent = upstream.last()
    assert sent.json["model"] == "upstream-a"
    assert sent.headers["x-provider"] == "alpha"
    assert sent.headers["Authorization"] == "Bearer alpha-key"


def test_alias_reaches_its_provider_under_the_models_own_name(config_gateway, upstream):
    completion = sdk(config_gateway).chat.completions.create(model="b-alias", messages=MESSAGES)
    assert completion.choices[0].message.content == "echo: hi"
    sent = upstream.last()
    assert sent.json["model"] == "public-b"  # the upstream knows the model, not the alias
    assert sent.headers["x-provider"] == "beta"
    assert sent.headers["Authorization"] == "Bearer beta-key"


def test_unknown_model_is_a_404_model_not_found(config_gateway, upstream):
    with pytest.raises(openai.NotFoundError) as caught:
        sdk(config_gateway).chat.completions.create(model="gpt-unknown", messages=MESSAGES)
    assert caught.value.body["code"] == "model_not_found"
    assert caught.value.body["param"] == "model"
    assert upstream.requests == []


def test_multipart_upload_routes_by_its_model_field_and_keeps_the_file(config_gateway, upstream):
    audio = bytes(range(256)) * 64 + b'name="model"\r\n\r\nfake'  # binary, with a decoy
    boundary = "----gatewaytestboundary"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="model"\r\n'
            "Content-Type: audio/wav\r\n\r\n"
        ).encode()
        + audio
        + (
            f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n'
            f"\r\nwhisper-public\r\n--{boundary}--\r\n"
        ).encode()
    )
    response = raw_request(
        config_gateway.url,
        "POST",
        "/v1/audio/transcriptions?timestamp=word",
        body,
        {"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status == 200, response
    sent = upstream.last()
    assert sent.path == "/v1/audio/transcriptions"
    assert sent.query == "timestamp=word"
    assert sent.headers["x-provider"] == "alpha"
    if config_gateway.server == "granian":
        assert sent.body == body.replace(b"\r\n\r\nwhisper-public\r\n", b"\r\n\r\nwhisper-1\r\n")
    else:  # Robyn parses multipart bodies itself: the adapter rebuilds one (see docs/servers.md)
        assert b'name="file"; filename="model"' in sent.body
        assert b'name="model"\r\n\r\nwhisper-1\r\n' in sent.body
    assert audio in sent.body


def test_other_paths_keep_method_query_and_body(config_gateway, upstream):
    query = "limit=2&order=desc&after=file%2Dx"
    listed = raw_request(config_gateway.url, "GET", f"/v1/files?{query}").json()
    if config_gateway.server == "robyn":  # Robyn keeps the parameters, not their order
        assert sorted(listed.pop("query").split("&")) == sorted(query.split("&"))
    else:
        assert listed.pop("query") == query
    assert listed == {
        "method": "GET",
        "path": "/v1/files",
        "content_type": None,
        "size": 0,
        "model": None,
    }
    assert upstream.last().headers["x-provider"] == "alpha"  # no model: the default provider
    deleted = raw_request(config_gateway.url, "DELETE", "/v1/files/file-abc")
    assert deleted.json()["method"] == "DELETE"
    body = b'{"model":"public-b","input":"hi","x_new_api_field":{"n":0.70}}'
    created = raw_request(
        config_gateway.url, "POST", "/v1/moderations", body, {"content-type": "application/json"}
    )
    assert created.json()["path"] == "/v1/moderations"
    assert upstream.last().body == body
    assert upstream.last().headers["x-provider"] == "beta"


def test_unknown_model_on_other_paths_is_a_404(config_gateway, upstream):
    body = b'{"model":"gpt-unknown","input":"hi"}'
    response = raw_request(
        config_gateway.url, "POST", "/v1/responses", body, {"content-type": "application/json"}
    )
    assert response.status == 404
    assert response.json()["error"]["code"] == "model_not_found"


def test_a_provider_type_of_ones_own_from_a_hook_module(tmp_path):
    from gateway.config.settings import Settings, build_gateway

    config = tmp_path / "gateway.toml"
    config.write_text(
        'hooks = ["tests.sample_hooks:Marker"]\n'
        '[providers.shouty]\ntype = "echo-upper"\nupper = true\n'
        '[models.loud]\nprovider = "shouty"\n'
    )
    built = build_gateway(Settings.from_env({"GATEWAY_CONFIG": str(config)}))
    provider = built.registry.resolve("loud").provider
    assert type(provider).__name__ == "UpperEchoProvider" and provider.upper is True
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(
        'hooks = ["tests.sample_hooks:Marker"]\n[providers.shouty]\ntype = "echo-upper"\nloud = 1\n'
    )
    import pytest

    from gateway.config.settings import ConfigError

    with pytest.raises(ConfigError, match=r"providers\.shouty\.loud: unknown setting"):
        build_gateway(Settings.from_env({"GATEWAY_CONFIG": str(wrong)}))


async def test_the_own_provider_type_answers(tmp_path):
    import json

    from gateway import Request
    from gateway.config.settings import Settings, build_gateway

    config = tmp_path / "gateway.toml"
    config.write_text(
        'hooks = ["tests.sample_hooks:Marker"]\n'
        '[providers.shouty]\ntype = "echo-upper"\n[models.loud]\nprovider = "shouty"\n'
    )
    settings = Settings.from_env({"GATEWAY_CONFIG": str(config), "GATEWAY_ACCESS_LOG": "off"})
    gateway = build_gateway(settings)
    body = json.dumps({"model": "loud", "messages": [{"role": "user", "content": "x"}]})
    async with gateway:
        response = await gateway.handle(
            Request("POST", "/v1/chat/completions", "", {}, body.encode())
        )
    assert b"MOCK RESPONSE" in response.body
