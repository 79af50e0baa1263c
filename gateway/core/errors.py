"""The gateway's own errors, each rendered as OpenAI error JSON with its HTTP status.

The family mirrors where in a request's life the error happens (as httpx does):
``ClientError`` for what the caller sent, ``UpstreamError`` for what the provider did.
"""

from __future__ import annotations

import math

import msgspec


class ErrorBody(msgspec.Struct, omit_defaults=False):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorEnvelope(msgspec.Struct):
    error: ErrorBody


_encode = msgspec.json.Encoder().encode


class GatewayError(Exception):
    """Base of every error the gateway answers itself."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        self.headers = headers or []

    def body(self) -> bytes:
        return _encode(ErrorEnvelope(ErrorBody(self.message, self.type, self.param, self.code)))

    def loggable(self) -> str:
        """What logs and traces may say of this error: the gateway's own words."""
        return self.message


class ClientError(GatewayError):
    """The request cannot be served as sent."""

    status = 400
    type = "invalid_request_error"


class InvalidRequestError(ClientError):
    status = 400


class AuthenticationError(ClientError):
    status = 401
    type = "authentication_error"
    code = "invalid_api_key"


class PermissionDeniedError(ClientError):
    status = 403
    type = "permission_error"


class NotFoundError(ClientError):
    status = 404
    code = "not_found"


class ModelNotFoundError(NotFoundError):
    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(f"The model `{model}` does not exist.", param="model")


class RequestTooLargeError(ClientError):
    status = 413
    code = "request_too_large"


class IncompleteBodyError(InvalidRequestError):
    """The body ended before its ``Content-Length``, or its chunked framing is broken."""

    code = "incomplete_body"

    def __init__(
        self, message: str = "The request body is incomplete: it ended before its length."
    ) -> None:
        super().__init__(message)


class MethodNotAllowedError(ClientError):
    status = 405
    code = "method_not_allowed"

    def __init__(self, method: str, path: str, allowed: str = "POST") -> None:
        super().__init__(
            f"{method} is not allowed on {path}; use {allowed}.", headers=[("allow", allowed)]
        )


class UnsupportedMediaTypeError(ClientError):
    status = 415
    code = "unsupported_content_encoding"


class HeadersTooLargeError(ClientError):
    status = 431
    code = "request_header_fields_too_large"


class RateLimitError(ClientError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        wait = None if retry_after is None else max(1, math.ceil(retry_after))
        headers = [] if wait is None else [("retry-after", str(wait))]
        super().__init__(message, headers=headers)
        self.retry_after = retry_after


class UpstreamError(GatewayError):
    """The provider could not be reached or did not answer properly."""

    status = 502
    type = "upstream_error"
    code = "bad_gateway"


class UpstreamUnavailableError(UpstreamError):
    code = "upstream_unavailable"


class UpstreamProtocolError(UpstreamError):
    code = "upstream_invalid_response"


class UpstreamTimeoutError(UpstreamError):
    status = 504
    type = "timeout_error"
    code = "upstream_timeout"


class UpstreamStatusError(UpstreamError):
    """The provider answered with an error status: the client gets that status and the
    error in OpenAI's shape (the provider's ``error()`` translates it).

    ``too_long`` says the request did not fit the model's context (OpenAI's
    ``context_length_exceeded``): the gateway then tries the model's context fallbacks.
    """

    def __init__(
        self,
        status: int,
        headers: list[tuple[str, str]],
        content: bytes,
        *,
        too_long: bool = False,
        message: str | None = None,
    ) -> None:
        super().__init__(message or f"upstream answered {status}", headers=headers)
        self.status = status
        self.content = content
        self.too_long = too_long

    def body(self) -> bytes:
        return self.content

    def loggable(self) -> str:
        # The upstream's own words stay out of logs and traces: they may quote the request.
        return f"upstream answered {self.status}"


class ShuttingDownError(GatewayError):
    """The worker is stopping and its time to finish in-flight requests has run out."""

    status = 503
    type = "server_error"
    code = "shutting_down"


class InternalError(GatewayError):
    """A bug or a failing hook: the client gets a 500, the worker carries on."""

    status = 500
    type = "server_error"
    code = "internal_error"
