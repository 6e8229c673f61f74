# The two commands of the README: `make serve` (ARGS=--demo for a demo page) and `make test`.
# Each installs what is missing first, so they work on a fresh machine.

SHELL := /bin/bash
# uv goes beside the machine's python3 (a pyenv shim or /usr/local/bin), where the PATH already finds it.
UV_VERSION := 0.13.10
EMBED := api/static/dist/embed.js
ARGS ?=

LIVEKIT := .cache/bin/livekit-server

.PHONY: serve test setup embed services lint uv livekit agent

serve: setup
	uv run --frozen widgets serve $(ARGS)

test: setup services livekit agent
	uv run --frozen lint-imports
	uv run --frozen ruff check domain application infrastructure projections api
	uv run --frozen pytest $(PYTEST_ARGS)

setup: uv embed
	uv sync --frozen

uv:
	@command -v uv >/dev/null || { python3 -m pip install --quiet --root-user-action=ignore uv==$(UV_VERSION) && \
	  { command -v pyenv >/dev/null && pyenv rehash || true; }; }

embed: $(EMBED)

$(EMBED): $(wildcard api/embed/src/*) api/embed/package-lock.json api/embed/build.mjs
	npm --prefix api/embed ci --no-audit --no-fund
	npm --prefix api/embed run build

# The tests use the machine's PostgreSQL and Redis, and start their own PgBouncer, Redis Cluster and Chromium:
# install them from Debian and start the first two, if they are not there yet.
services:
	@bash deploy/dev/machine.sh

# The LiveKit server the tests, the benchmarks and `--demo` run: built once from the Go module proxy, at the
# version deploy/livekit/go.mod pins (every module checked against go.sum), into an ignored folder.
livekit: $(LIVEKIT)

$(LIVEKIT): deploy/livekit/go.mod deploy/livekit/go.sum
	@command -v go >/dev/null || { echo "make livekit needs Go 1.26: https://go.dev/doc/install" >&2; exit 1; }
	cd deploy/livekit && CGO_ENABLED=0 go build -o ../../$(LIVEKIT) github.com/livekit/livekit-server/cmd/server

# The demo and test agent worker, on livekit-agents in an environment of its own (deploy/agent/uv.lock).
agent: uv
	uv sync --project deploy/agent --frozen --quiet
