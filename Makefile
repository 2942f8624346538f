# make run: set up and start example_project/ on the embedded store.
# make run-asgi: the same under ASGI (uvicorn), where the async page's reads run on the event loop.
# make test: set up and run every test.
# make docs: build the documentation (docs/_build/html), warnings as errors, internal links checked.
PYTHON ?= python3.12
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
export PYENV_VERSION ?= 3.12.1:3.11.7:3.10.13:3.13.0

.PHONY: run run-asgi test venv lint bench emulator tox clean gateway-deps suites docs mutate

$(BIN)/.installed: pyproject.toml requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,docs,async]' -r requirements-dev.txt
	touch $@

venv: $(BIN)/.installed

gateway-deps: tests/gateway/node_modules/.package-lock.json

tests/gateway/node_modules/.package-lock.json: tests/gateway/package-lock.json
	npm ci --prefix tests/gateway --no-audit --no-fund
	touch $@

# Other projects' test suites (Django's, django-redis', django-ratelimit's), from the package index.
suites: venv
	$(BIN)/python -m tests.third_party

test: venv gateway-deps suites
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# -n: every cross-reference must resolve (nitpicky); -W --keep-going: every warning fails the build, all are listed.
# check_links.py then resolves every relative link and #anchor in the HTML, offline.
docs: venv
	$(BIN)/sphinx-build -E -a -n -W --keep-going -q -b html docs docs/_build/html
	$(BIN)/python docs/check_links.py docs/_build/html

# Style (ruff), the import contracts in pyproject.toml (import-linter) and types (mypy with django-stubs).
lint: venv
	$(BIN)/ruff check django_cfkv tests bench example_project docs
	$(BIN)/lint-imports
	$(BIN)/mypy

# Mutation testing (cosmic-ray; not run in CI): each security-critical module, with the tests that must
# notice any change to it. `make mutate MUTATE_ONLY=limits` runs the modules whose path contains "limits".
# cosmic-ray changes the module on disk one mutant at a time and restores it: run nothing else here meanwhile.
# Survivors are printed with their diffs; sessions stay in .cache/mutation/ (cr-report, cr-html).
MUTATE := \
	django_cfkv/limits.py=tests/kv/test_limits.py,tests/kv/test_client.py \
	django_cfkv/client/urls.py=tests/kv/test_keys_property.py,tests/kv/test_client.py \
	django_cfkv/sessions/keys.py=tests/sessions/test_keys.py,tests/sessions/test_threat_model.py \
	django_cfkv/sessions/codec.py=tests/sessions/test_codec.py,tests/sessions/test_engine.py,tests/sessions/test_keys.py \
	django_cfkv/cache/codec.py=tests/cache/test_codec.py,tests/cache/test_security.py,tests/cache/test_backend.py \
	django_cfkv/ratelimit/identity.py=tests/ratelimit/test_identity.py,tests/ratelimit/test_identity_edges.py,tests/ratelimit/test_dodges.py,tests/sessions/test_async.py \
	django_cfkv/ratelimit/counters.py=tests/ratelimit/test_counters.py,tests/ratelimit/test_dodges.py \
	django_cfkv/ratelimit/shards.py=tests/ratelimit/test_shards.py,tests/ratelimit/test_shards_edges.py,tests/ratelimit/test_counters.py,tests/ratelimit/test_dodges.py \
	django_cfkv/ratelimit/limiter.py=tests/ratelimit/test_limiter.py,tests/ratelimit/test_middleware.py,tests/ratelimit/test_response.py

mutate: venv
	$(BIN)/python -m tests.mutate $(if $(MUTATE_ONLY),--only $(MUTATE_ONLY)) $(MUTATE)

run: venv
	$(BIN)/python example_project/manage.py migrate --noinput
	$(BIN)/python example_project/manage.py demo_user
	$(BIN)/python example_project/manage.py runserver 127.0.0.1:$(PORT)

run-asgi: venv
	$(BIN)/python example_project/manage.py migrate --noinput
	$(BIN)/python example_project/manage.py demo_user
	$(BIN)/python -m uvicorn --app-dir example_project --host 127.0.0.1 --port $(PORT) --lifespan off demo_site.asgi:application

emulator: venv
	$(BIN)/python -m django_cfkv.emulator --host 127.0.0.1 --port 8787 --path example_project/emulator.sqlite3

bench: venv gateway-deps
	$(BIN)/python -m bench

tox: venv
	$(BIN)/tox -p auto

clean:
	rm -rf $(VENV) .tox build dist .pytest_cache docs/_build
