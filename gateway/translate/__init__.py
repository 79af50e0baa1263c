"""Translation between OpenAI's API and the APIs of providers that do not speak it.

Pure code: bytes and Structs in, bytes and Structs out, no I/O. ``openai`` holds
OpenAI's chat shapes as the translators read and write them; ``anthropic`` and
``gemini`` translate to and from those providers. The providers
(``gateway.providers.anthropic``, ``.gemini``) and the ``/v1/messages`` front door
(``gateway.core.messages``) use them; OpenAI-compatible upstreams never do.
"""
