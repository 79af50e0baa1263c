"""The README's hook example does what the README says."""

from __future__ import annotations

import json
import re
from pathlib import Path

from gateway import Gateway, MockProvider, Request, StreamingResponse

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def readme_block(marker: str) -> str:
    """The Python code block of the README that contains ``marker``."""
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    return next(block for block in blocks if marker in block)


def chat(model: str, key: str, stream: bool = False) -> Request:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    headers = {"authorization": f"Bearer {key}"}
    return Request("POST", "/v1/chat/completions", "", headers, json.dumps(body).encode())


async def test_the_team_policy_hook_example():
    namespace: dict[str, object] = {}
    exec(readme_block("class TeamPolicy"), namespace)
    policy = namespace["TeamPolicy"]()
    counted: list[int] = []

    class Observer:  # runs after the policy: sees what it left in ctx.metadata
        def on_chunk(self, ctx, event):
            if event.is_done:
                counted.append(ctx.metadata.get("chars", 0))

    async with Gateway(MockProvider(), hooks=[policy, Observer()]) as gateway:
        stranger = await gateway.handle(chat("gpt-4o-mini", "nobody"))
        refused = await gateway.handle(chat("gpt-4o", "key-support"))
        allowed = await gateway.handle(chat("gpt-4o-mini", "key-support"))
        streamed = await gateway.handle(chat("gpt-4o", "key-research", stream=True))
        assert isinstance(streamed, StreamingResponse)
        body = b"".join([chunk async for chunk in streamed.iterate()])
    assert stranger.status == 401
    assert refused.status == 403
    assert json.loads(refused.body)["error"]["message"] == "support may use gpt-4o-mini only"
    assert allowed.status == 200
    assert body.endswith(b"data: [DONE]\n\n")
    assert counted == [len("This is a mock response to: hi")]
