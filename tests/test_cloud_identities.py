"""Cloud credentials a gateway finds where it runs, end to end: Google's metadata server
(Application Default Credentials on GCE, GKE workload identity, Cloud Run) and a Microsoft
Entra ID client secret (azure-identity's ClientSecretCredential, named in the config or
found by DefaultAzureCredential in AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET).

Real gateway processes on both servers, the official openai SDK as client, against
tests/fake_clouds.py: Vertex AI and Azure OpenAI accept only unexpired tokens, and the
metadata server and Entra ID's token endpoint issue tokens that live two seconds.

google-auth finds the metadata server where GCE_METADATA_HOST (its requests) and
GCE_METADATA_IP (the ping that detects GCE) say, and nowhere else: no credentials file
(GOOGLE_APPLICATION_CREDENTIALS unset) and gcloud's config an empty folder
(CLOUDSDK_CONFIG), so ADC reaches its last resort, the metadata server. MSAL insists on
https: Entra ID is served with a certificate made for the test, trusted through
REQUESTS_CA_BUNDLE (azure-core's requests transport reads it); the provider's
``authority`` names it and ``disable_instance_discovery`` keeps MSAL from asking
login.microsoftonline.com about it. Every gateway runs with tests/loopback_only first on
its PYTHONPATH: any name lookup or connection beyond loopback is refused, and logged.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs

import openai
import pytest

from tests.conftest import CLIENT_KEY, SERVERS, start_gateway
from tests.fake_clouds import (
    ENTRA_CLIENT_ID,
    ENTRA_SECRET,
    ENTRA_TENANT,
    GOOGLE_SCOPE,
    METADATA,
    SERVICE_ACCOUNT,
    FakeClouds,
    certificate,
)
from tests.gateway_process import ROOT, GatewayProcess, raw_request

HI = [{"role": "user", "content": "hi there"}]
WRONG_SECRET = "wrong-entra-secret~Zq9.not-to-be-seen-either"
# What the developer's environment may say to the cloud SDKs: none of it reaches these
# gateways (what they need, they are given).
AMBIENT = ("GOOGLE_", "GCE_", "GCLOUD_", "CLOUDSDK_", "AZURE_", "IDENTITY_", "MSI_", "IMDS_")
CA_VARIABLES = ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "SSL_CERT_FILE", "SSL_CERT_DIR")
REFUSED = "loopback-only: refused"
SERVICE_ACCOUNT_PATH = f"instance/service-accounts/{SERVICE_ACCOUNT}/"
ROUNDS_SECONDS = 7.0  # past three of the tokens' two-second lives


def config(fake: FakeClouds) -> str:
    entra = f"""base_url = "{fake.url}"
authority = "{fake.tls_url}"
disable_instance_discovery = true"""
    return f"""
[providers.vertex-claude]
type = "anthropic"
base_url = "{fake.url}"
project = "proj"
location = "us-east5"

[providers.vertex-gemini]
type = "gemini"
base_url = "{fake.url}"
project = "proj"
location = "us-east5"
credentials = "adc"

[providers.azure-secret]
type = "azure"
{entra}
entra = "client_secret"
tenant_id = "{ENTRA_TENANT}"
client_id = "{ENTRA_CLIENT_ID}"
client_secret_env = "TEST_ENTRA_SECRET"

[providers.azure-default]
type = "azure"
{entra}
entra = "default"

[providers.azure-wrong-secret]
type = "azure"
{entra}
entra = "client_secret"
tenant_id = "{ENTRA_TENANT}"
client_id = "{ENTRA_CLIENT_ID}"
client_secret_env = "TEST_WRONG_SECRET"

[models.claude-vertex]
provider = "vertex-claude"
model = "claude-echo@20250514"

[models.gemini-vertex]
provider = "vertex-gemini"
model = "gemini-echo"

[models.gpt-secret]
provider = "azure-secret"
model = "prod-secret"

[models.gpt-default]
provider = "azure-default"
model = "prod-default"

[models.gpt-wrong]
provider = "azure-wrong-secret"
model = "prod-wrong"
"""


@dataclass
class World:
    fake: FakeClouds
    gateway: GatewayProcess
    gcloud: Path  # CLOUDSDK_CONFIG: empty


@pytest.fixture(scope="module", params=SERVERS)
def world(request, tmp_path_factory) -> Iterator[World]:
    """A fake cloud and a gateway in front of it, started together: the fake's records
    are this gateway's alone, from its start-up on."""
    directory = tmp_path_factory.mktemp("identities")
    tls, trusted = certificate(directory)
    fake = FakeClouds(tls=tls).start()
    path = directory / "gateway.toml"
    path.write_text(config(fake))
    gcloud = directory / "gcloud"
    gcloud.mkdir()
    metadata = f"127.0.0.1:{fake.port}"
    env = {
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "loopback_only"), str(ROOT)]),
        "GATEWAY_CONFIG": str(path),
        "GATEWAY_API_KEYS": CLIENT_KEY,
        "GATEWAY_UPSTREAM_TIMEOUT": "10",
        "GATEWAY_RETRIES": "0",  # a request on an expired token would fail, not be retried
        "GCE_METADATA_HOST": metadata,
        "GCE_METADATA_IP": metadata,
        "CLOUDSDK_CONFIG": str(gcloud),
        "REQUESTS_CA_BUNDLE": trusted,
        "TEST_ENTRA_SECRET": ENTRA_SECRET,
        "TEST_WRONG_SECRET": WRONG_SECRET,
        "AZURE_TENANT_ID": ENTRA_TENANT,  # DefaultAzureCredential's EnvironmentCredential
        "AZURE_CLIENT_ID": ENTRA_CLIENT_ID,
        "AZURE_CLIENT_SECRET": ENTRA_SECRET,
    }
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name in list(os.environ):
                if name.startswith(AMBIENT) or name in CA_VARIABLES:
                    patch.delenv(name)
            gateway = start_gateway(tmp_path_factory, request.param, env)
    except BaseException:
        fake.stop()
        raise
    yield World(fake, gateway, gcloud)
    gateway.stop()
    fake.stop()


@pytest.fixture
def gw(world: World) -> GatewayProcess:
    return world.gateway


@pytest.fixture
def fake(world: World) -> FakeClouds:
    return world.fake


def sdk(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)


def ask(client: openai.OpenAI, model: str, stream: bool) -> str:
    if stream:
        chunks = client.chat.completions.create(model=model, messages=HI, stream=True)
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return client.chat.completions.create(model=model, messages=HI).choices[0].message.content


def rounds(gw: GatewayProcess, fake: FakeClouds, answers: dict[str, str]) -> int:
    """Requests every ~0.4 s for ``ROUNDS_SECONDS``, to each model in turn, whole and
    streamed: every one must be answered (on a token the fake still accepts)."""
    client = sdk(gw)
    models = list(answers)
    count = 0
    start = time.monotonic()
    while time.monotonic() - start < ROUNDS_SECONDS:
        model = models[count % len(models)]
        stream = count % 4 >= 2  # each model both ways
        assert ask(client, model, stream) == answers[model], (model, stream, fake.refused)
        count += 1
        time.sleep(0.4)
    return count


def bearers(fake: FakeClouds, since: int, path_part: str) -> list[str]:
    """The bearer tokens of the upstream requests since ``since`` whose path has this."""
    return [
        r.headers["authorization"]
        for r in fake.requests[since:]
        if path_part in r.path and not r.path.startswith((METADATA, f"/{ENTRA_TENANT}/"))
    ]


def reached_nothing_else(gw: GatewayProcess) -> None:
    log = gw.log()
    assert REFUSED not in log, [line for line in log.splitlines() if REFUSED in line]


# ================================================================ Google's metadata server


def test_adc_finds_the_metadata_server_on_loopback_and_nothing_else(world, gw, fake):
    """google-auth pings the metadata server where GCE_METADATA_IP says, then asks it,
    at GCE_METADATA_HOST, for the project, the account and a cloud-platform token, each
    request saying ``Metadata-Flavor: Google``; no other credentials are looked for in a
    file, and no other host is resolved (metadata.google.internal included)."""
    client = sdk(gw)
    assert ask(client, "claude-vertex", False) == "echo: hi there"
    assert ask(client, "gemini-vertex", False) == "echo: hi there"
    asked = [r for r in fake.requests if r.path == "/" or r.path.startswith(METADATA)]
    assert asked and all(r.headers.get("metadata-flavor") == "Google" for r in asked)
    paths = {r.path.removeprefix(METADATA) for r in asked}
    account = "instance/service-accounts/default/"
    assert {"/", "project/project-id", account, f"{account}token"} <= paths
    # (once it knows the account's email, google-auth asks for the account by it)
    assert paths <= {"/", "project/project-id", account, f"{account}token", SERVICE_ACCOUNT_PATH}
    tokens = [r for r in asked if r.path == f"{METADATA}{account}token"]
    assert tokens and all(GOOGLE_SCOPE in parse_qs(r.query)["scopes"][0] for r in tokens)
    assert fake.issued.get("metadata", 0) >= 2  # one per Vertex provider, at least
    assert not [r for r in fake.requests if r.path.startswith("/google/")]  # no ADC file's
    sent = bearers(fake, 0, "/publishers/")
    assert len(sent) == 2 and all(t.startswith("Bearer google-token-") for t in sent)
    assert not fake.refused
    assert list(world.gcloud.iterdir()) == []
    reached_nothing_else(gw)


def test_vertex_keeps_serving_on_metadata_tokens_as_they_expire(gw, fake):
    """Metadata tokens live 2 s; for 7 s Claude and Gemini on Vertex get a request each
    ~0.8 s, whole and streamed: every one is answered, on fresh tokens from the metadata
    server (a token kept past its expiry would be refused)."""
    since = len(fake.requests)
    issued = fake.issued.get("metadata", 0)
    answers = {"claude-vertex": "echo: hi there", "gemini-vertex": "echo: hi there"}
    assert rounds(gw, fake, answers) >= 12
    assert not fake.refused
    for path_part in ("/publishers/anthropic/", "/publishers/google/"):
        used = set(bearers(fake, since, path_part))
        assert len(used) >= 3, (path_part, used)  # several expiries, each provider
    assert fake.issued["metadata"] - issued >= 6  # two providers, three tokens each at least
    reached_nothing_else(gw)


# ================================================================ Entra ID client secret


def test_entra_client_secret_keeps_serving_as_tokens_expire(gw, fake):
    """Entra ID tokens live 2 s; for 7 s Azure OpenAI gets requests through a client
    secret named in the config (ClientSecretCredential) and one found in AZURE_* variables
    (DefaultAzureCredential's EnvironmentCredential), whole and streamed: every one is
    answered on fresh tokens, each provider its own; the secret goes to the token
    endpoint, over TLS, and nowhere else."""
    since = len(fake.requests)
    issued = fake.issued.get("entra", 0)
    answers = {"gpt-secret": "azure prod-secret: hi there"}
    answers["gpt-default"] = "azure prod-default: hi there"
    assert rounds(gw, fake, answers) >= 12
    assert not fake.refused
    used = {d: set(bearers(fake, since, f"/deployments/prod-{d}/")) for d in ("secret", "default")}
    for tokens in used.values():
        assert len(tokens) >= 3 and all(t.startswith("Bearer azure-token-") for t in tokens)
    assert not used["secret"] & used["default"]
    assert fake.issued["entra"] - issued >= 6
    grants = [r for r in fake.requests[since:] if r.path.endswith("/oauth2/v2.0/token")]
    assert grants and all(ENTRA_SECRET.encode() in r.body for r in grants)
    upstream = [r for r in fake.to_upstreams() if not r.path.startswith(f"/{ENTRA_TENANT}/")]
    assert upstream and not [r for r in upstream if ENTRA_SECRET in f"{r.headers}{r.body!r}"]
    log = gw.log()
    assert ENTRA_SECRET not in log and WRONG_SECRET not in log
    reached_nothing_else(gw)


def test_a_refused_client_secret_is_a_502_that_shows_no_secret(gw, fake):
    """Entra ID refuses a wrong secret: the request fails as an unreachable upstream,
    saying why in Entra ID's words, and neither secret is in the answer or the log."""
    body = b'{"model": "gpt-wrong", "messages": [{"role": "user", "content": "hi"}]}'
    headers = {"authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"}
    answer = raw_request(gw.url, "POST", "/v1/chat/completions", body, headers, timeout=20)
    assert answer.status == 502, answer
    error = answer.json()["error"]
    assert error["code"] == "upstream_unavailable"
    assert "no valid Entra ID access token" in error["message"]
    assert "AADSTS7000215" in error["message"]
    whole = answer.body.decode() + str(answer.headers)
    assert WRONG_SECRET not in whole and ENTRA_SECRET not in whole
    assert not [r for r in fake.to_upstreams() if "/deployments/prod-wrong/" in r.path]
    log = gw.log()
    assert "provider azure-wrong-secret: refreshing its Entra ID access token failed" in log
    assert WRONG_SECRET not in log and ENTRA_SECRET not in log
    reached_nothing_else(gw)
