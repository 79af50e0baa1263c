"""Routing: which upstream serves a request, and how it behaves when that upstream fails.

``registry`` maps a public model name (or alias) to its deployments, policies and
fallbacks; ``balancing`` holds the deployments of one model and picks one (weights,
cooldowns); ``policy`` holds the timeouts, retries, backoff and cooldown a model's
requests follow. A new routing rule (a pattern, a new balancing strategy) goes here.
"""
