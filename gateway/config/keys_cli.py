"""``python -m gateway keys create|list|show|revoke``: virtual keys, against the store.

With ``GATEWAY_REDIS_URL`` the keys live in Redis: made and revoked here, used by every
running gateway at once (no restart). Without it, ``create`` prints the secret and the
``[keys.<id>]`` table to paste into the config file, and ``list``/``show`` read that file.
A secret is printed once, when made, and never again: only its SHA-256 is kept.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

from ..access import key_admin
from ..access.keys import Key
from ..access.stores import Store, StoreUnavailable
from .settings import ConfigError, Settings, build_keys, build_store, load_file


def add_parser(subparsers: Any) -> None:
    keys = subparsers.add_parser(
        "keys",
        help="create, list, show or revoke virtual keys",
        description="Virtual keys, in Redis (GATEWAY_REDIS_URL) or the config file "
        "(GATEWAY_CONFIG). Flags such as --config go before 'keys'.",
    )
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="make a key; its secret is printed once")
    create.add_argument("id", help="the key's name, e.g. team-research")
    create.add_argument("--owner", help="who holds it (an e-mail, a service)")
    create.add_argument("--team", help="its team (the cache may be shared per team)")
    create.add_argument("--models", help="comma-separated model names or globs (default: all)")
    create.add_argument("--rpm", type=int, help="requests per minute")
    create.add_argument("--tpm", type=int, help="tokens per minute")
    create.add_argument("--max-parallel", type=int, help="requests at once")
    create.add_argument("--budget", type=float, help="US dollars per period")
    create.add_argument(
        "--period",
        choices=("daily", "monthly", "total"),
        default="monthly",
        help="the budget's period (UTC; default monthly)",
    )
    create.add_argument("--expires", help="ISO 8601 date or time (UTC unless it says)")
    actions.add_parser("list", help="every key: ids, limits and spend, never secrets")
    show = actions.add_parser("show", help="one key, with its spend this period")
    show.add_argument("id")
    revoke = actions.add_parser("revoke", help="refuse a key from the next request on")
    revoke.add_argument("id")


def run(args: argparse.Namespace, settings: Settings) -> int:
    try:
        return asyncio.run(_run(args, settings))
    except (ConfigError, ValueError) as exc:
        print(f"gateway keys: {exc}", file=sys.stderr)
        return 1
    except StoreUnavailable as exc:
        print(f"gateway keys: the store is unavailable: {exc}", file=sys.stderr)
        return 1


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    config_keys = {key.id: key for key in build_keys(settings, load_file(settings))}
    store = build_store(settings)
    if store is not None:
        store.timeout = max(store.timeout, 2.0)  # type: ignore[attr-defined]  # a person waits
        await store.start(listen=False)  # type: ignore[call-arg]
    try:
        if args.action == "create":
            return await _create(args, store, config_keys)
        if args.action == "list":
            return await _list(store, config_keys)
        key = await key_admin.find(store, config_keys, args.id)
        if key is None:
            raise ValueError(f"no key {args.id!r}")
        if args.action == "show":
            print(key_admin.describe(key, await key_admin.spent(store, key)))
            return 0
        await key_admin.revoke(store, config_keys, key)
        print(f"revoked {args.id}: refused from the next request on")
        return 0
    finally:
        if store is not None:
            await store.stop()


async def _create(args: argparse.Namespace, store: Store | None, config: dict[str, Key]) -> int:
    fields = {
        "owner": args.owner,
        "team": args.team,
        "models": [m.strip() for m in (args.models or "").split(",") if m.strip()],
        "rpm": args.rpm,
        "tpm": args.tpm,
        "max_parallel": args.max_parallel,
        "budget": {"amount": args.budget, "period": args.period}
        if args.budget is not None
        else None,
    }
    if args.expires is not None:
        fields["expires"] = args.expires
    key, secret = await key_admin.create(store, config, args.id, fields)
    if store is not None:
        print(f"created {key.id} in the shared store. Its secret, shown this once:")
        print(secret)
        return 0
    print("No GATEWAY_REDIS_URL: add this to the config file (GATEWAY_CONFIG) and restart.")
    print(f"The secret, shown this once: {secret}\n")
    print(key_admin.toml(key))
    return 0


async def _list(store: Store | None, config: dict[str, Key]) -> int:
    header = ("id", "owner", "team", "models", "rpm", "tpm", "parallel", "budget", "spent", "state")
    rows = [header]
    now = time.time()
    for key in await key_admin.every_key(store, config):
        spent = await key_admin.spent(store, key)
        rows.append(
            (
                key.id,
                key.owner or "",
                key.team or "",
                ",".join(key.models) or "*",
                str(key.rpm or "-"),
                str(key.tpm or "-"),
                str(key.max_parallel or "-"),
                f"{key.budget.amount:g}/{key.budget.period}" if key.budget else "-",
                "-" if spent is None else f"{spent:.4f}",
                key_admin.state(key, now),
            )
        )
    if len(rows) == 1:
        print(
            "no keys: none in the config file (GATEWAY_CONFIG), and no GATEWAY_REDIS_URL"
            if store is None
            else "no keys yet: make one with 'keys create <id>'"
        )
        return 0
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    return 0
