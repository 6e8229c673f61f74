# The two commands of the README: `make serve` (ARGS=--demo for a demo page) and `make test`.
# Each installs what is missing first, so they work on a fresh machine.

SHELL := /bin/bash
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
EMBED := api/static/dist/embed.js
ARGS ?=

.PHONY: serve test setup embed services chromium pgbouncer lint

serve: setup
	$(UV) run --frozen widgets serve $(ARGS)

test: setup services chromium pgbouncer
	$(UV) run --frozen lint-imports
	$(UV) run --frozen ruff check domain application infrastructure projections api
	$(UV) run --frozen pytest $(PYTEST_ARGS)

setup: $(UV) embed
	$(UV) sync --frozen

$(UV):
	python3 -m pip install --quiet --user uv || python3 -m pip install --quiet uv

embed: $(EMBED)

$(EMBED): $(wildcard api/embed/src/*) api/embed/package-lock.json api/embed/build.mjs
	npm --prefix api/embed ci --no-audit --no-fund
	npm --prefix api/embed run build

# The tests use the machine's PostgreSQL and Redis; start them if they are not running.
services:
	@pg_isready -q -h 127.0.0.1 -p 5432 || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql) main start
	@redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1 || redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
	@for i in $$(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && redis-cli -h 127.0.0.1 ping >/dev/null 2>&1 && exit 0; sleep 1; done; echo "PostgreSQL or Redis did not start" >&2; exit 1

# Browser tests drive Debian's Chromium (Playwright cannot download browsers here).
chromium:
	@command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# The pooler tests start Debian's PgBouncer (1.18) themselves, in transaction mode, in front of the tests' PostgreSQL.
pgbouncer:
	@command -v pgbouncer >/dev/null || test -x /usr/sbin/pgbouncer || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null; }
