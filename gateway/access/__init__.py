"""Access: who may call the gateway, for which models, within which limits.

``auth`` reads the key a client presents; ``keys`` are virtual keys (hashed secrets,
models, limits, budgets); ``limits`` the rate limits and windows; ``cache`` the response
cache; ``control`` applies all of them to a request and settles its usage afterwards.
Their state lives in a ``stores`` implementation: in memory for one process, Redis for
many. A new limit is a field of ``limits.RateLimits`` checked in ``control`` and counted
by each store.
"""
