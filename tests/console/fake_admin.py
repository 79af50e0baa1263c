"""A stand-in for the gateway's admin API, so the console can be built and tested before
the real one lands: it serves gateway/console/ at /console/ with the gateway's
Content-Security-Policy, and answers the admin API's contract with fixed, plausible data
and an in-memory key list, behind a fixed admin key.

Run it by hand to work on the pages:

    .venv/bin/python -m tests.console.fake_admin --port 8765
    # then open http://127.0.0.1:8765/console/ and log in with ADMIN_KEY below

It prints ``listening on http://127.0.0.1:PORT`` once it accepts connections (port 0 picks
a free one), which is what tests/test_console_browser.py waits for.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import csv
import io
import math
import secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiohttp import web

ADMIN_KEY = "console-test-admin-key"
CONSOLE_DIR = Path(__file__).resolve().parents[2] / "gateway" / "console"
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'"
)
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}

# The overview's fixed numbers: the browser test checks the page shows OVERVIEW_1H_REQUESTS.
OVERVIEW_1H_REQUESTS = 1234
MODELS = ["gpt-4o-mini", "gpt-4o", "claude-sonnet-4", "gemini-2.0-flash"]
TEAMS = ["search", "support", "research"]
DEPLOYMENTS = ["openai-eu", "openai-us", "anthropic-main", "gemini-main"]
SPEND_COLUMNS = [
    "period",
    "group",
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cost",
]


def error(status: int, message: str, kind: str, param: str | None = None) -> web.Response:
    """An error in the gateway's OpenAI-style shape."""
    body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
    return web.json_response(body, status=status)


def bad_param(param: str, allowed: list[str]) -> web.Response:
    message = f"{param} must be one of {', '.join(allowed)}"
    return error(400, message, "invalid_request_error", param)


# --- the console's static files ------------------------------------------------------------


@web.middleware
async def security_headers(request: web.Request, handler: Any) -> web.StreamResponse:
    """Every answer carries the CSP the real gateway sends, so the pages are tested under it."""
    response = await handler(request)
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


async def console_file(request: web.Request) -> web.StreamResponse:
    name = request.match_info.get("path") or "index.html"
    file = (CONSOLE_DIR / name).resolve()
    # Only the console's own page files: no way out of the folder, no Python source.
    is_page_file = file.suffix in CONTENT_TYPES or file.parent.name == "vendor"
    if not file.is_relative_to(CONSOLE_DIR) or not file.is_file() or not is_page_file:
        raise web.HTTPNotFound()
    content_type = CONTENT_TYPES.get(file.suffix, "text/plain; charset=utf-8")
    return web.Response(body=file.read_bytes(), headers={"Content-Type": content_type})


async def console_redirect(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/console/")


# --- the admin API -------------------------------------------------------------------------


@web.middleware
async def admin_auth(request: web.Request, handler: Any) -> web.StreamResponse:
    authorized = request.headers.get("Authorization") == f"Bearer {ADMIN_KEY}"
    if request.path.startswith("/admin/") and not authorized:
        return error(401, "Invalid admin key.", "authentication_error")
    return await handler(request)


def overview_numbers(window: str) -> dict[str, Any]:
    scale = 1 if window == "1h" else 150  # the 7 days hold about 150 of the last hour's load
    seconds = 3600 if window == "1h" else 7 * 86400
    total = OVERVIEW_1H_REQUESTS * scale
    shares = [0.5, 0.25, 0.15, 0.1]
    counts = [round(total * share) for share in shares]
    counts[0] += total - sum(counts)  # the models add up to the total exactly
    by_model = []
    for model, requests in zip(MODELS, counts, strict=True):
        by_model.append(
            {
                "model": model,
                "requests": requests,
                "errors": round(requests * 0.01),
                "cost": round(requests * 0.0021 * (1 + MODELS.index(model)), 4),
                "prompt_tokens": requests * 620,
                "completion_tokens": requests * 180,
            }
        )
    requests = sum(m["requests"] for m in by_model)
    errors = sum(m["errors"] for m in by_model)
    return {
        "window": window,
        "requests": requests,
        "errors": errors,
        "error_rate": errors / requests,
        "requests_per_second": requests / seconds,
        "latency_ms": {"p50": 412.5, "p95": 1830.0},
        "ttfb_ms": {"p50": 231.0, "p95": 905.2},
        "prompt_tokens": sum(m["prompt_tokens"] for m in by_model),
        "completion_tokens": sum(m["completion_tokens"] for m in by_model),
        "cost": round(sum(m["cost"] for m in by_model), 4),
        "by_model": by_model,
    }


async def overview(request: web.Request) -> web.Response:
    window = request.query.get("window", "1h")
    if window not in ("1h", "7d"):
        return bad_param("window", ["1h", "7d"])
    return web.json_response(overview_numbers(window))


def parse_time(text: str | None, default: datetime) -> datetime:
    if not text:
        return default
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def spend_groups(request: web.Request, group_by: str) -> list[str]:
    if group_by == "key":
        return sorted(request.app["keys"])
    return {"team": TEAMS, "model": MODELS, "deployment": DEPLOYMENTS}[group_by]


def spend_rows(groups: list[str], start: datetime, end: datetime, step: timedelta) -> list[dict]:
    """Deterministic rows: a daily wave per group, so charts look like traffic."""
    rows = []
    period = start
    while period < end and len(rows) < 5000:
        for n, group in enumerate(groups):
            days = period.timestamp() / 86400
            wave = 1 + 0.35 * math.sin(days * 2 * math.pi + n) + 0.45 * math.sin(days * 0.9 + n)
            requests = round(40 * (n + 1) * wave * step.total_seconds() / 3600)
            rows.append(
                {
                    "period": period.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "group": group,
                    "requests": requests,
                    "errors": requests // 60,
                    "prompt_tokens": requests * 600,
                    "completion_tokens": requests * 150,
                    "cached_tokens": requests * 120,
                    "cost": round(requests * 0.0025 * (n + 1), 6),
                }
            )
        period += step
    return rows


async def spend(request: web.Request) -> web.Response:
    q = request.query
    group_by, granularity, fmt = (
        q.get("group_by", "key"),
        q.get("granularity", "day"),
        q.get("format", "json"),
    )
    if group_by not in ("key", "team", "model", "deployment"):
        return bad_param("group_by", ["key", "team", "model", "deployment"])
    if granularity not in ("hour", "day"):
        return bad_param("granularity", ["hour", "day"])
    if fmt not in ("json", "csv"):
        return bad_param("format", ["json", "csv"])
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    try:
        end = parse_time(q.get("to"), now)
        start = parse_time(q.get("from"), end - timedelta(days=7))
    except ValueError:
        return error(400, "from and to must be ISO 8601 times", "invalid_request_error", "from")
    step = timedelta(hours=1) if granularity == "hour" else timedelta(days=1)
    start = start.replace(minute=0, second=0, microsecond=0)
    if granularity == "day":
        start = start.replace(hour=0)
    rows = spend_rows(spend_groups(request, group_by), start, end, step)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=SPEND_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        disposition = f'attachment; filename="spend-{group_by}.csv"'
        return web.Response(
            text=out.getvalue(),
            content_type="text/csv",
            headers={"Content-Disposition": disposition},
        )
    body = {
        "group_by": group_by,
        "granularity": granularity,
        "from": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "to": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "rows": rows,
    }
    return web.json_response(body)


# --- keys ------------------------------------------------------------------------------------

KEY_FIELDS = ("owner", "team", "models", "rpm", "tpm", "max_parallel", "budget", "expires")


def new_key(key_id: str, **fields: Any) -> dict[str, Any]:
    key: dict[str, Any] = {
        "id": key_id,
        "owner": None,
        "team": None,
        "models": [],
        "rpm": None,
        "tpm": None,
        "max_parallel": None,
        "budget": None,
        "expires": None,
        "disabled": False,
        "revoked": False,
        "metadata": {},
        "spent": 0.0,
        "last_used": None,
    }
    key.update(fields)
    return key


def seed_keys() -> dict[str, dict[str, Any]]:
    recent = datetime.now(UTC) - timedelta(minutes=3)
    keys = [
        new_key(
            "search-prod",
            owner="alice@example.com",
            team="search",
            models=["gpt-4o-mini", "gpt-4o"],
            rpm=600,
            tpm=200000,
            max_parallel=20,
            budget={"amount": 500.0, "period": "monthly"},
            spent=312.47,
            last_used=recent.strftime("%Y-%m-%dT%H:%M:%SZ"),
        ),
        new_key(
            "support-bot",
            owner="bob@example.com",
            team="support",
            models=["claude-sonnet-4"],
            rpm=120,
            budget={"amount": 50.0, "period": "daily"},
            spent=47.9,
            last_used=(recent - timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        ),
        new_key("research-notebook", owner="carol@example.com", team="research", spent=3.2),
    ]
    return {key["id"]: key for key in keys}


def key_fields(body: dict[str, Any]) -> dict[str, Any] | web.Response:
    """The settable fields of a key from a request body, or the 400 that names a bad one."""
    fields = {name: body[name] for name in KEY_FIELDS if name in body}
    budget = fields.get("budget")
    if budget is not None and (
        not isinstance(budget, dict)
        or not isinstance(budget.get("amount"), int | float)
        or budget.get("period") not in ("daily", "monthly", "total")
    ):
        return error(400, "budget needs an amount and a period", "invalid_request_error", "budget")
    for name in ("rpm", "tpm", "max_parallel"):
        value = fields.get(name)
        if value is not None and (not isinstance(value, int) or value < 1):
            return error(400, f"{name} must be a positive integer", "invalid_request_error", name)
    if "models" in fields and not isinstance(fields["models"], list):
        return error(400, "models must be a list", "invalid_request_error", "models")
    return fields


async def json_body(request: web.Request) -> dict[str, Any] | None:
    try:
        body = await request.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


async def list_keys(request: web.Request) -> web.Response:
    return web.json_response({"data": list(request.app["keys"].values())})


async def get_key(request: web.Request) -> web.Response:
    key = request.app["keys"].get(request.match_info["id"])
    if key is None:
        return error(404, "No such key.", "not_found_error", "id")
    return web.json_response(key)


async def create_key(request: web.Request) -> web.Response:
    body = await json_body(request)
    if body is None:
        return error(400, "The body must be a JSON object.", "invalid_request_error")
    key_id = body.get("id")
    if not isinstance(key_id, str) or not key_id.strip():
        return error(400, "id is required", "invalid_request_error", "id")
    if key_id in request.app["keys"]:
        return error(409, f"A key with id {key_id!r} exists.", "invalid_request_error", "id")
    fields = key_fields(body)
    if isinstance(fields, web.Response):
        return fields
    key = new_key(key_id, **fields)
    request.app["keys"][key_id] = key
    return web.json_response({**key, "secret": "sk-gw-" + secrets.token_urlsafe(24)}, status=201)


async def update_key(request: web.Request) -> web.Response:
    key = request.app["keys"].get(request.match_info["id"])
    if key is None:
        return error(404, "No such key.", "not_found_error", "id")
    body = await json_body(request)
    if body is None:
        return error(400, "The body must be a JSON object.", "invalid_request_error")
    fields = key_fields(body)
    if isinstance(fields, web.Response):
        return fields
    key.update(fields)
    return web.json_response(key)


async def revoke_key(request: web.Request) -> web.Response:
    key = request.app["keys"].get(request.match_info["id"])
    if key is None:
        return error(404, "No such key.", "not_found_error", "id")
    key["revoked"] = True
    return web.json_response(key)


# --- deployments and requests ------------------------------------------------------------------


async def deployments(request: web.Request) -> web.Response:
    cooling_until = datetime.now(UTC) + timedelta(seconds=45)
    data = [
        ("gpt-4o-mini", "openai-eu", "openai", True, None, None, 412, 1),
        ("gpt-4o-mini", "openai-us", "openai", True, None, None, 388, 0),
        ("gpt-4o", "openai-eu", "openai", True, None, None, 97, 2),
        (
            "claude-sonnet-4",
            "anthropic-main",
            "anthropic",
            False,
            cooling_until.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "3 upstream errors in 60 s (last: 529 overloaded_error)",
            40,
            9,
        ),
        ("gemini-2.0-flash", "gemini-main", "gemini", True, None, None, 25, 0),
    ]
    fields = (
        "model",
        "deployment",
        "provider",
        "healthy",
        "cooling_until",
        "reason",
        "requests_1m",
        "errors_1m",
    )
    return web.json_response({"data": [dict(zip(fields, row, strict=True)) for row in data]})


OUTCOMES = [
    (200, "answered", None),
    (200, "streamed", None),
    (200, "answered", None),
    (429, "refused", "rate_limit_exceeded"),
    (200, "streamed", None),
    (502, "upstream_error", "upstream_unavailable"),
    (200, "answered", None),
    (499, "client_left", None),
]


def iso_millis(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def request_log(now: float) -> list[dict[str, Any]]:
    """120 recent requests, newest first, their times ISO with milliseconds as the API's."""
    keys = ["search-prod", "support-bot", "research-notebook"]
    records = []
    for n in range(120):
        status, outcome, error_code = OUTCOMES[n % len(OUTCOMES)]
        model = MODELS[(n // 3) % len(MODELS)]
        ok = status == 200
        usage = {"prompt_tokens": 500 + n * 7, "completion_tokens": 120 + n, "total_tokens": 0}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        records.append(
            {
                "request_id": f"req_{n:06d}",
                "time": iso_millis(now - n * 17.3),
                "method": "POST",
                "path": "/v1/chat/completions",
                "endpoint": "chat",
                "model": model,
                "key": keys[(n // 2) % len(keys)],
                "status": status,
                "outcome": outcome,
                "duration_ms": round(300 + (n * 37) % 1900, 1),
                "ttfb_ms": round(150 + (n * 23) % 700, 1) if ok else None,
                "usage": usage if ok else None,
                "cost": round(0.0004 * (n % 9 + 1), 6) if ok else None,
                "deployment": DEPLOYMENTS[MODELS.index(model)],
                "error_code": error_code,
            }
        )
    return records


async def requests_list(request: web.Request) -> web.Response:
    q = request.query
    try:
        limit = min(max(int(q.get("limit", "50")), 1), 500)
    except ValueError:
        return error(400, "limit must be an integer", "invalid_request_error", "limit")
    status = q.get("status")
    if status and not (status.isdigit() and 100 <= int(status) <= 599):
        return error(
            400, "status must be an HTTP status, 100 to 599", "invalid_request_error", "status"
        )
    records = request_log(time.time())
    if q.get("key"):
        records = [r for r in records if r["key"] == q["key"]]
    if q.get("model"):
        records = [r for r in records if r["model"] == q["model"]]
    if status:
        records = [r for r in records if r["status"] == int(status)]
    return web.json_response({"data": records[:limit]})


def make_app() -> web.Application:
    app = web.Application(middlewares=[security_headers, admin_auth])
    app["keys"] = seed_keys()
    app.router.add_get("/", console_redirect)
    app.router.add_get("/console", console_redirect)
    app.router.add_get("/console/", console_file)
    app.router.add_get("/console/{path:.+}", console_file)
    app.router.add_get("/admin/overview", overview)
    app.router.add_get("/admin/spend", spend)
    app.router.add_get("/admin/keys", list_keys)
    app.router.add_post("/admin/keys", create_key)
    app.router.add_get("/admin/keys/{id}", get_key)
    app.router.add_patch("/admin/keys/{id}", update_key)
    app.router.add_post("/admin/keys/{id}/revoke", revoke_key)
    app.router.add_get("/admin/deployments", deployments)
    app.router.add_get("/admin/requests", requests_list)
    return app


async def serve(port: int) -> None:
    runner = web.AppRunner(make_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound = runner.addresses[0][1]
    print(f"listening on http://127.0.0.1:{bound}", flush=True)
    try:
        await asyncio.Event().wait()  # until the process is stopped
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port))
