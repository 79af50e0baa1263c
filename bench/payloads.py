"""The request bodies every benchmark sends, so that all of them measure the same request.

Two APIs ask for it: chat completions, and OpenAI's Responses API (the same system prompt
as ``instructions``, the same question as ``input``, the same parameters). An ``Api`` says
where a request goes, its body, and how a whole stream of its answer ends.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

PATH = "/v1/chat/completions"
RESPONSES_PATH = "/v1/responses"

SYSTEM = "You are a helpful assistant that answers briefly and precisely. " * 4
QUESTION = (
    "I am planning a three-day trip to Lisbon in spring. Which neighbourhoods should I "
    "stay in, what are the must-see sights, and how do I get around cheaply? "
) * 3
TEMPERATURE = 0.7
MAX_TOKENS = 256


def chat_body(stream: bool, model: str = "bench-model") -> bytes:
    """A ~1 KB chat completion request: a system prompt, a question, two parameters."""
    body = {
        "model": model,
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": QUESTION},
        ],
        "temperature": TEMPERATURE,
        "max_tokens": MAX_TOKENS,
        "stream": stream,
    }
    return json.dumps(body).encode()


def responses_body(stream: bool, model: str = "bench-model") -> bytes:
    """The same request for the Responses API (~50 bytes shorter: no message wrappers)."""
    body = {
        "model": model,
        "instructions": SYSTEM,
        "input": QUESTION,
        "temperature": TEMPERATURE,
        "max_output_tokens": MAX_TOKENS,
        "stream": stream,
    }
    return json.dumps(body).encode()


@dataclass(frozen=True)
class Api:
    """Where a benchmark's request goes, its body, and how its whole stream ends."""

    path: str
    body: Callable[[bool, str], bytes]  # (stream, model) -> the request's bytes
    last_event: bytes  # how a whole stream's last SSE event begins


CHAT = Api(PATH, chat_body, b"data: [DONE]\n\n")
# A Responses stream has no [DONE]: it ends with its terminal event.
RESPONSES = Api(RESPONSES_PATH, responses_body, b"event: response.completed\n")


def last_event(data: bytes) -> bytes:
    """A stream's last SSE event (events end with a blank line)."""
    start = data.rfind(b"\n\n", 0, len(data) - 2)
    return data[start + 2 :] if start >= 0 else data
