"""Keys stay where they belong; headers of one hop stay on that hop."""

from __future__ import annotations

from tests.gateway_process import raw_request
from tests.upstream import UPSTREAM_KEY

CHAT = "/v1/chat/completions"
BODY = b'{"model": "gpt-x", "messages": [{"role": "user", "content": "hi"}]}'


def test_hop_by_hop_and_client_identity_headers_are_not_forwarded(gateway, upstream):
    sent_headers = {
        "content-type": "application/json",
        "connection": "keep-alive, x-hop-secret",
        "x-hop-secret": "1",
        "keep-alive": "timeout=5",
        "te": "trailers",
        "proxy-authorization": "Basic abc",
        "cookie": "session=abc",
        "authorization": "Bearer client-key-123",
        "openai-organization": "org-client",
        "accept-encoding": "br",
        "openai-beta": "assistants=v2",
        "x-custom": "kept",
        "x-request-id": "client-chosen-id",
    }
    response = raw_request(gateway.url, "POST", CHAT, BODY, sent_headers)
    assert response.status == 200
    received = {k.lower(): v for k, v in upstream.last().headers.items()}
    for dropped in (
        "connection",
        "x-hop-secret",
        "keep-alive",
        "te",
        "proxy-authorization",
        "cookie",
        "openai-organization",
    ):
        assert dropped not in received, dropped
    assert received["authorization"] == f"Bearer {UPSTREAM_KEY}"
    assert received["host"] == f"{upstream.host}:{upstream.port}"
    assert received["accept-encoding"] == "identity"
    assert received["openai-beta"] == "assistants=v2"
    assert received["x-custom"] == "kept"
    assert response.headers["x-request-id"] == "client-chosen-id"


def test_a_request_id_is_generated_when_the_client_sends_none_or_a_bad_one(gateway, upstream):
    ids = {
        raw_request(gateway.url, "POST", CHAT, BODY, {"content-type": "application/json"}).headers[
            "x-request-id"
        ]
        for _ in range(3)
    }
    assert len(ids) == 3
    odd = raw_request(
        gateway.url,
        "POST",
        CHAT,
        BODY,
        {"content-type": "application/json", "x-request-id": "x" * 500},
    )
    assert odd.headers["x-request-id"] != "x" * 500


def test_the_upstream_key_never_appears_in_responses_or_logs(gateway, upstream):
    responses = [
        raw_request(gateway.url, "POST", CHAT, BODY, {"content-type": "application/json"}),
        raw_request(
            gateway.url,
            "POST",
            CHAT,
            BODY.replace(b"gpt-x", b"status:401"),
            {"content-type": "application/json"},
        ),
        raw_request(
            gateway.url,
            "POST",
            CHAT,
            BODY.replace(b"gpt-x", b"drop"),
            {"content-type": "application/json"},
        ),
        raw_request(gateway.url, "GET", "/v1/models"),
    ]
    for response in responses:
        assert UPSTREAM_KEY not in response.body.decode(errors="replace")
        assert UPSTREAM_KEY not in str(response.headers)
    assert UPSTREAM_KEY not in gateway.log()


def test_upstream_cookies_and_hop_headers_do_not_reach_the_client(gateway, upstream):
    response = raw_request(gateway.url, "GET", "/v1/files")
    assert response.status == 200
    assert "set-cookie" not in response.headers
    assert response.headers["x-upstream"] == "passthrough"
    assert response.headers["content-type"] == "application/json; charset=utf-8"
