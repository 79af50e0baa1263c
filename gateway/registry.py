"""The model registry: public model names to a provider and an optional upstream name."""

from __future__ import annotations

from collections.abc import Iterable

from .errors import ModelNotFoundError
from .providers import Provider


class Route:
    """Where one public model name goes; ``upstream_model`` rewrites the name on the way."""

    __slots__ = ("name", "provider", "upstream_model")

    def __init__(self, name: str, provider: Provider, upstream_model: str | None = None) -> None:
        self.name = name
        self.provider = provider
        # A rewrite to the same name is no rewrite: the body is then forwarded untouched.
        self.upstream_model = upstream_model if upstream_model != name else None

    def __repr__(self) -> str:
        target = f" as {self.upstream_model!r}" if self.upstream_model else ""
        return f"<Route {self.name!r} -> {self.provider.name}{target}>"


class ModelRegistry:
    """Resolves a requested model name.

    With models listed, only they (and their aliases) are served; anything else is a
    404 ``model_not_found``. With none listed, every model goes to ``default``.
    """

    def __init__(self, default: Provider | None = None) -> None:
        self.default = default
        self._routes: dict[str, Route] = {}
        self._listed: list[str] = []
        self._default_route = Route("", default) if default is not None else None

    def add(
        self,
        name: str,
        provider: Provider,
        upstream_model: str | None = None,
        aliases: Iterable[str] = (),
    ) -> Route:
        route = Route(name, provider, upstream_model)
        for public in (name, *aliases):
            if public in self._routes:
                raise ValueError(f"model name {public!r} is registered twice")
            self._routes[public] = route
            self._listed.append(public)
        return route

    @property
    def is_open(self) -> bool:
        """True when no models are listed and every name goes to the default provider."""
        return not self._routes

    def names(self) -> list[str]:
        """Every public name, aliases included, in the order they were added."""
        return list(self._listed)

    def providers(self) -> list[Provider]:
        seen: dict[int, Provider] = {}
        if self.default is not None:
            seen[id(self.default)] = self.default
        for route in self._routes.values():
            seen.setdefault(id(route.provider), route.provider)
        return list(seen.values())

    def resolve(self, model: str) -> Route:
        route = self._routes.get(model)
        if route is not None:
            return route
        if self._routes or self._default_route is None:
            raise ModelNotFoundError(model)
        return self._default_route

    def default_route(self) -> Route | None:
        """The route of requests that name no model: the default provider, no rewrite."""
        return self._default_route
