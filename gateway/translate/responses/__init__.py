"""OpenAI's Responses API (``/v1/responses``) ⇄ OpenAI chat completions (the hub), for
models whose providers speak chat completions only; one module per direction.

- ``request``: a Responses request (and the stored earlier conversation) as a chat
  request, ``responses_to_chat``, and the ``Facts`` the answer needs.
- ``items``: input items as chat messages, and as stored for ``input_items``.
- ``answer``: a whole ``chat.completion`` as a Response, ``chat_to_response``, and the
  Response object and output items the stream writes too.
- ``stream``: the chat stream as the Responses event stream, read by read,
  ``ResponsesStream``.
- ``usage``: usage in the Responses API's terms, written, and read from a Responses
  upstream's own answers and streams (passthrough).
- ``shapes``: the Structs a translation reads (the request, the hub's answers), item ids,
  and the ``encrypted_content`` that carries thinking blocks through a client.
"""
