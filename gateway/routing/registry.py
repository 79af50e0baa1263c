"""The model registry: public model names to deployments, policies and fallbacks.

A name resolves by one dict lookup. A model may also claim every name that matches a
glob (``match``): agents ask for models by names of their own choosing (Claude Code for
``claude-opus-4-8``, Codex for ``gpt-5-codex``), and a team sends them all to the model it
picked. Patterns are tried only when the lookup misses, in the order they were added,
and what they decide is remembered: clients send a few names over and over.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from fnmatch import translate

from ..core.errors import ModelNotFoundError
from ..providers import Provider
from .balancing import Balancer, Deployment
from .policy import Cooldown, Retry, RoutingDefaults, Timeouts


class Route:
    """Where one public model name goes, and how it behaves when its upstreams fail."""

    __slots__ = (
        "balancer",
        "context_fallbacks",
        "cooldown",
        "fallbacks",
        "header",
        "name",
        "provider",
        "retry",
        "timeouts",
        "upstream_model",
    )

    def __init__(
        self,
        name: str,
        deployments: Sequence[Deployment],
        *,
        strategy: str = "least-inflight",
        fallbacks: Sequence[str] = (),
        context_fallbacks: Sequence[str] = (),
        timeouts: Timeouts | None = None,
        retry: Retry | None = None,
        cooldown: Cooldown | None = None,
    ) -> None:
        defaults = RoutingDefaults()
        self.name = name
        # Sent with each answer; built per request only for the open route (no name).
        self.header = ("x-gateway-model", name) if name else None
        self.balancer = Balancer(deployments, strategy)
        # The first deployment's (the only one, for most models): what hooks see in ctx.
        self.provider: Provider = deployments[0].provider
        self.upstream_model = deployments[0].upstream_model
        self.fallbacks = tuple(fallbacks)
        self.context_fallbacks = tuple(context_fallbacks)
        self.timeouts = timeouts or defaults.timeouts
        self.retry = retry or defaults.retry
        self.cooldown = cooldown or defaults.cooldown

    @property
    def deployments(self) -> tuple[Deployment, ...]:
        return self.balancer.deployments

    def __repr__(self) -> str:
        return f"<Route {self.name!r} -> {', '.join(d.name for d in self.deployments)}>"


# Names resolved by a pattern (or by none) that are remembered; past it, forgotten at once.
MAX_MATCHED_NAMES = 4096


class ModelRegistry:
    """Resolves a requested model name.

    With models listed, only they (and their aliases), and names that match one of their
    ``match`` patterns, are served; anything else is a 404 ``model_not_found``. A name is
    looked up exactly first (names and aliases always win); on a miss the patterns are
    tried in the order they were added, the first to match wins. With none listed, every
    model goes to ``default``. Values a model does not set come from ``defaults``.
    """

    def __init__(
        self, default: Provider | None = None, defaults: RoutingDefaults | None = None
    ) -> None:
        self.default = default
        self.defaults = defaults or RoutingDefaults()
        self._routes: dict[str, Route] = {}
        self._listed: list[str] = []
        self._patterns: list[tuple[re.Pattern[str], str, Route]] = []
        self._matched: dict[str, Route | None] = {}  # name -> what the patterns said
        self._default_route = (
            self._route("", [Deployment(default)]) if default is not None else None
        )

    def _route(self, name: str, deployments: Sequence[Deployment], **options: object) -> Route:
        defaults = self.defaults
        for key in ("timeouts", "retry", "cooldown"):
            if options.get(key) is None:
                options[key] = getattr(defaults, key)
        return Route(name, deployments, **options)  # type: ignore[arg-type]

    def add(
        self,
        name: str,
        target: Provider | Deployment | Sequence[Deployment],
        upstream_model: str | None = None,
        aliases: Iterable[str] = (),
        *,
        match: Iterable[str] = (),
        strategy: str = "least-inflight",
        fallbacks: Sequence[str] = (),
        context_fallbacks: Sequence[str] = (),
        timeouts: Timeouts | None = None,
        retry: Retry | None = None,
        cooldown: Cooldown | None = None,
    ) -> Route:
        """Serve ``name`` (and ``aliases``, and any other name matching a glob of ``match``:
        ``fnmatch``'s, case-sensitive) by one provider or several deployments."""
        patterns = list(match)
        for i, pattern in enumerate(patterns):
            if not isinstance(pattern, str) or not pattern:
                raise ValueError(f"match[{i}]: a pattern must be a non-empty string")
        if isinstance(target, Provider):
            deployments: Sequence[Deployment] = [Deployment(target, upstream_model)]
        elif isinstance(target, Deployment):
            deployments = [target]
        else:
            deployments = list(target)
        route = self._route(
            name,
            deployments,
            strategy=strategy,
            fallbacks=fallbacks,
            context_fallbacks=context_fallbacks,
            timeouts=timeouts,
            retry=retry,
            cooldown=cooldown,
        )
        for public in (name, *aliases):
            if public in self._routes:
                raise ValueError(f"model name {public!r} is registered twice")
            self._routes[public] = route
            self._listed.append(public)
        for pattern in patterns:
            self._patterns.append((re.compile(translate(pattern)), pattern, route))
        self._matched.clear()  # what the patterns said may have changed
        return route

    def check_fallbacks(self) -> None:
        """Every fallback names a listed model (called once everything is added)."""
        for route in self._routes.values():
            for fallback in (*route.fallbacks, *route.context_fallbacks):
                if fallback not in self._routes:
                    raise ValueError(f"model {route.name!r}: unknown fallback model {fallback!r}")

    @property
    def is_open(self) -> bool:
        """True when no models are listed and every name goes to the default provider."""
        return not self._routes

    def names(self) -> list[str]:
        """Every public name, aliases included, in the order they were added."""
        return list(self._listed)

    def aliases(self) -> dict[str, str]:
        """Every public name that is not its model's own, to that model's name."""
        return {name: route.name for name, route in self._routes.items() if name != route.name}

    def reached(self, route: Route) -> list[Provider]:
        """The providers a request on ``route`` may reach: its deployments', then its
        fallbacks' and context fallbacks' (what an API in front checks they all speak)."""
        return [provider for provider, _ in self.reached_models(route, "")]

    def reached_models(self, route: Route, model: str) -> list[tuple[Provider, str]]:
        """``reached``, with the model each deployment is asked for (as the forwarder names
        it: its rewrite, else its model's name, else — the open route — ``model``)."""
        names = (*route.fallbacks, *route.context_fallbacks)
        routes = [route, *(self.resolve(name) for name in names)]
        return [
            (d.provider, d.upstream_model or r.name or model) for r in routes for d in r.deployments
        ]

    def routes(self) -> list[Route]:
        """Every route once (aliases share their model's). The default route is one only
        in open mode: with models listed it serves just the requests that name none, so
        its deployment is left out of readiness, the cooling gauge and shared limits."""
        routes: dict[int, Route] = {}
        if self._default_route is not None and not self._routes:
            routes[id(self._default_route)] = self._default_route
        for route in self._routes.values():
            routes.setdefault(id(route), route)
        return list(routes.values())

    def deployments(self) -> list[Deployment]:
        """Every deployment once."""
        seen: dict[int, Deployment] = {}
        for route in self.routes():
            for deployment in route.deployments:
                seen.setdefault(id(deployment), deployment)
        return list(seen.values())

    def providers(self) -> list[Provider]:
        seen: dict[int, Provider] = {}
        if self.default is not None:
            seen[id(self.default)] = self.default
        for route in self._routes.values():
            for deployment in route.deployments:
                seen.setdefault(id(deployment.provider), deployment.provider)
        return list(seen.values())

    def patterns(self) -> dict[str, str]:
        """Every ``match`` pattern, in the order they are tried, to its model's name (a
        pattern given twice is the first model's: the second never matches first)."""
        patterns: dict[str, str] = {}
        for _, pattern, route in self._patterns:
            patterns.setdefault(pattern, route.name)
        return patterns

    def resolve(self, model: str) -> Route:
        route = self._routes.get(model)
        if route is not None:
            return route
        if self._patterns:
            route = self._match(model)
            if route is not None:
                return route
        if self._routes or self._default_route is None:
            raise ModelNotFoundError(model)
        return self._default_route

    def _match(self, model: str) -> Route | None:
        """The route of the first pattern ``model`` matches, remembered (a miss too)."""
        matched = self._matched
        if model in matched:
            return matched[model]
        route = next((r for regex, _, r in self._patterns if regex.match(model)), None)
        if len(matched) >= MAX_MATCHED_NAMES:  # a client inventing names: start afresh
            matched.clear()
        matched[model] = route
        return route

    def default_route(self) -> Route | None:
        """The route of requests that name no model: the default provider, no rewrite."""
        return self._default_route
