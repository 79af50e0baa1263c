"""The real agent CLIs (Codex, Claude Code) as test clients: their install script and a
harness that runs each once against a gateway."""
