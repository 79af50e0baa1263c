"""The admin API (``/admin/…``, JSON) and the console's files (``/console/…``).

Only when ``GATEWAY_ADMIN_KEY`` is set. Every ``/admin`` request needs
``Authorization: Bearer <admin key>``, compared as SHA-256 digests in constant time (the
time tells nothing of the input's length or how much of it was right); the client keys
never open it, and the admin key is no client key. Admin requests are served like
probes: no client authentication, not in the access log, the metrics or the ledger.

    GET  /admin/overview            counts of the ledger, latencies of recent requests
    GET  /admin/spend               the ledger, grouped and by hour or day; JSON or CSV
    GET  /admin/keys[/{id}]         keys, never their secret (nor its hash)
    POST /admin/keys                make one: its secret is in this answer only
    PATCH /admin/keys/{id}          change one
    POST /admin/keys/{id}/revoke    refuse it from the next request on
    GET  /admin/deployments         health and cooldowns, requests this minute
    GET  /admin/requests            the last requests of this worker set

Keys are changed by the rules of ``python -m gateway keys`` (``access/key_admin.py``), in
the same store; each change is logged in one line (what changed, never the secret).
"""

from __future__ import annotations

import calendar
import hashlib
import hmac
import logging
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import msgspec

from ..access import key_admin
from ..access.auth import presented_key
from ..access.key_admin import iso
from ..access.keys import Key, parse_expiry
from ..observability.ledger import grouped, percentiles, totals
from ..wire.http import Request, Response, error_response, json_response
from .errors import (
    AuthenticationError,
    ClientError,
    GatewayError,
    InternalError,
    InvalidRequestError,
    MethodNotAllowedError,
    NotFoundError,
)
from .outcome import Outcome

if TYPE_CHECKING:
    from ..observability.ledger import Ledger
    from .app import Gateway

logger = logging.getLogger("gateway")

CONSOLE_DIR = Path(__file__).resolve().parent.parent / "console"
CONSOLE_HEADERS = [
    (
        "content-security-policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'",
    ),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-cache"),
]
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".txt": "text/plain; charset=utf-8",
}
_FILE_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
WINDOWS = {"1h": 3600, "7d": 7 * 86400}
GROUPS = {"key": 0, "team": 1, "model": 2, "deployment": 3}
GRANULARITIES = {"hour": 3600, "day": 86400}
CSV_HEADER = "period,group,requests,errors,prompt_tokens,completion_tokens,cached_tokens,cost"
MAX_RECENT = 1000
_encode = msgspec.json.encode


class ConflictError(ClientError):
    status = 409
    code = "conflict"


class Admin:
    """The admin API of one gateway, read from its ledger, store and registry.

    ``workers`` is how many worker processes serve (keys made in memory exist in one).
    """

    def __init__(self, admin_key: str, gateway: Gateway, ledger: Ledger, workers: int = 1) -> None:
        self._digest = hashlib.sha256(admin_key.encode()).digest()
        self.gateway = gateway
        self.ledger = ledger
        self.workers = workers
        access = gateway.access
        self.access = access
        # The config file's keys, read-only here (those made in memory join them later).
        self.file_keys = {k.id: k for k in access.config_keys.values()} if access else {}

    def attach(self) -> None:
        """Serve /admin and /console on the gateway's own port."""
        self.gateway.add_probe_prefix("/admin/", self.handle)
        self.gateway.add_probe_prefix("/console", self.console)

    # ------------------------------------------------------------ dispatch

    async def handle(self, request: Request) -> Response:
        self._check(request)
        parts = request.path.split("/")[2:]  # "", "admin", ...
        method = request.method
        query = _query(request.query)
        if parts == ["overview"]:
            return self._only(method, "GET") or await self.overview(query)
        if parts == ["spend"]:
            return self._only(method, "GET") or await self.spend(query)
        if parts == ["deployments"]:
            return self._only(method, "GET") or self.deployments()
        if parts == ["requests"]:
            return self._only(method, "GET") or self.requests(query)
        if parts == ["keys"]:
            if method == "POST":
                return await self.create_key(request.body)
            return self._only(method, "GET", "GET, POST") or await self.list_keys()
        if len(parts) == 2 and parts[0] == "keys":
            if method == "PATCH":
                return await self.update_key(parts[1], request.body)
            return self._only(method, "GET", "GET, PATCH") or await self.show_key(parts[1])
        if len(parts) == 3 and parts[0] == "keys" and parts[2] == "revoke":
            return self._only(method, "POST") or await self.revoke_key(parts[1])
        raise NotFoundError(f"Unknown path: {request.path}", code="unknown_url")

    def _check(self, request: Request) -> None:
        """The admin key, or 401: digests of equal length compared in constant time, the
        same work whether a key came, and whether it was right."""
        presented = presented_key(request.headers) or ""
        digest = hashlib.sha256(presented.encode()).digest()
        if not hmac.compare_digest(digest, self._digest):
            raise AuthenticationError(
                "Incorrect admin key. Send GATEWAY_ADMIN_KEY as 'Authorization: Bearer <key>'."
            )

    @staticmethod
    def _only(method: str, allowed: str, allow: str | None = None) -> None:
        if method != allowed:
            raise MethodNotAllowedError(method, "this admin path", allow or allowed)

    # ------------------------------------------------------------ overview and spend

    async def overview(self, query: dict[str, str]) -> Response:
        _known(query, "window")
        window = query.get("window", "1h")
        if window not in WINDOWS:
            raise _bad("window", "expected 1h or 7d")
        now = time.time()
        since = now - WINDOWS[window]
        first, last = int(since // 3600), int(now // 3600)
        rows, _ = await self.ledger.read(first, last)
        total = totals(rows).get("", [0, 0, 0, 0, 0, 0.0])
        models = totals(rows, GROUPS["model"])
        recent = [o for o in self.ledger.recent() if o.time >= since]
        span = max(1.0, now - first * 3600)  # the hours counted began then
        body = {
            "window": window,
            "requests": int(total[0]),
            "errors": int(total[1]),
            "error_rate": round(total[1] / total[0], 6) if total[0] else 0.0,
            "requests_per_second": round(total[0] / span, 6),
            "latency_ms": percentiles([o.duration_ms for o in recent]),
            "ttfb_ms": percentiles([o.ttfb_ms for o in recent if o.ttfb_ms is not None]),
            "prompt_tokens": int(total[2]),
            "completion_tokens": int(total[3]),
            "cost": round(total[5], 9),
            "by_model": [
                {
                    "model": model,
                    "requests": int(v[0]),
                    "errors": int(v[1]),
                    "cost": round(v[5], 9),
                    "prompt_tokens": int(v[2]),
                    "completion_tokens": int(v[3]),
                }
                for model, v in sorted(models.items(), key=lambda item: (-item[1][0], item[0]))
            ],
        }
        return json_response(200, _encode(body))

    async def spend(self, query: dict[str, str]) -> Response:
        _known(query, "group_by", "from", "to", "granularity", "format")
        group_by = query.get("group_by", "key")
        if group_by not in GROUPS:
            raise _bad("group_by", "expected key, team, model or deployment")
        granularity = query.get("granularity", "hour")
        if granularity not in GRANULARITIES:
            raise _bad("granularity", "expected hour or day")
        form = query.get("format", "json")
        if form not in ("json", "csv"):
            raise _bad("format", "expected json or csv")
        now = time.time()
        end = _instant(query, "to", now)
        start = _instant(query, "from", end - 86400)
        if start > end:
            raise _bad("from", "is after 'to'")
        oldest = (int(now // 3600) - self.ledger.retention_hours) * 3600
        rows, _ = await self.ledger.read(int(max(start, oldest) // 3600), int(end // 3600))
        table = [
            {
                "period": iso(period),
                "group": group,
                "requests": int(v[0]),
                "errors": int(v[1]),
                "prompt_tokens": int(v[2]),
                "completion_tokens": int(v[3]),
                "cached_tokens": int(v[4]),
                "cost": round(v[5], 9),
            }
            for period, group, v in grouped(rows, GROUPS[group_by], GRANULARITIES[granularity])
        ]
        if form == "csv":
            return Response(200, [("content-type", "text/csv; charset=utf-8")], _csv(table))
        body = {
            "group_by": group_by,
            "granularity": granularity,
            "from": iso(start),
            "to": iso(end),
            "rows": table,
        }
        return json_response(200, _encode(body))

    # ------------------------------------------------------------ keys

    @property
    def store(self) -> Any:
        return self.access.store if self.access is not None else None

    @property
    def shared(self) -> bool:
        return self.access is not None and self.access.shared

    async def list_keys(self) -> Response:
        keys = await key_admin.every_key(self.store, self.file_keys)
        spent, used = await self._month()
        views = [await self._view(key, spent, used) for key in keys]
        return json_response(200, _encode({"data": views}))

    async def show_key(self, key_id: str) -> Response:
        key = await self._find(key_id)
        spent, used = await self._month()
        return json_response(200, _encode(await self._view(key, spent, used)))

    async def create_key(self, body: bytes) -> Response:
        fields = _object(body)
        key_id = fields.pop("id", None)
        if not isinstance(key_id, str) or not key_id:
            raise _bad("id", "expected the key's id, a string")
        _editable(fields)
        self._keys_can_be_made_here()
        try:
            key, secret = await key_admin.create(self.store, self.file_keys, key_id, fields)
        except key_admin.KeyExists as exc:
            raise ConflictError(str(exc), param="id", code="key_exists") from None
        except ValueError as exc:
            raise _invalid(exc) from None
        self._known_here(key)
        logger.info("admin: key %s created by admin (%s)", key.id, key_admin.summary(key))
        view = await self._view(key, {}, {})
        view["secret"] = secret  # this once, never again
        return json_response(201, _encode(view))

    async def update_key(self, key_id: str, body: bytes) -> Response:
        fields = _object(body)
        if "id" in fields:
            raise _bad("id", "a key's id cannot change")
        _editable(fields)
        key = await self._find(key_id)
        try:
            key = await key_admin.update(self.store, self.file_keys, key, fields)
        except key_admin.KeyInConfigFile as exc:
            raise ConflictError(str(exc), code="key_in_config_file") from None
        except ValueError as exc:
            raise _invalid(exc) from None
        self._known_here(key)
        changed = key_admin.summary(key, tuple(fields))
        logger.info("admin: key %s changed by admin (%s)", key.id, changed)
        spent, used = await self._month()
        return json_response(200, _encode(await self._view(key, spent, used)))

    async def revoke_key(self, key_id: str) -> Response:
        key = await self._find(key_id)
        try:
            key = await key_admin.revoke(self.store, self.file_keys, key)
        except key_admin.KeyInConfigFile as exc:
            raise ConflictError(str(exc), code="key_in_config_file") from None
        self._known_here(key)
        logger.info("admin: key %s revoked by admin", key.id)
        spent, used = await self._month()
        return json_response(200, _encode(await self._view(key, spent, used)))

    def _keys_can_be_made_here(self) -> None:
        """Refuse what would fool an operator: a key in one worker's memory of several,
        or one the gateway never checks (no virtual keys without Redis or the file)."""
        if self.shared:
            return
        if self.workers > 1 or self.access is None or not self.access.keys_enabled:
            raise ConflictError(
                "Keys made here would live in one worker's memory"
                + (" of several" if self.workers > 1 else ", and this gateway checks no keys")
                + ": set GATEWAY_REDIS_URL (or add keys to the config file).",
                code="keys_need_shared_store",
            )

    def _known_here(self, key: Key) -> None:
        """In memory, a key made or changed here authenticates in this worker at once."""
        if not self.shared and self.access is not None and key.id not in self.file_keys:
            self.access.config_keys[key.secret_sha256] = key

    async def _find(self, key_id: str) -> Key:
        key = await key_admin.find(self.store, self.file_keys, key_id)
        if key is None:
            raise NotFoundError(f"No key {key_id!r}.", param="id", code="key_not_found")
        return key

    async def _view(self, key: Key, month: dict[str, float], used: dict[str, float]) -> dict:
        """``spent``: the budget's period's (the store's, which the budget is checked
        against), else this month's in the ledger."""
        spent = await key_admin.spent(self.store, key)
        spent = spent if spent is not None else month.get(key.id, 0.0)
        return key_admin.view(key, spent, used.get(key.id))

    async def _month(self) -> tuple[dict[str, float], dict[str, float]]:
        """Each key's cost this month (UTC) and when it was last used, from the ledger."""
        now = time.gmtime()
        month = calendar.timegm((now.tm_year, now.tm_mon, 1, 0, 0, 0))
        rows, used = await self.ledger.read(int(month // 3600), int(time.time() // 3600))
        return {key: values[5] for key, values in totals(rows, GROUPS["key"]).items()}, used

    # ------------------------------------------------------------ deployments, requests

    def deployments(self) -> Response:
        gateway = self.gateway
        clock, now = gateway.timers.clock(), time.time()
        recent = [o for o in self.ledger.recent() if o.time >= now - 60]
        data = []
        for route in gateway.registry.routes():
            for d in route.deployments:
                mine = [o for o in recent if o.deployment == d.name]
                errors = [o for o in mine if o.status >= 500]
                cooling = d.cooling(clock)
                reason = None
                if cooling:
                    last = errors[0].error_code if errors else None
                    reason = "cooling down after failures" + (f" ({last})" if last else "")
                data.append(
                    {
                        "model": route.name or "*",
                        "deployment": d.name,
                        "provider": d.provider.name,
                        "healthy": not cooling,
                        "cooling_until": iso(now + d.cooling_until - clock) if cooling else None,
                        "reason": reason,
                        "requests_1m": len(mine),
                        "errors_1m": len(errors),
                    }
                )
        return json_response(200, _encode({"data": data}))

    def requests(self, query: dict[str, str]) -> Response:
        _known(query, "limit", "key", "model", "status")
        limit = _integer(query, "limit", 50, 1, MAX_RECENT)
        status = _integer(query, "status", 0, 100, 599) if query.get("status") else None
        key, model = query.get("key") or None, query.get("model") or None
        data = []
        for outcome in self.ledger.recent():
            if key is not None and outcome.key != key:
                continue
            if model is not None and outcome.model != model:
                continue
            if status is not None and outcome.status != status:
                continue
            data.append(_request(outcome))
            if len(data) >= limit:
                break
        return json_response(200, _encode({"data": data}))

    # ------------------------------------------------------------ the console

    async def console(self, request: Request) -> Response:
        """The console's static files, under a strict Content-Security-Policy."""
        if request.method not in ("GET", "HEAD"):
            raise MethodNotAllowedError(request.method, request.path, "GET")
        path = request.path
        if path == "/console":
            return Response(308, [("location", "/console/")], b"")
        if not path.startswith("/console/"):
            raise NotFoundError(f"Unknown path: {path}", code="unknown_url")
        name = path[len("/console/") :] or "index.html"
        parts = name.split("/")
        if not all(_FILE_PART.fullmatch(part) for part in parts):
            raise NotFoundError(f"No console file {name!r}.", code="unknown_url")
        file = CONSOLE_DIR.joinpath(*parts)
        try:
            body = file.read_bytes()
        except OSError:
            raise NotFoundError(f"No console file {name!r}.", code="unknown_url") from None
        kind = CONTENT_TYPES.get(file.suffix, "application/octet-stream")
        return Response(200, [("content-type", kind), *CONSOLE_HEADERS], body)


class AdminPort:
    """A hook: ``/admin`` and ``/console`` on ``GATEWAY_ADMIN_PORT`` instead of the main
    port, served by every worker (aiohttp's server; the workers share the port with
    ``SO_REUSEPORT``), so that the API reads and changes the worker's own state exactly
    as on the main port. (The metrics port is the supervisor's: it only reads files.)"""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.admin: Admin | None = None  # set once the gateway it serves is built
        self._runner: Any = None

    def __repr__(self) -> str:
        return f"<AdminPort {self.port}>"

    async def startup(self) -> None:
        from aiohttp import web

        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._serve)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port, reuse_port=True).start()

    async def shutdown(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _serve(self, request: Any) -> Any:
        from aiohttp import web
        from multidict import CIMultiDict

        incoming = Request(
            request.method,
            request.path,
            request.query_string,
            {name.lower(): value for name, value in request.headers.items()},
            await request.read(),
            request.remote,
        )
        try:
            response = await self._answer(incoming)
        except GatewayError as error:
            response = error_response(error)
        except Exception:
            logger.exception("an admin request failed")
            response = error_response(InternalError("The admin API failed on this request."))
        headers = CIMultiDict(response.headers)
        return web.Response(status=response.status, headers=headers, body=response.body)

    async def _answer(self, request: Request) -> Response:
        if self.admin is None:
            raise NotFoundError("The admin API is not ready.", code="unknown_url")
        if request.path.startswith("/admin/"):
            return await self.admin.handle(request)
        if request.path.startswith("/console"):
            return await self.admin.console(request)
        raise NotFoundError(f"Unknown path: {request.path}", code="unknown_url")


# ------------------------------------------------------------ helpers


def _query(raw: str) -> dict[str, str]:
    return dict(parse_qsl(raw or "", keep_blank_values=True))


def _bad(param: str, problem: str) -> InvalidRequestError:
    return InvalidRequestError(f"'{param}': {problem}.", param=param, code="invalid_parameter")


def _known(query: dict[str, str], *names: str) -> None:
    for name in query:
        if name not in names:
            raise _bad(name, f"unknown parameter; expected one of {', '.join(names)}")


def _integer(query: dict[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise _bad(name, f"expected a whole number from {low} to {high}")
    return int(raw)


def _instant(query: dict[str, str], name: str, default: float) -> float:
    """A time given as Unix seconds or ISO 8601 (UTC unless it says)."""
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        pass
    try:
        value = parse_expiry(raw)
    except ValueError:
        value = None
    if value is None:
        raise _bad(name, "expected an ISO 8601 time or Unix seconds")
    return value


def _csv(rows: list[dict[str, Any]]) -> bytes:
    lines = [CSV_HEADER]
    for row in rows:
        group = str(row["group"])
        if any(c in group for c in ',"\n\r') or group[:1] in ("=", "+", "-", "@"):
            group = '"' + ("'" + group if group[:1] in "=+-@" else group).replace('"', '""') + '"'
        values = (row["requests"], row["errors"], row["prompt_tokens"], row["completion_tokens"])
        numbers = ",".join(str(v) for v in (*values, row["cached_tokens"]))
        lines.append(f"{row['period']},{group},{numbers},{row['cost']:.9f}")
    return ("\r\n".join(lines) + "\r\n").encode()


def _object(body: bytes) -> dict[str, Any]:
    try:
        fields = msgspec.json.decode(body or b"{}")
    except msgspec.DecodeError:
        raise InvalidRequestError("The body is not valid JSON.", code="invalid_json") from None
    if not isinstance(fields, dict):
        raise InvalidRequestError("The body must be a JSON object.", code="invalid_json")
    return fields


def _editable(fields: dict[str, Any]) -> None:
    for name in fields:
        if name not in key_admin.EDITABLE:
            raise _bad(name, "not a field of a key")


def _invalid(exc: ValueError) -> InvalidRequestError:
    message = str(exc)
    match = re.search(r"key\.(\w+)", message) or re.match(r"(\w+) ", message)
    param = match.group(1) if match else None
    return InvalidRequestError(message, param=param, code="invalid_key")


def _request(outcome: Outcome) -> dict[str, Any]:
    """One recent request, as the admin API lists it: no body, no secret."""
    usage = outcome.usage
    return {
        "request_id": outcome.request_id,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(outcome.time))
        + f".{int(outcome.time % 1 * 1000):03d}Z",
        "method": outcome.method,
        "path": outcome.path,
        "endpoint": outcome.endpoint,
        "model": outcome.model,
        "key": outcome.key,
        "status": outcome.status,
        "outcome": outcome.outcome,
        "duration_ms": round(outcome.duration_ms, 3),
        "ttfb_ms": round(outcome.ttfb_ms, 3) if outcome.ttfb_ms is not None else None,
        "usage": msgspec.structs.asdict(usage) if usage is not None else None,
        "cost": outcome.cost,
        "deployment": outcome.deployment,
        "error_code": outcome.error_code,
    }
