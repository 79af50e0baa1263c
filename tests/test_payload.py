"""JSONBody: lazy and lossless."""

from __future__ import annotations

import msgspec
import pytest

from gateway.wire.payload import JSONBody, JSONMessage
from gateway.wire.types import ChatCompletionRequest, ChatMessage

RAW = (
    b'{"model":"m","temperature":0.70,"messages":[{"role":"user","content":"h\\u00e9 \xe2\x9c\x93",'
    b'"x_part":null}],"x_vendor":{"deep":[1e-5,null]},"stream":false}'
)


def test_untouched_body_is_the_same_object():
    body = JSONBody(RAW)
    assert body["model"] == "m"
    assert body.get("missing", 5) == 5
    assert "x_vendor" in body
    assert body.to_bytes() is RAW
    assert not body.changed


def test_setting_one_field_keeps_every_other_byte():
    body = JSONBody(RAW)
    body["model"] = "other"
    out = body.to_bytes()
    assert out == RAW.replace(b'"model":"m"', b'"model":"other"')


def test_deleting_a_field():
    body = JSONBody(RAW)
    del body["stream"]
    assert body.to_bytes() == RAW.replace(b',"stream":false', b"")


def test_typed_view_is_decoded_once_and_edits_are_written_back_field_by_field():
    body = JSONBody(RAW)
    request = body.typed(ChatCompletionRequest)
    assert body.typed(ChatCompletionRequest) is request
    assert isinstance(request.messages[0], ChatMessage)
    assert request.messages[0].text() == "hé ✓"
    assert request.temperature == 0.7
    assert body.to_bytes() is RAW  # reading changes nothing

    request.max_tokens = 5
    out = body.to_bytes()
    # The new field is added; every field the view did not change keeps its exact bytes.
    assert out.startswith(RAW[:-1])
    assert out.endswith(b',"max_tokens":5}')

    request.temperature = msgspec.UNSET  # removing through the view removes the key
    assert b'"temperature"' not in body.to_bytes()
    assert b'"x_vendor":{"deep":[1e-5,null]}' in body.to_bytes()


def test_editing_a_nested_typed_value_keeps_unknown_nested_keys():
    body = JSONBody(RAW)
    body.typed(ChatCompletionRequest).messages[0].content = "changed"
    out = msgspec.json.decode(body.to_bytes())
    assert out["messages"] == [{"role": "user", "content": "changed", "x_part": None}]
    assert b"0.70" in body.to_bytes() and b"1e-5" in body.to_bytes()


def test_removing_a_nested_known_key_through_the_view():
    body = JSONBody(
        b'{"model":"m","messages":[{"role":"user","name":"bob","content":"x","x_v":1}]}'
    )
    body.typed(ChatCompletionRequest).messages[0].name = msgspec.UNSET
    assert msgspec.json.decode(body.to_bytes())["messages"] == [
        {"role": "user", "content": "x", "x_v": 1}
    ]


def test_typed_view_keeps_tracking_after_bytes_are_read():
    body = JSONBody(RAW)
    view = body.typed(ChatCompletionRequest)
    view.n = 2
    assert b'"n":2' in body.to_bytes()
    view.n = 3
    assert b'"n":3' in body.to_bytes()


def test_bad_json_raises_on_first_read():
    body = JSONBody(b"{nope")
    with pytest.raises(msgspec.DecodeError):
        body["x"]


def test_json_message_body_reflects_json_edits():
    message = JSONMessage(RAW, ChatCompletionRequest)
    assert message.body is RAW
    message.json["user"] = "u1"
    assert message.body.endswith(b',"user":"u1"}')
    assert message.typed().user == "u1"
    message.body = b'{"model":"x","messages":[]}'
    assert message.json["model"] == "x"


def test_json_message_without_type_has_no_default_view():
    with pytest.raises(TypeError):
        JSONMessage(b"{}").typed()
