"""AWS credentials that expire while a ``type = "bedrock"`` provider serves, end to end:
the provider names no keys, so botocore's credential chain finds them, and here it finds
them at a container credentials endpoint (ECS task roles, EKS Pod Identity) — botocore's
ContainerProvider, told where by ``AWS_CONTAINER_CREDENTIALS_FULL_URI`` and sending
``AWS_CONTAINER_AUTHORIZATION_TOKEN`` as its ``Authorization`` header.

The fake endpoint (``FakeContainerCredentials``, on 127.0.0.1: botocore takes a plain
http FULL_URI only for a loopback address or ECS's and EKS's own hosts) issues a new key
pair and session token each time it is asked, with an ``Expiration`` seconds ahead, and
tells the fake Bedrock (tests/fake_bedrock.py) of it: Bedrock accepts exactly the keys
issued, each until its session ends, and answers 403 ``ExpiredTokenException`` after
that (``UnrecognizedClientException`` for any other key). A gateway that kept a key past
its end would fail.

botocore refreshes a key when less than its advisory window (15 minutes) is left before
its ``Expiration``, every caller waiting for it within the mandatory one (10 minutes):
keys that live two seconds are then refreshed on every use. Two ways of issuing keys
are tested: keys whose ``Expiration`` is their true end, two seconds ahead (refreshed on
every use, concurrent requests queued on botocore's lock), and keys whose ``Expiration``
is 15 minutes and two seconds ahead, which Bedrock accepts until a second after
botocore's advisory window opens — hours-long keys with time compressed: botocore must
keep each while it may, and replace it once that window opens.

Real gateway processes on both servers, the official openai SDK as client, Converse and
InvokeModel (Claude) both, whole and streamed. No other credential source is there to be
found first (no AWS_* variable but these, empty shared config and credentials files, no
boto config, no instance metadata), and every gateway runs with tests/loopback_only first
on its PYTHONPATH: any name lookup or connection beyond loopback is refused, and logged.
No secret key, session token or container authorization token is in a log or an answer.
"""

from __future__ import annotations

import base64
import concurrent.futures
import datetime
import math
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import openai
import pytest
from aiohttp import web
from botocore.credentials import RefreshableCredentials

from tests.conftest import CLIENT_KEY, SERVERS, start_gateway
from tests.fake_bedrock import REGION, FakeBedrock
from tests.gateway_process import ROOT, GatewayProcess
from tests.threaded_server import ThreadedServer

HI = [{"role": "user", "content": "hi there"}]
PATH = "/creds"
CONTAINER_TOKEN = "container-authorization-Kq8.not-to-be-seen"
ROLE_ARN = "arn:aws:iam::123456789012:role/gateway-task"
LIFE = 2.0  # seconds each key is accepted for (its session's life)
ROUNDS_SECONDS = 7.0  # past three of those lives
ADVISORY = RefreshableCredentials._advisory_refresh_timeout  # botocore's: 15 minutes
REFUSED = "loopback-only: refused"
# What the developer's environment may say to botocore: none of it reaches these gateways.
AMBIENT = ("AWS_", "BOTO_")
# public name -> Bedrock model id: Converse, and Claude through InvokeModel
MODELS = {"titan": "amazon.echo-v1:0", "claude": "anthropic.claude-echo-v1:0"}

pytestmark = pytest.mark.timeout(30)


@dataclass
class Issued:
    access_key: str
    secret_key: str
    token: str
    at: float  # time.time() when issued
    ends: float  # when Bedrock stops taking it


def _random(size: int) -> str:
    return base64.b64encode(secrets.token_bytes(size)).decode()


@dataclass
class FakeContainerCredentials(ThreadedServer):
    """``GET /creds`` with ``Authorization: <CONTAINER_TOKEN>``: a new key pair and
    session token each time, as ECS's and EKS's credential endpoints answer —
    ``{"AccessKeyId", "SecretAccessKey", "Token", "Expiration", "RoleArn"}``; the
    expiration in whole seconds, as AWS writes it. Each key is given to ``bedrock``,
    which takes it for ``life`` seconds; its ``Expiration`` says ``expiration_after``."""

    bedrock: FakeBedrock = field(default_factory=FakeBedrock)
    life: float = LIFE
    expiration_after: float = LIFE
    issued: list[Issued] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # why each refused request was
    down: bool = False  # answering 503, as an endpoint that fails
    handler_cancellation = False

    def short_lived(self) -> None:
        """Keys whose ``Expiration`` is their end, ``LIFE`` seconds ahead."""
        self.life = self.expiration_after = LIFE

    def compressed(self) -> None:
        """Keys whose ``Expiration`` is botocore's advisory window and ``LIFE`` seconds
        ahead, taken by Bedrock for a second more than ``LIFE``: once botocore should have
        begun to replace them."""
        self.life = LIFE + 1.0
        self.expiration_after = ADVISORY + LIFE

    async def _handle(self, request: web.Request) -> web.Response:
        if self.down:
            return web.json_response({"message": "Service Unavailable"}, status=503)
        if request.method != "GET" or request.path != PATH:
            self.refused.append(f"{request.method} {request.path}")
            return web.json_response({"message": "Not Found"}, status=404)
        given = request.headers.get("authorization")
        if given != CONTAINER_TOKEN:
            self.refused.append(f"authorization {given!r}")
            return web.json_response({"code": "AccessDenied", "message": "denied"}, status=401)
        now = time.time()
        expiration = math.ceil(now + self.expiration_after)
        issued = Issued(
            access_key=f"ASIAFAKECTNR{len(self.issued) + 1:08d}",
            secret_key=_random(30),
            token=_random(120),
            at=now,
            ends=expiration - self.expiration_after + self.life,
        )
        self.bedrock.expiries[issued.access_key] = issued.ends
        self.bedrock.keys[issued.access_key] = (issued.secret_key, issued.token)
        self.issued.append(issued)
        when = datetime.datetime.fromtimestamp(expiration, datetime.UTC)
        return web.json_response(
            {
                "AccessKeyId": issued.access_key,
                "SecretAccessKey": issued.secret_key,
                "Token": issued.token,
                "Expiration": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "RoleArn": ROLE_ARN,
            }
        )


def config(bedrock: FakeBedrock) -> str:
    lines = [
        "[providers.aws]",
        'type = "bedrock"',
        f'region = "{REGION}"',
        f'base_url = "{bedrock.url}"',
        "",
    ]
    for name, model in MODELS.items():
        lines += [f"[models.{name}]", 'provider = "aws"', f'model = "{model}"', ""]
    return "\n".join(lines)


@dataclass
class World:
    bedrock: FakeBedrock
    container: FakeContainerCredentials
    gateway: GatewayProcess


@pytest.fixture(scope="module", params=SERVERS)
def world(request, tmp_path_factory) -> Iterator[World]:
    """A fake Bedrock, a fake container credentials endpoint, and a gateway in front of
    them whose only credentials are those the endpoint issues."""
    directory = tmp_path_factory.mktemp("bedrock-credentials")
    bedrock = FakeBedrock(keys={}).start()  # only the keys the endpoint issues
    container = FakeContainerCredentials(bedrock=bedrock).start()
    path = directory / "gateway.toml"
    path.write_text(config(bedrock))
    for name in ("aws-config", "aws-credentials", "boto"):
        (directory / name).write_text("")
    env = {
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests" / "loopback_only"), str(ROOT)]),
        "GATEWAY_CONFIG": str(path),
        "GATEWAY_API_KEYS": CLIENT_KEY,
        "GATEWAY_UPSTREAM_TIMEOUT": "10",
        "GATEWAY_RETRIES": "0",  # a request on an expired key would fail, not be retried
        "GATEWAY_LOG_LEVEL": "debug",  # (the more the log says, the more a leak would show)
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": f"{container.url}{PATH}",
        "AWS_CONTAINER_AUTHORIZATION_TOKEN": CONTAINER_TOKEN,
        "AWS_CONFIG_FILE": str(directory / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(directory / "aws-credentials"),
        "BOTO_CONFIG": str(directory / "boto"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name in list(os.environ):
                if name.startswith(AMBIENT):
                    patch.delenv(name)
            gateway = start_gateway(tmp_path_factory, request.param, env)
    except BaseException:
        container.stop()
        bedrock.stop()
        raise
    yield World(bedrock, container, gateway)
    gateway.stop()
    container.stop()
    bedrock.stop()


@pytest.fixture
def gw(world: World) -> GatewayProcess:
    return world.gateway


def sdk(gw: GatewayProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gw.url}/v1", api_key=CLIENT_KEY, max_retries=0, timeout=20)


def ask(client: openai.OpenAI, model: str, stream: bool) -> tuple[str, str]:
    """The answer's text, and all the client saw of it (its headers, each chunk whole)."""
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=HI, stream=stream, max_tokens=32
    )
    seen = [str(raw.headers)]
    if stream:
        text = ""
        for chunk in raw.parse():
            seen.append(chunk.model_dump_json())
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
        return text, "\n".join(seen)
    completion = raw.parse()
    seen.append(completion.model_dump_json())
    return completion.choices[0].message.content or "", "\n".join(seen)


def rounds(world: World) -> tuple[int, list[str]]:
    """Requests every ~0.25 s for ``ROUNDS_SECONDS``, to each model in turn, whole and
    streamed: every one must be answered (on a key Bedrock still takes). Returns how
    many, and all the client saw."""
    client = sdk(world.gateway)
    models = list(MODELS)
    count = 0
    seen: list[str] = []
    start = time.monotonic()
    while time.monotonic() - start < ROUNDS_SECONDS:
        model = models[count % len(models)]
        stream = count % 4 >= 2  # each model both ways
        text, shown = ask(client, model, stream)
        assert text == "echo: hi there", (model, stream, world.bedrock.refused)
        seen.append(shown)
        count += 1
        time.sleep(0.25)
    return count, seen


def keys_used(world: World, since: int) -> list[str]:
    """The access key of each request Bedrock got since ``since``, in order."""
    used = []
    for request in world.bedrock.requests[since:]:
        credential = request.headers["authorization"].split("Credential=")[1]
        used.append(credential.split("/")[0])
    return used


def shows_no_secret(world: World, seen: list[str]) -> None:
    """No secret key, session token or container token in the answers or the log; and
    nothing beyond loopback was looked up or reached."""
    hidden = [CONTAINER_TOKEN]
    for issued in world.container.issued:
        hidden += [issued.secret_key, issued.token]
    log = world.gateway.log()
    answers = "\n".join(seen)
    assert not [h for h in hidden if h in log]
    assert not [h for h in hidden if h in answers]
    assert REFUSED not in log, [line for line in log.splitlines() if REFUSED in line]


def test_short_lived_keys_are_refreshed_as_they_expire(world, gw):
    """Keys whose ``Expiration`` is two seconds ahead: for seven seconds, requests every
    ~0.25 s, Converse and InvokeModel, whole and streamed, are all answered, on keys
    Bedrock still takes — botocore asks the endpoint again before each use."""
    world.container.short_lived()
    since, issued = len(world.bedrock.requests), len(world.container.issued)
    count, seen = rounds(world)
    assert count >= 12
    assert not world.bedrock.refused
    assert not world.container.refused  # (the authorization token was sent every time)
    used = keys_used(world, since)
    assert len(used) == count
    assert len(set(used)) >= 3
    assert len(world.container.issued) - issued >= 3
    assert "(bedrock, us-east-1, the AWS credential chain)" in gw.log()
    shows_no_secret(world, seen)


def test_a_failed_refresh_is_a_502_then_serving_resumes(world: World):
    """Keys expired and the endpoint failing: a retryable 502 naming the cause (not the
    gateway's own 500), and serving again once the endpoint answers. (Before the test of
    keys that say they last: botocore keeps those when a refresh fails.)"""
    gw = world.gateway
    world.container.short_lived()
    client = sdk(gw)
    assert client.chat.completions.create(model="titan", messages=HI).choices[0].message.content
    world.container.down = True
    try:
        time.sleep(LIFE + 1)
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="titan", messages=HI)
        assert caught.value.status_code == 502, caught.value
        assert caught.value.body["code"] == "upstream_unavailable"
        assert "no valid AWS credentials" in caught.value.message
    finally:
        world.container.down = False
    text = client.chat.completions.create(model="titan", messages=HI).choices[0].message.content
    assert text == "echo: hi there"
    assert "failed inside the gateway" not in gw.log()
    shows_no_secret(world, [str(caught.value.body)])


def test_concurrent_requests_as_short_lived_keys_expire(world, gw):
    """Three bursts of twelve concurrent requests, each burst after the keys held have
    expired: every request is answered — those that wait on botocore's refresh lock
    included — each on a key Bedrock still takes."""
    world.container.short_lived()
    since, issued = len(world.bedrock.requests), len(world.container.issued)
    client = sdk(gw)
    jobs = [(model, stream) for model in MODELS for stream in (False, True)] * 3
    seen: list[str] = []
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        for _ in range(3):
            time.sleep(LIFE + 0.5)  # whatever key is held has expired
            started = time.monotonic()
            futures = [pool.submit(ask, client, model, stream) for model, stream in jobs]
            answers = [f.result(timeout=20) for f in futures]
            assert time.monotonic() - started < 10
            assert [text for text, _ in answers] == ["echo: hi there"] * len(jobs)
            seen += [shown for _, shown in answers]
    assert not world.bedrock.refused
    assert not world.container.refused
    used = keys_used(world, since)
    assert len(used) == 3 * len(jobs)
    assert len(set(used)) >= 3
    assert len(world.container.issued) - issued >= 3
    shows_no_secret(world, seen)


def test_keys_are_kept_until_botocores_window_then_replaced(world, gw):
    """Keys whose ``Expiration`` is 15 minutes and two seconds ahead, which Bedrock takes
    for three seconds (hours-long keys, time compressed): for seven seconds every request
    is answered; each key serves several requests, then is replaced once botocore's
    advisory window opens, before Bedrock stops taking it."""
    world.container.compressed()
    since, issued = len(world.bedrock.requests), len(world.container.issued)
    count, seen = rounds(world)
    assert count >= 12
    assert not world.bedrock.refused
    assert not world.container.refused
    used = keys_used(world, since)
    assert len(used) == count
    fresh = set(used) - {i.access_key for i in world.container.issued[:issued]}
    assert len(fresh) >= 3  # rotated, the windows of three keys at least…
    asked = len(world.container.issued) - issued
    assert asked <= count // 2  # …and each kept for a few requests: not asked every time
    for key in [k for k in dict.fromkeys(used) if k in fresh][:-1]:  # (the last: cut short)
        assert used.count(key) >= 2, (key, used)
    shows_no_secret(world, seen)
