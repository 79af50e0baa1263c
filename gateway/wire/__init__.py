"""The wire: HTTP requests and responses as bytes, headers, bodies, SSE, endpoint fields.

Everything here is about the bytes that cross the gateway, read no further than routing
needs: a server adapter hands the core a ``Request`` (``http``), the core reads ``model``
and ``stream`` from the body (``payload``, ``endpoints``, ``multipart``, ``encoding``)
and passes streams through event by event (``sse``). No module here knows a provider.
"""
