"""A fake AWS Bedrock Runtime: one real aiohttp server on 127.0.0.1, in a thread of its own.

It checks every request's SigV4 signature as AWS does — recomputed with botocore from the
method, the path as sent, the signed headers and the body, with the secret of the access
key the request names — and answers 403 ``InvalidSignatureException`` (or
``UnrecognizedClientException`` for a key it does not know, ``ExpiredTokenException``
for one whose session has expired) otherwise. It knows the keys of ``KEYS``, never
expiring, and those a test adds to ``keys`` (with their ends in ``expiries``: a fake
credentials endpoint's, tests/test_bedrock_credentials.py). It answers
``POST /model/{modelId}/converse`` with a ConverseResponse and ``/converse-stream`` with
an event stream (binary framing, built with ``gateway.translate.bedrock.eventstream``),
scripted by the model id:

    *echo*            "echo: <last user text>" (the stream: three deltas); usage with cache
                      reads and writes
    *tools*           text, then two tool calls (the stream: inputs in pieces)
    *thinking*        reasoning (with a signature), then text
    *json*            a json_tool_call tool use: response_format's stand-in
    *split*           the tools answer, its stream's bytes written in random small pieces
    *stream-error*    a delta, then (0.1 s later) an exception message
                      (modelStreamErrorException)
    *corrupt*         the echo stream, its fourth message's payload altered after its CRC
                      was written (0.1 s after the first bytes)
    *throttle-first*  the stream of this model's first request is one exception message
                      (throttlingException) at once; then echo
    *throttle-N*      429 ThrottlingException for this model's first N requests, then echo
    *validation*      400 ValidationException
    *too-long*        400 ValidationException "Input is too long for requested model."
    *denied*          403 AccessDeniedException
    *missing*         404 ResourceNotFoundException
    *not-ready*       429 ModelNotReadyException
    *unavailable*     503 ServiceUnavailableException

``/invoke``, ``/invoke-with-response-stream`` and ``/count-tokens`` (Claude's Messages API,
Titan and Cohere embeddings, CountTokens) are answered by tests/fake_bedrock_invoke.py,
scripted the same way; the failures above apply to every operation.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import random
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from aiohttp import web
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from gateway.translate.bedrock.eventstream import encode_message
from tests import fake_bedrock_invoke as invoke
from tests.threaded_server import ThreadedServer

REGION = "us-east-1"
ACCESS_KEY = "AKIAFAKEBEDROCK00001"
SECRET_KEY = "fake/secret+key/for/bedrock/tests/0001"
PROFILE_ACCESS_KEY = "AKIAFAKEBEDROCK00002"
PROFILE_SECRET_KEY = "fake/secret+key/for/a/profile/0002"
TEMP_ACCESS_KEY = "ASIAFAKEBEDROCK00003"
TEMP_SECRET_KEY = "fake/secret+key/temporary/0003"
SESSION_TOKEN = "FwoGZXIvYXdzEFAKE//session+token=="
# access key -> (secret, session token that must come with it)
KEYS = {
    ACCESS_KEY: (SECRET_KEY, None),
    PROFILE_ACCESS_KEY: (PROFILE_SECRET_KEY, None),
    TEMP_ACCESS_KEY: (TEMP_SECRET_KEY, SESSION_TOKEN),
}
# Bedrock's usage in the echo answers: input 10, cache read 20, cache write 5, output 7.
USAGE = {
    "inputTokens": 10,
    "outputTokens": 7,
    "totalTokens": 42,
    "cacheReadInputTokens": 20,
    "cacheWriteInputTokens": 5,
}
TOOL_CALLS = [
    ("tooluse_A1", "get_weather", ['{"city": "Pa', 'ris", "unit', '": "c\\u00b0"}']),
    ("tooluse_B2", "get_time", ['{"zone":', ' "Europe/Paris"}']),
]
_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/"
    r"(?P<service>[^/]+)/aws4_request, SignedHeaders=(?P<signed>[^,]+), "
    r"Signature=(?P<sig>[0-9a-f]+)"
)


@dataclass
class Recorded:
    method: str
    path: str  # as sent (the model id percent-encoded)
    model: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)


def signature_problem(
    method: str,
    url: str,
    headers: dict[str, str],
    body: bytes,
    keys: Mapping[str, tuple[str, str | None]] = KEYS,
    expiries: Mapping[str, float] | None = None,
) -> str | None:
    """Why the request's SigV4 signature is not valid (as AWS would say), or ``None``:
    ``keys`` are the access keys known (their secrets and session tokens), ``expiries``
    when (``time.time()``) the sessions of those that expire end."""
    match = _AUTHORIZATION.fullmatch(headers.get("authorization", ""))
    if match is None:
        return "Authorization header requires a valid AWS4-HMAC-SHA256 signature."
    known = keys.get(match["key"])
    if known is None:
        return "UNKNOWN:The security token included in the request is invalid."
    secret, token = known
    if (match["region"], match["service"]) != (REGION, "bedrock"):
        return f"Credential should be scoped to a valid region and service ({match['region']})."
    amz_date = headers.get("x-amz-date", "")
    try:
        when = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "Signature requires a valid X-Amz-Date header."
    if abs(time.time() - when.timestamp()) > 300 or amz_date[:8] != match["date"]:
        return "Signature expired: the request's date is not within 5 minutes of now."
    if token is not None and headers.get("x-amz-security-token") != token:
        return "UNKNOWN:The security token included in the request is invalid."
    ends = (expiries or {}).get(match["key"])
    if ends is not None and time.time() >= ends:
        return "EXPIRED:The security token included in the request is expired"
    signed = match["signed"].split(";")
    if "host" not in signed or any(name not in headers for name in signed):
        return "The request signature we calculated does not match the signature you provided."
    request = AWSRequest(method=method, url=url, headers={n: headers[n] for n in signed}, data=body)
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(Credentials(match["key"], secret, token), "bedrock", REGION)
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if signer.signed_headers(signer.headers_to_sign(request)) != match["signed"]:
        return "The request signature we calculated does not match the signature you provided."
    if not hmac.compare_digest(expected, match["sig"]):
        return (
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method."
        )
    return None


def aws_error(status: int, kind: str, message: str) -> web.Response:
    headers = {
        "x-amzn-ErrorType": f"{kind}:http://internal.amazon.com/coral/com.amazon.bedrock/",
        "x-amzn-RequestId": str(uuid.uuid4()),
    }
    return web.json_response({"message": message}, status=status, headers=headers)


def event(kind: str, payload: dict[str, Any]) -> bytes:
    """One event message as Bedrock sends it (with its padding field ``p``)."""
    body = json.dumps({**payload, "p": "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"[: len(kind)]})
    headers = {":event-type": kind, ":content-type": "application/json", ":message-type": "event"}
    return encode_message(headers, body.encode())


def exception(kind: str, message: str) -> bytes:
    headers = {
        ":exception-type": kind,
        ":content-type": "application/json",
        ":message-type": "exception",
    }
    return encode_message(headers, json.dumps({"message": message}).encode())


def last_user_text(data: dict[str, Any]) -> str:
    for message in reversed(data.get("messages") or []):
        if message.get("role") == "user":
            texts = [b["text"] for b in message.get("content", []) if "text" in b]
            if texts:
                return " ".join(texts)
    return ""


def blocks(model: str, data: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """A scripted model's answer: its content blocks and stop reason."""
    if "tools" in model or "split" in model:
        content: list[dict[str, Any]] = [{"text": "Let me check."}]
        for ident, name, pieces in TOOL_CALLS:
            tool = {"toolUseId": ident, "name": name, "input": json.loads("".join(pieces))}
            content.append({"toolUse": tool})
        return content, "tool_use"
    if "json" in model:
        tool = {"toolUseId": "tooluse_j", "name": "json_tool_call", "input": {"name": "Ada"}}
        return [{"toolUse": tool}], "tool_use"
    if "thinking" in model:
        reasoning = {"reasoningText": {"text": "Two and two.", "signature": "EqQBsig"}}
        return [{"reasoningContent": reasoning}, {"text": "4"}], "end_turn"
    return [{"text": "echo: " + last_user_text(data)}], "end_turn"


def stream_events(model: str, data: dict[str, Any]) -> list[bytes]:
    """A scripted model's ConverseStream, message by message."""
    events = [event("messageStart", {"role": "assistant"})]
    content, stop = blocks(model, data)
    for index, block in enumerate(content):
        if "text" in block:
            text = block["text"]
            third = max(len(text) // 3, 1)
            for piece in (text[:third], text[third : 2 * third], text[2 * third :]):
                delta = {"contentBlockIndex": index, "delta": {"text": piece}}
                events.append(event("contentBlockDelta", delta))
                if "stream-error" in model:
                    message = "The model stream failed: the model is busy."
                    return [*events, exception("modelStreamErrorException", message)]
        elif "toolUse" in block:
            tool = block["toolUse"]
            start = {"toolUse": {"toolUseId": tool["toolUseId"], "name": tool["name"]}}
            events.append(event("contentBlockStart", {"contentBlockIndex": index, "start": start}))
            pieces = next((p for i, _, p in TOOL_CALLS if i == tool["toolUseId"]), None)
            for piece in pieces or [json.dumps(tool["input"])]:
                delta = {"contentBlockIndex": index, "delta": {"toolUse": {"input": piece}}}
                events.append(event("contentBlockDelta", delta))
        else:
            thought = block["reasoningContent"]["reasoningText"]
            for part in ({"text": thought["text"]}, {"signature": thought["signature"]}):
                delta = {"contentBlockIndex": index, "delta": {"reasoningContent": part}}
                events.append(event("contentBlockDelta", delta))
        events.append(event("contentBlockStop", {"contentBlockIndex": index}))
    events.append(event("messageStop", {"stopReason": stop}))
    events.append(event("metadata", {"usage": USAGE, "metrics": {"latencyMs": 12}}))
    return events


@dataclass
class FakeBedrock(ThreadedServer):
    host: str = "127.0.0.1"
    port: int = 0
    requests: list[Recorded] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    # access key -> (secret, session token): KEYS, and those a test adds
    keys: dict[str, tuple[str, str | None]] = field(default_factory=lambda: dict(KEYS))
    expiries: dict[str, float] = field(default_factory=dict)  # access key -> its session's end
    refused: list[str] = field(default_factory=list)  # why each refused request was

    def clear(self) -> None:
        self.requests.clear()
        self.counts.clear()
        self.refused.clear()

    def last(self) -> Recorded:
        return self.requests[-1]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        raw_path = request.raw_path
        match = re.fullmatch(
            r"/model/([^/]+)/(converse|converse-stream|invoke|invoke-with-response-stream"
            r"|count-tokens)",
            raw_path,
        )
        model = unquote(match[1]) if match else ""
        self.requests.append(Recorded(request.method, raw_path, model, headers, body))
        url = f"http://{headers.get('host', '')}{raw_path}"
        problem = signature_problem(request.method, url, headers, body, self.keys, self.expiries)
        if problem is not None:
            key = _AUTHORIZATION.fullmatch(headers.get("authorization", ""))
            self.refused.append(f"{key['key'] if key else None}: {problem}")
            if problem.startswith("UNKNOWN:"):
                return aws_error(403, "UnrecognizedClientException", problem[8:])
            if problem.startswith("EXPIRED:"):
                return aws_error(403, "ExpiredTokenException", problem[8:])
            return aws_error(403, "InvalidSignatureException", problem)
        if match is None or request.method != "POST":
            return aws_error(404, "UnknownOperationException", f"no operation {raw_path}")
        self.counts[model] = seen = self.counts.get(model, 0) + 1
        failure = self._failure(model, seen)
        if failure is not None:
            return failure
        data = json.loads(body)
        if match[2] == "converse-stream":
            return await self._stream(request, model, data)
        if match[2] in ("invoke", "invoke-with-response-stream", "count-tokens"):
            return await self._invoke(request, match[2], model, data)
        content, stop = blocks(model, data)
        answer = {
            "output": {"message": {"role": "assistant", "content": content}},
            "stopReason": stop,
            "usage": USAGE,
            "metrics": {"latencyMs": 12},
        }
        return web.json_response(answer, headers={"x-amzn-RequestId": "req-bedrock-1"})

    def _failure(self, model: str, seen: int) -> web.Response | None:
        throttled = re.search(r"throttle-(\d+)", model)
        if throttled and seen <= int(throttled[1]):
            return aws_error(429, "ThrottlingException", "Too many requests, please wait.")
        if "validation" in model:
            return aws_error(400, "ValidationException", "The provided model identifier is bad.")
        if "too-long" in model:
            return aws_error(400, "ValidationException", "Input is too long for requested model.")
        if "denied" in model:
            message = "You don't have access to the model with the specified model ID."
            return aws_error(403, "AccessDeniedException", message)
        if "missing" in model:
            return aws_error(404, "ResourceNotFoundException", "Model not found.")
        if "not-ready" in model:  # (Bedrock's status for it is 429; its type says more)
            return aws_error(429, "ModelNotReadyException", "The model is not ready yet.")
        if "unavailable" in model:
            return aws_error(503, "ServiceUnavailableException", "Bedrock is unavailable.")
        return None

    async def _invoke(
        self, request: web.Request, operation: str, model: str, data: dict[str, Any]
    ) -> web.StreamResponse:
        if operation == "count-tokens":
            answer = invoke.counted(data)
            if isinstance(answer, str):
                return aws_error(400, "ValidationException", answer)
            return web.json_response(answer, headers={"x-amzn-RequestId": "req-count"})
        if "embed" in model:
            embedded = invoke.embedding_answer(model, data)
            if isinstance(embedded, str):
                return aws_error(400, "ValidationException", embedded)
            return embedded
        reason = invoke.problem(model, data)
        if reason is not None:
            return aws_error(400, "ValidationException", reason)
        if operation == "invoke":
            answer = invoke.message(model, data)
            return web.json_response(answer, headers={"x-amzn-RequestId": "req-invoke-1"})
        frames = invoke.stream_frames(model, data)
        if "throttle-first" in model and self.counts[model] == 1:
            frames = [invoke.exception("throttlingException", "Too many tokens, please wait.")]
        return await self._write(request, model, frames)

    async def _stream(
        self, request: web.Request, model: str, data: dict[str, Any]
    ) -> web.StreamResponse:
        frames = stream_events(model, data)
        if "throttle-first" in model and self.counts[model] == 1:
            frames = [exception("throttlingException", "Too many tokens, please wait.")]
        return await self._write(request, model, frames)

    async def _write(
        self, request: web.Request, model: str, frames: list[bytes]
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "application/vnd.amazon.eventstream",
                "x-amzn-RequestId": "req-bedrock-stream-1",
            }
        )
        await response.prepare(request)
        stream = b"".join(frames)
        if "stream-error" in model:  # the exception comes after the first bytes went out
            await response.write(b"".join(frames[:-1]))
            await asyncio.sleep(0.1)
            await response.write(frames[-1])
        elif "corrupt" in model:
            broken = bytearray(frames[3])
            broken[-8] ^= 0x01  # a byte of the payload: the message CRC no longer matches
            await response.write(b"".join(frames[:3]))
            await asyncio.sleep(0.1)
            await response.write(bytes(broken) + b"".join(frames[4:]))
        elif "split" in model:
            randomness = random.Random(7)
            at = 0
            while at < len(stream):
                size = randomness.randint(1, 9)
                await response.write(stream[at : at + size])
                at += size
                await asyncio.sleep(0.0005)
        else:
            await response.write(stream)
        await response.write_eof()
        return response
