"""The request bodies every benchmark sends, so that all of them measure the same request."""

from __future__ import annotations

import json

PATH = "/v1/chat/completions"

_SYSTEM = "You are a helpful assistant that answers briefly and precisely. " * 4
_QUESTION = (
    "I am planning a three-day trip to Lisbon in spring. Which neighbourhoods should I "
    "stay in, what are the must-see sights, and how do I get around cheaply? "
) * 3


def chat_body(stream: bool, model: str = "bench-model") -> bytes:
    """A ~1 KB chat completion request: a system prompt, a question, two parameters."""
    body = {
        "model": model,
        "messages": [
            {"role": "system", "content": _SYSTEM},
            {"role": "user", "content": _QUESTION},
        ],
        "temperature": 0.7,
        "max_tokens": 256,
        "stream": stream,
    }
    return json.dumps(body).encode()
