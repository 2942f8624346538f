# make run: set up and start example_project/ on the embedded store.
# make test: set up and run every test.
# make docs: build the documentation (docs/_build/html), warnings as errors, internal links checked.
PYTHON ?= python3.12
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
export PYENV_VERSION ?= 3.12.1:3.11.7:3.10.13:3.13.0

.PHONY: run test venv lint bench emulator tox clean gateway-deps suites docs

$(BIN)/.installed: pyproject.toml requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test,docs]' -r requirements-dev.txt
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

run: venv
	$(BIN)/python example_project/manage.py migrate --noinput
	$(BIN)/python example_project/manage.py demo_user
	$(BIN)/python example_project/manage.py runserver 127.0.0.1:$(PORT)

emulator: venv
	$(BIN)/python -m django_cfkv.emulator --host 127.0.0.1 --port 8787 --path example_project/emulator.sqlite3

bench: venv gateway-deps
	$(BIN)/python -m bench

tox: venv
	$(BIN)/tox -p auto

clean:
	rm -rf $(VENV) .tox build dist .pytest_cache docs/_build
