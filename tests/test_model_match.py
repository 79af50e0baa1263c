"""Names agents ask for: a model's ``match`` globs claim every other name that matches
(first in file order wins; exact names and aliases always win over patterns)."""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from gateway import Gateway, MockProvider, Request
from gateway.config.settings import ConfigError, Settings, build_gateway, build_registry
from gateway.core.errors import ModelNotFoundError
from gateway.routing import registry as registry_module
from gateway.routing.registry import ModelRegistry

AGENTS = Path(__file__).parent / "fixtures" / "agents"

CONFIG = """
[providers.m]
type = "mock"

[models.coder]
provider = "m"
model = "gpt-5.5"                        # what the upstream is asked for
match = ["claude-*", "gpt-5*-codex"]

[models.fast]
provider = "m"
match = ["claude-haiku-*", "*-mini"]     # claude-haiku-* is coder's (claude-*: first)

[models.claude-sonnet-5]                 # an exact name: wins over coder's claude-*
provider = "m"
model = "sonnet-upstream"
aliases = ["claude-opus-4-8"]            # an alias: wins too
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text)
    return path


def registry_from(tmp_path: Path, text: str = CONFIG) -> ModelRegistry:
    return build_registry(Settings.from_env({"GATEWAY_CONFIG": str(write(tmp_path, text))}))


@pytest.mark.parametrize(
    ("asked", "model"),
    [
        ("claude-opus-4-8", "claude-sonnet-5"),  # an alias beats a pattern
        ("claude-sonnet-5", "claude-sonnet-5"),  # the exact name beats a pattern
        ("claude-haiku-4-5-20251001", "coder"),  # the first pattern in the file wins
        ("claude-sonnet-4-5", "coder"),
        ("gpt-5-codex", "coder"),
        ("gpt-5.1-codex", "coder"),
        ("gpt-4o-mini", "fast"),
        ("fast", "fast"),
    ],
)
def test_a_name_resolves_to_its_model(tmp_path, asked, model):
    assert registry_from(tmp_path).resolve(asked).name == model


@pytest.mark.parametrize("asked", ["gpt-5.5", "Claude-opus-4-8", "CLAUDE-X", "gpt-5-codex-max", ""])
def test_other_names_are_still_404(tmp_path, asked):
    registry = registry_from(tmp_path)
    for _ in range(2):  # remembered as a miss, and still a miss
        with pytest.raises(ModelNotFoundError):
            registry.resolve(asked)


def test_patterns_are_not_models(tmp_path):
    registry = registry_from(tmp_path)
    assert registry.names() == ["coder", "fast", "claude-sonnet-5", "claude-opus-4-8"]
    assert registry.patterns() == {
        "claude-*": "coder",
        "gpt-5*-codex": "coder",
        "claude-haiku-*": "fast",
        "*-mini": "fast",
    }
    assert registry.aliases() == {"claude-opus-4-8": "claude-sonnet-5"}


def test_what_the_patterns_decide_is_remembered_within_a_bound(monkeypatch):
    monkeypatch.setattr(registry_module, "MAX_MATCHED_NAMES", 3)
    registry = ModelRegistry()
    route = registry.add("coder", MockProvider(), match=["claude-*"])
    for name in ("claude-a", "claude-b", "other"):
        with contextlib.suppress(ModelNotFoundError):
            registry.resolve(name)
    assert registry._matched == {"claude-a": route, "claude-b": route, "other": None}
    assert registry.resolve("claude-c") is route  # full: forgotten, then remembered
    assert registry._matched == {"claude-c": route}
    assert registry.resolve("coder") is route  # exact names never reach the patterns
    assert "coder" not in registry._matched


def test_adding_a_model_forgets_what_the_patterns_said():
    registry = ModelRegistry()
    registry.add("all", MockProvider(), match=["*"])
    assert registry.resolve("claude-x").name == "all"
    registry.add("claude-x", MockProvider())
    assert registry.resolve("claude-x").name == "claude-x"


@pytest.mark.parametrize("pattern", ["", 3, None])
def test_a_pattern_must_be_a_non_empty_string(pattern):
    with pytest.raises(ValueError, match=r"match\[1\]: a pattern must be a non-empty string"):
        ModelRegistry().add("m", MockProvider(), match=["ok-*", pattern])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("match", "message"),
    [
        ('["claude-*", ""]', r"models\.coder\.match\[1\]: a pattern must not be empty"),
        ("[3]", r"models\.coder\.match\[0\]: expected a string, got a whole number"),
        ('"claude-*"', r"models\.coder\.match: expected a list, got a string"),
    ],
)
def test_a_wrong_pattern_stops_start_up_naming_it(tmp_path, match, message):
    text = f'[providers.m]\ntype = "mock"\n[models.coder]\nprovider = "m"\nmatch = {match}\n'
    with pytest.raises(ConfigError, match=r"^GATEWAY_CONFIG \(.*\): " + message):
        registry_from(tmp_path, text)


# ======================================================================== end to end


def gateway_from(tmp_path: Path) -> Gateway:
    env = {"GATEWAY_CONFIG": str(write(tmp_path, CONFIG)), "GATEWAY_ACCESS_LOG": "off"}
    return build_gateway(Settings.from_env(env))


def chat(model: str) -> Request:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    return Request("POST", "/v1/chat/completions", "", {}, json.dumps(body).encode())


def answer_of(response: Any) -> dict[str, Any]:
    assert response.status == 200, response.body
    return json.loads(response.body)


async def test_the_upstream_gets_the_models_own_name(tmp_path):
    """The mock answers with the model it was asked for: the entry's rewrite, or its name."""
    async with gateway_from(tmp_path) as gateway:
        coder = await gateway.handle(chat("claude-opus-4-9"))
        assert answer_of(coder)["model"] == "gpt-5.5"
        assert coder.header("x-gateway-model") == "coder"
        fast = await gateway.handle(chat("o4-mini"))
        assert answer_of(fast)["model"] == "fast"  # no rewrite: the entry's own name
        alias = await gateway.handle(chat("claude-opus-4-8"))
        assert answer_of(alias)["model"] == "sonnet-upstream"
        unknown = await gateway.handle(chat("llama-3"))
        assert unknown.status == 404
        assert json.loads(unknown.body)["error"]["code"] == "model_not_found"
        listed = answer_of(await gateway.handle(Request("GET", "/v1/models", "", {}, b"")))
        assert [m["id"] for m in listed["data"]] == gateway.registry.names()


async def test_claude_codes_own_model_name_reaches_the_chosen_model(tmp_path):
    """Claude Code asks for claude-opus-4-8 on /v1/messages?beta=true; a pattern sends it
    to a model that is not Claude, translated there and back."""
    record = json.loads((AGENTS / "claude-first.json").read_text())
    body = {**record["body"], "model": "claude-opus-4-7", "stream": False}
    async with gateway_from(tmp_path) as gateway:
        response = await gateway.handle(
            Request("POST", "/v1/messages", "beta=true", {}, json.dumps(body).encode())
        )
    message = answer_of(response)
    assert message["type"] == "message" and message["model"] == "gpt-5.5"
    assert response.header("x-gateway-model") == "coder"


async def test_a_key_allowed_the_entry_may_use_the_names_its_patterns_take(tmp_path):
    secret = "sk-gw-coder-only"
    digest = hashlib.sha256(secret.encode()).hexdigest()
    config = CONFIG + f'\n[keys.coder-only]\nsecret_sha256 = "{digest}"\nmodels = ["coder"]\n'
    env = {"GATEWAY_CONFIG": str(write(tmp_path, config)), "GATEWAY_ACCESS_LOG": "off"}
    async with build_gateway(Settings.from_env(env)) as gateway:

        def asked(model: str) -> Request:
            request = chat(model)
            request.headers["authorization"] = f"Bearer {secret}"
            return request

        assert (await gateway.handle(asked("claude-opus-4-9"))).status == 200  # -> coder
        assert (await gateway.handle(asked("o4-mini"))).status == 403  # -> fast: not its
        assert (await gateway.handle(asked("claude-sonnet-5"))).status == 403
