#!/usr/bin/env bash
# Installs the agent CLIs that tests/test_agent_clis.py drives through the gateway —
# the Codex CLI and Claude Code, pinned — into the git-ignored .agents/ of the project.
# Idempotent: when both already answer --version with the pinned version, it does nothing.
# Node and npm come from Debian when `node` is missing (the tests run as root on Debian).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PREFIX="$ROOT/.agents"
CODEX_VERSION="0.171.0"
CLAUDE_VERSION="2.1.197"
CODEX="$PREFIX/node_modules/.bin/codex"
CLAUDE="$PREFIX/node_modules/.bin/claude"

# --version in a throwaway home: Codex writes into CODEX_HOME even for --version.
versions_match() {
    local home status=0
    home="$(mktemp -d)"
    [[ -x "$CODEX" && -x "$CLAUDE" ]] &&
        CODEX_HOME="$home" "$CODEX" --version 2>/dev/null | grep -qx "codex-cli $CODEX_VERSION" &&
        HOME="$home" "$CLAUDE" --version 2>/dev/null | grep -q "^$CLAUDE_VERSION " || status=1
    rm -rf "$home"
    return "$status"
}

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    echo "install.sh: installing node and npm from Debian"
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs npm
fi

if versions_match; then
    exit 0
fi

echo "install.sh: installing @openai/codex@$CODEX_VERSION and" \
    "@anthropic-ai/claude-code@$CLAUDE_VERSION into $PREFIX"
mkdir -p "$PREFIX"
npm install --prefix "$PREFIX" --no-audit --no-fund --save-exact --loglevel=error \
    "@openai/codex@$CODEX_VERSION" "@anthropic-ai/claude-code@$CLAUDE_VERSION"

if ! versions_match; then
    echo "install.sh: the CLIs in $PREFIX do not answer --version as pinned" >&2
    exit 1
fi
