"""Claude on Vertex AI, and cloud credentials that refresh: Google's Application Default
Credentials (google-auth) and Microsoft Entra ID (azure-identity).

End to end, through real gateway processes on both servers, with the official openai
and anthropic SDKs as clients, against tests/fake_clouds.py: a fake Vertex AI (Claude's
``rawPredict``/``streamRawPredict``, Gemini's ``generateContent``) and Azure OpenAI that
accept only unexpired tokens, and fake token endpoints whose tokens live two seconds.
google-auth reads an ADC file (``GOOGLE_APPLICATION_CREDENTIALS``) naming the fake token
endpoint; azure-identity's ManagedIdentityCredential finds the fake App Service identity
endpoint (``IDENTITY_ENDPOINT``, ``IDENTITY_HEADER``) — both SDKs' own code, over plain
HTTP on loopback.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import anthropic
import openai
import pytest

from gateway.core.errors import UpstreamUnavailableError
from gateway.providers.anthropic import AnthropicProvider, vertex_host
from gateway.providers.credentials import AzureIdentity, Minted, RefreshingToken
from tests.conftest import CLIENT_KEY, SERVERS, start_gateway
from tests.fake_clouds import IDENTITY_HEADER, VERTEX_VERSION, FakeClouds, adc_file
from tests.gateway_process import ROOT

HI = [{"role": "user", "content": "hi there"}]
STATIC_TOKEN = "google-static-token"
CLAUDE_PATH = "/v1/projects/proj/locations/us-east5/publishers/anthropic/models/"


def config(fake: FakeClouds) -> str:
    return f"""
[providers.vertex-claude]
type = "anthropic"
base_url = "{fake.url}"
project = "proj"
location = "us-east5"

[providers.vertex-claude-static]
type = "anthropic"
base_url = "{fake.url}"
project = "proj"
location = "us-east5"
access_token_env = "TEST_VERTEX_TOKEN"

[providers.vertex-gemini]
type = "gemini"
base_url = "{fake.url}"
project = "proj"
location = "us-east5"
credentials = "adc"

[providers.azure-entra]
type = "azure"
base_url = "{fake.url}"
entra = "managed_identity"

[models.claude-vertex]
provider = "vertex-claude"
model = "claude-echo@20250514"

[models.claude-static]
provider = "vertex-claude-static"
model = "claude-echo@20250514"

[models.gemini-vertex]
provider = "vertex-gemini"
model = "gemini-echo"

[models.gpt-entra]
provider = "azure-entra"
model = "prod-4o"
"""


@pytest.fixture(scope="module")
def fake():
    server = FakeClouds().start()
    server.grant(STATIC_TOKEN)
    yield server
    server.stop()


@pytest.fixture(scope="module", params=SERVERS)
def gw(request, fake, tmp_path_factory):
    directory = tmp_path_factory.mktemp("clouds")
    path = directory / "gateway.toml"
    path.write_text(config(fake))
    env = {
        "GATEWAY_CONFIG": str(path),
        "GATEWAY_API_KEYS": CLIENT_KEY,
        "GATEWAY_UPSTREAM_TIMEOUT": "10",
        "GOOGLE_APPLICATION_CREDENTIALS": adc_file(directory / "adc.json", fake),
        "IDENTITY_ENDPOINT": f"{fake.url}/azure/msi/token",
        "IDENTITY_HEADER": IDENTITY_HEADER,
        "TEST_VERTEX_TOKEN": STATIC_TOKEN,
    }
    process = start_gateway(tmp_path_factory, request.param, env)
    yield process
    process.stop()


@pytest.fixture
def clouds(fake):
    fake.clear()
    return fake


def sdk(gw) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)


def claude_sdk(gw) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=CLIENT_KEY, max_retries=0, timeout=20)


def the_vertex_request(fake: FakeClouds, method: str):
    """The one request that reached Claude on Vertex, checked as Vertex wants it."""
    (sent,) = [r for r in fake.to_upstreams() if "/publishers/anthropic/" in r.path]
    assert sent.path == f"{CLAUDE_PATH}claude-echo@20250514:{method}"
    assert sent.query == ""
    assert sent.json["anthropic_version"] == VERTEX_VERSION
    assert "model" not in sent.json
    assert sent.headers["authorization"].startswith("Bearer google-token-")
    assert CLIENT_KEY not in str(sent.headers)
    return sent


# ================================================================ Claude on Vertex AI


def test_openai_clients_reach_claude_on_vertex(gw, clouds):
    completion = sdk(gw).chat.completions.create(model="claude-vertex", messages=HI)
    assert completion.choices[0].message.content == "echo: hi there"
    assert completion.usage.prompt_tokens == 35
    sent = the_vertex_request(clouds, "rawPredict")
    assert sent.json["max_tokens"] == 4096 and "stream" not in sent.json
    assert not clouds.refused


def test_openai_clients_stream_from_claude_on_vertex(gw, clouds):
    stream = sdk(gw).chat.completions.create(
        model="claude-vertex", messages=HI, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "echo: hi there"
    assert chunks[-1].usage.completion_tokens == 7
    assert the_vertex_request(clouds, "streamRawPredict").json["stream"] is True


def test_anthropic_clients_pass_through_to_claude_on_vertex(gw, clouds):
    message = claude_sdk(gw).messages.create(model="claude-vertex", max_tokens=64, messages=HI)
    assert message.content[0].text == "echo: hi there"
    sent = the_vertex_request(clouds, "rawPredict")
    assert sent.json["max_tokens"] == 64 and sent.json["messages"] == HI


def test_anthropic_clients_stream_from_claude_on_vertex(gw, clouds):
    client = claude_sdk(gw)
    with client.messages.stream(model="claude-vertex", max_tokens=64, messages=HI) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "echo: hi there"
    assert final.usage.output_tokens == 7
    the_vertex_request(clouds, "streamRawPredict")


def test_the_beta_namespace_and_count_tokens_on_vertex(gw, clouds):
    client = claude_sdk(gw)
    message = client.beta.messages.create(
        model="claude-vertex", max_tokens=64, messages=HI, betas=["context-1m-2025-08-07"]
    )
    assert message.content[0].text == "echo: hi there"
    sent = the_vertex_request(clouds, "rawPredict")  # no ?beta=true: Vertex takes none
    assert sent.headers["anthropic-beta"] == "context-1m-2025-08-07"
    clouds.clear()
    counted = client.messages.count_tokens(model="claude-vertex", messages=HI)
    assert counted.input_tokens == 42
    (sent,) = clouds.to_upstreams()
    assert sent.path == f"{CLAUDE_PATH}count-tokens:rawPredict"
    assert sent.json["model"] == "claude-echo@20250514"  # count-tokens keeps it
    assert sent.json["anthropic_version"] == VERTEX_VERSION


def test_a_static_token_still_works(gw, clouds):
    completion = sdk(gw).chat.completions.create(model="claude-static", messages=HI)
    assert completion.choices[0].message.content == "echo: hi there"
    (sent,) = clouds.to_upstreams()
    assert sent.headers["authorization"] == f"Bearer {STATIC_TOKEN}"


# ================================================================ tokens that expire


def test_requests_keep_succeeding_as_tokens_expire(gw, clouds):
    """Tokens live 2 s; for 8 s a request goes every ~0.5 s, to each cloud in turn,
    whole and streamed: every one succeeds, on fresh tokens."""
    client = sdk(gw)
    issued = dict(clouds.issued)
    models = ["claude-vertex", "gemini-vertex", "gpt-entra"]
    answers = {"claude-vertex": "echo: hi there", "gemini-vertex": "echo: hi there"}
    answers["gpt-entra"] = "azure prod-4o: hi there"
    start = time.monotonic()
    count = 0
    while time.monotonic() - start < 8:
        model = models[count % 3]
        if count % 2:
            stream = client.chat.completions.create(model=model, messages=HI, stream=True)
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        else:
            completion = client.chat.completions.create(model=model, messages=HI)
            text = completion.choices[0].message.content
        assert text == answers[model], (model, clouds.refused)
        count += 1
        time.sleep(0.5)
    assert count >= 12
    assert not clouds.refused
    used = {r.headers["authorization"] for r in clouds.to_upstreams()}
    google = {t for t in used if t.startswith("Bearer google-token-")}
    azure = {t for t in used if t.startswith("Bearer azure-token-")}
    assert len(google) >= 3 and len(azure) >= 3  # several expiries, each cloud
    assert clouds.issued["google"] - issued.get("google", 0) >= 3
    assert clouds.issued["azure"] - issued.get("azure", 0) >= 3


# ================================================================ the token source


class Counting:
    """A blocking mint that counts its calls; its tokens live ``life`` seconds."""

    def __init__(self, life: float, delay: float = 0.0) -> None:
        self.life = life
        self.delay = delay
        self.calls = 0
        self.fail = False
        self.threads: set[str] = set()

    def __call__(self) -> Minted:
        self.calls += 1
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("token endpoint down")
        return Minted(f"token-{self.calls}", time.time() + self.life)


async def test_a_cached_token_costs_nothing_and_concurrent_callers_share_a_refresh():
    mint = Counting(life=3600, delay=0.2)
    source = RefreshingToken("p", mint, "Test")
    tokens = await asyncio.gather(*(source.token() for _ in range(20)))
    assert tokens == ["token-1"] * 20 and mint.calls == 1
    assert threading.current_thread().name not in mint.threads  # minted off the loop
    assert await source.token() == "token-1" and mint.calls == 1


async def test_a_token_near_its_expiry_is_replaced_in_the_background():
    mint = Counting(life=1.0, delay=0.1)
    source = RefreshingToken("p", mint, "Test")
    assert await source.token() == "token-1"
    await asyncio.sleep(0.6)  # past half its life: refreshed, the caller does not wait
    assert await source.token() == "token-1"
    await asyncio.sleep(0.2)
    assert await source.token() == "token-2"


async def test_a_failed_refresh_keeps_a_valid_token_else_is_retryable():
    mint = Counting(life=1.0)
    source = RefreshingToken("p", mint, "Test")
    assert await source.token() == "token-1"
    mint.fail = True
    await asyncio.sleep(0.95)  # in its last tenth: callers wait for the refresh, which fails
    assert await source.token() == "token-1"  # still valid: kept
    await asyncio.sleep(0.2)
    with pytest.raises(UpstreamUnavailableError, match="token endpoint down") as caught:
        await source.token()
    assert caught.value.status in (502, 503)
    mint.fail = False
    assert await source.token() == "token-4"


async def test_azure_identity_takes_any_token_credential():
    """azure-core's TokenCredential protocol: get_token(scope) -> (token, expires_on)."""
    scopes = []

    class Credential:
        def get_token(self, scope):
            scopes.append(scope)
            return SimpleNamespace(token=f"entra-{len(scopes)}", expires_on=int(time.time()) + 60)

    source = AzureIdentity("azure", Credential())
    assert await source.token() == "entra-1"
    assert await source.token() == "entra-1"
    assert scopes == ["https://cognitiveservices.azure.com/.default"]


def test_vertex_hosts_and_urls():
    assert vertex_host("us-east5") == "https://us-east5-aiplatform.googleapis.com"
    assert vertex_host("global") == "https://aiplatform.googleapis.com"
    assert vertex_host("eu") == "https://aiplatform.eu.rep.googleapis.com"
    with pytest.raises(ValueError, match="location"):
        vertex_host("us/east5")
    provider = AnthropicProvider("c", project="my proj", location="global", token="t")
    assert str(provider._vertex_url("claude-opus-4-1@20250805", True)) == (
        "https://aiplatform.googleapis.com/v1/projects/my%20proj/locations/global/"
        "publishers/anthropic/models/claude-opus-4-1@20250805:streamRawPredict"
    )
    assert str(provider._vertex_url("../x", False)).endswith("/models/..%2Fx:rawPredict")


# ================================================================ configuration


def check(tmp_path, table: str, code: str = "", env: dict[str, str] | None = None):
    """``python -m gateway --check`` on a config with one provider: its stderr lines."""
    path = tmp_path / "gateway.toml"
    path.write_text(f'[providers.p]\n{table}\n\n[models.m]\nprovider = "p"\n')
    code = f"import sys, runpy; {code}sys.argv = ['gateway', '--check']; "
    code += "runpy.run_module('gateway', run_name='__main__')"
    environ = {**os.environ, "GATEWAY_CONFIG": str(path), "PYTHONPATH": str(ROOT), **(env or {})}
    done = subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, timeout=60
    )
    return done.returncode, done.stderr.strip().splitlines(), str(path)


VERTEX_CLAUDE = 'type = "anthropic"\nproject = "proj"\nlocation = "us-east5"'


@pytest.mark.parametrize(
    ("table", "blocked", "needs"),
    [
        (VERTEX_CLAUDE, "google", 'credentials = "adc" needs the gcp extra'),
        ('type = "gemini"\nproject = "proj"', "google", 'credentials = "adc" needs the gcp extra'),
        (
            'type = "azure"\nresource = "r"\nentra = "managed_identity"',
            "azure",
            'entra = "managed_identity" needs the azure extra',
        ),
    ],
)
def test_without_the_extra_start_up_stops_with_one_line(tmp_path, table, blocked, needs):
    code, lines, path = check(tmp_path, table, f"sys.modules[{blocked!r}] = None; ")
    extra = "gcp" if blocked == "google" else "azure"
    assert code != 0
    assert lines == [
        f"gateway: GATEWAY_CONFIG ({path}): providers.p: {needs}: pip install 'gateway[{extra}]'"
    ]


def test_serving_without_the_extras_imports_neither(tmp_path):
    """A gateway with no cloud credentials configured never imports the cloud SDKs."""
    table = 'type = "anthropic"\napi_key = "k"'
    code = (
        "import atexit; atexit.register(lambda: print(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('google', 'azure', 'msal')), file=sys.stderr)); "
    )
    status, lines, _ = check(tmp_path, table, code)
    assert status == 0 and lines[-1] == "[]"


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ('type = "anthropic"\nproject = "p"', "needs a location"),
        (VERTEX_CLAUDE + '\napi_key = "k"', "not an api_key"),
        ('type = "anthropic"\nlocation = "us-east5"', "set project"),
        (VERTEX_CLAUDE + '\ncredentials = "static"', 'credentials must be "adc"'),
        (VERTEX_CLAUDE + '\naccess_token = "t"\ncredentials = "adc"', "not both"),
        ('type = "gemini"\naccess_token = "t"', "set project too"),
        ('type = "azure"\nresource = "r"\nentra = "secret"', "entra must be one of"),
        ('type = "azure"\nresource = "r"\nentra = "client_secret"', "needs tenant_id"),
        ('type = "azure"\nresource = "r"\nentra = "default"\napi_key = "k"', "one credential"),
        ('type = "azure"\nresource = "r"\ntenant_id = "t"', "go with entra"),
        ('type = "azure"\nresource = "r"\ndisable_instance_discovery = true', "go with entra"),
        (
            'type = "azure"\nresource = "r"\nentra = "managed_identity"\n'
            "disable_instance_discovery = true",
            'disable_instance_discovery goes with entra = "client_secret" or "default"',
        ),
    ],
)
def test_credential_settings_that_do_not_go_together(tmp_path, table, problem):
    code, lines, _ = check(tmp_path, table)
    assert code != 0 and len(lines) == 1 and problem in lines[0], lines


def test_entra_credentials_are_built_at_start_up_without_io(tmp_path):
    table = (
        'type = "azure"\nresource = "r"\nentra = "client_secret"\ntenant_id = "t"\n'
        'client_id = "c"\nclient_secret_env = "TEST_ENTRA_SECRET"'
    )
    code, lines, _ = check(tmp_path, table, env={"TEST_ENTRA_SECRET": "s"})
    assert code == 0, lines
    code, lines, _ = check(tmp_path, table)
    assert code != 0 and lines[0].endswith("environment variable TEST_ENTRA_SECRET is not set")
    empty = {"AZURE_TENANT_ID": "", "AZURE_CLIENT_ID": "", "AZURE_FEDERATED_TOKEN_FILE": ""}
    code, lines, _ = check(
        tmp_path, 'type = "azure"\nresource = "r"\nentra = "workload_identity"', env=empty
    )
    assert code != 0 and len(lines) == 1 and 'entra = "workload_identity": ' in lines[0], lines
