"""Observability: what the gateway tells its operators about the requests it served.

Each consumes the request's outcome record (``gateway.core.outcome``), closed once per
request: ``accesslog`` writes one JSON line, ``metrics`` counts for Prometheus,
``tracing`` sends OpenTelemetry spans; ``usage`` reads token usage from OpenAI answers
and streams, ``pricing`` turns it into cost; ``logs`` formats the gateway's own lines.
"""
