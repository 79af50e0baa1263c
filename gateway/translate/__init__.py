"""Translation between the API a client speaks and the API its provider speaks.

Pure code: bytes and Structs in, bytes and Structs out, no I/O; a stream translator
takes each read as it comes and never holds the stream whole. OpenAI chat completions
is the hub: ``chat`` holds its shapes as the translators read and write them. Each other
API family is a subpackage with one module per direction (``request``, ``answer``,
``stream``, ``errors``): ``anthropic`` (both ways: to Claude, and the ``/v1/messages``
front door's ``front_*``) and ``gemini``. A new provider API is a new subpackage here
and a provider in ``gateway.providers`` that calls it.
"""
