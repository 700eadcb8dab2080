# voxwire: every target creates or reuses the project's own virtualenv (.venv).
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
BUF := tools/node_modules/.bin/buf
STAMP := $(VENV)/.installed

.PHONY: run test venv stubs check-stubs buf-lint buf-breaking release-contract lint pytest bench fuzz clean

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

test: $(STAMP) check-contract lint
	$(PY) -m pytest

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
	$(PY) -m benchmarks.overhead

# Issue 8: the wire fuzzer against a real Triton and the adapter in its own process (report in
# out/fuzz.json, figures in docs/fuzzing.md), then the session state machines with the long
# hypothesis profile. FUZZ_ARGS overrides the run (e.g. FUZZ_ARGS="--cases 2000").
FUZZ_ARGS ?= --cases 100000 --concurrency 64 --seed 8 --audio tests/fixtures/speech/kitchen_lights.wav \
	--stt-models bench_stt --tts-models bench_tts --json out/fuzz.json --quiet
# Both parts run even when the first finds a broken invariant; the target fails if either did.
fuzz: $(STAMP)
	@status=0; \
	$(PY) -m tools.fuzz_stack -- $(FUZZ_ARGS) || status=$$?; \
	HYPOTHESIS_PROFILE=fuzz $(PY) -m pytest -p no:cacheprovider -q --timeout 1800 \
		tests/inference_adapter/test_stt_session_fuzz.py \
		tests/inference_adapter/test_tts_session_fuzz.py || status=$$?; \
	exit $$status

clean:
	rm -rf $(VENV) tools/node_modules .pytest_cache
