# voxwire: every target creates or reuses the project's own virtualenv (.venv).
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
BUF := tools/node_modules/.bin/buf
STAMP := $(VENV)/.installed

.PHONY: run test venv stubs check-stubs buf-lint buf-breaking release-contract lint pytest bench clean \
	browser-deps bench-edge

venv: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "need $(PYTHON) (Python 3.11+) on PATH" >&2; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

$(BUF): tools/package.json tools/package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "need npm (Node.js) to install the buf CLI" >&2; exit 1; }
	# npm install, not npm ci: the lock holds only the platform packages the registry serves.
	cd tools && npm install --silent --no-audit --no-fund
	@touch $@

run: $(STAMP)
	$(PY) -m localstack

test: $(STAMP) check-contract lint browser-deps
	$(PY) -m pytest

# Debian's Chromium for the real-browser tests (Playwright drives it; never `playwright
# install`, whose download is not reachable). apt-get update runs once, only when the browser
# is missing; where there is no apt (or no root), the browser tests skip and say why.
CHROMIUM ?= /usr/bin/chromium
browser-deps:
	@if [ -x $(CHROMIUM) ]; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "installing Debian's chromium for the browser tests"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	else \
		echo "browser-deps: no apt-get (or not root): browser tests will skip; install chromium to run them"; \
	fi

# The contract gate: lint, breaking-change check against the released v1 image, fresh stubs.
check-contract: buf-lint buf-breaking check-stubs

buf-lint: $(BUF)
	$(BUF) lint

buf-breaking: $(BUF)
	$(BUF) breaking --against protos/voxwire-v1.binpb

stubs: $(STAMP)
	$(PY) -m tools.gen_stubs

check-stubs: $(STAMP)
	$(PY) -m tools.gen_stubs --check

# Deliberately releasing a new contract image: only when a new version is cut.
release-contract: $(BUF)
	$(BUF) build -o protos/voxwire-v1.binpb

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) -m benchmarks.record --write-md BENCHMARKS.md $(BENCH_ARGS)

# The gateway's HTTP/WebSocket stack candidates side by side (BENCHMARKS.md, "Edge stack choice").
bench-edge: $(STAMP)
	$(PY) -m benchmarks.edge_stack

clean:
	rm -rf $(VENV) tools/node_modules .pytest_cache
