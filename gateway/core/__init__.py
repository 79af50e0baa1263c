"""The request core: from a ``Request`` to a ``Response``, whatever the server.

``app`` is the gateway (its lifecycle, routing a path to a handler); ``pipeline`` handles
the model endpoints (auth hooks, parse, resolve, request hooks, forward, answer);
``forwarding`` gets an answer from upstream (retries, fallbacks, deadlines); ``relay``
carries a stream to its end, and ``chunks`` runs stream-chunk hooks on it; ``messages``
is the Anthropic front door. Every request has a ``context`` and one ``outcome`` record,
closed exactly once; ``hooks`` are the events user code takes part in, ``errors`` the
gateway's own errors as OpenAI error JSON. A new hook event is named in ``hooks`` and
fired from the pipeline.
"""
