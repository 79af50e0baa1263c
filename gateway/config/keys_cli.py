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

import msgspec

from ..access.keys import Budget, Key, checked, new_secret, parse_expiry, period_id, secret_hash
from ..access.stores import Store, StoreUnavailable
from .file import explain
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
        key = config_keys.get(args.id) or (await store.key_by_id(args.id) if store else None)
        if key is None:
            raise ValueError(f"no key {args.id!r}")
        if args.action == "show":
            print(_describe(key, await _spent(store, key)))
            return 0
        # revoke
        if args.id in config_keys:
            raise ValueError(
                f"{args.id!r} is in the config file: revoke it by removing it there "
                "(or set disabled = true) and restarting"
            )
        assert store is not None
        key.revoked = True
        await store.save_key(key)
        print(f"revoked {args.id}: refused from the next request on")
        return 0
    finally:
        if store is not None:
            await store.stop()


async def _create(args: argparse.Namespace, store: Store | None, config: dict[str, Key]) -> int:
    if args.id in config or (store is not None and await store.key_by_id(args.id)):
        raise ValueError(f"a key {args.id!r} exists already")
    secret = new_secret()
    expires = parse_expiry(args.expires)
    if expires is not None and expires <= time.time():
        raise ValueError(f"--expires {args.expires!r} is in the past")
    key = Key(
        id=args.id,
        secret_sha256=secret_hash(secret),
        owner=args.owner,
        team=args.team,
        models=[m.strip() for m in (args.models or "").split(",") if m.strip()],
        rpm=args.rpm,
        tpm=args.tpm,
        max_parallel=args.max_parallel,
        budget=Budget(args.budget, args.period) if args.budget is not None else None,
        expires=expires,
        created=time.time(),
    )
    try:
        key = checked(key)
    except msgspec.ValidationError as exc:
        raise ValueError(f"not a valid key: {explain(exc, 'key')}") from None
    if store is not None:
        await store.save_key(key)
        print(f"created {key.id} in the shared store. Its secret, shown this once:")
        print(secret)
        return 0
    print("No GATEWAY_REDIS_URL: add this to the config file (GATEWAY_CONFIG) and restart.")
    print(f"The secret, shown this once: {secret}\n")
    print(_toml(key))
    return 0


def _toml(key: Key) -> str:
    lines = [f"[keys.{key.id}]", f'secret_sha256 = "{key.secret_sha256}"']
    for field in ("owner", "team", "rpm", "tpm", "max_parallel"):
        value = getattr(key, field)
        if value is not None:
            lines.append(f"{field} = {msgspec.json.encode(value).decode()}")
    if key.models:
        lines.append(f"models = {msgspec.json.encode(key.models).decode()}")
    if key.budget is not None:
        lines.append(f'budget = {{ amount = {key.budget.amount}, period = "{key.budget.period}" }}')
    if key.expires is not None:
        lines.append(f'expires = "{time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(key.expires))}"')
    return "\n".join(lines)


async def _spent(store: Store | None, key: Key) -> float | None:
    if store is None or key.budget is None:
        return None
    return await store.spent(key.id, period_id(key.budget.period, time.time()))


async def _list(store: Store | None, config: dict[str, Key]) -> int:
    keys = dict(config)
    if store is not None:
        keys.update({key.id: key for key in await store.keys()})
    header = ("id", "owner", "team", "models", "rpm", "tpm", "parallel", "budget", "spent", "state")
    rows = [header]
    now = time.time()
    for key in sorted(keys.values(), key=lambda k: k.id):
        spent = await _spent(store, key)
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
                _state(key, now),
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


def _state(key: Key, now: float) -> str:
    refusal = key.refusal(now)
    if refusal is None:
        return "active"
    return "revoked" if key.revoked else "disabled" if key.disabled else "expired"


def _describe(key: Key, spent: float | None) -> str:
    fields = msgspec.structs.asdict(key)
    fields.pop("secret_sha256")  # not a secret, but nothing anyone needs to see
    fields["state"] = _state(key, time.time())
    for name in ("created", "expires"):
        if fields.get(name) is not None:
            fields[name] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(fields[name]))
    if spent is not None:
        fields["spent_this_period"] = round(spent, 6)
    return msgspec.json.format(msgspec.json.encode(fields), indent=2).decode()
