# TA_mailsec: build, check and demonstrate the add-on.
# `make demo` and `make test` work on a fresh machine: they create the virtual
# environment from the pinned requirements first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
APP := TA_mailsec
VERSION := $(shell $(PYTHON) -c "import json;print(json.load(open('globalConfig.json'))['meta']['version'])")
OUTPUT := output/$(APP)
PACKAGE := dist/$(APP)-$(VERSION).tar.gz
PYTEST_ARGS ?=
# The Pythons Splunk runs add-on scripts with: 9.x 3.9; 10.x 3.9 or 3.13 (docs/development.md)
SPLUNK_PYTHONS := 3.9 3.13
TEST_ENV := PYTHONPATH=package/bin:tests

.PHONY: all venv build package lint format test unit e2e appinspect demo bench clean

all: test

$(BIN)/activate: requirements-dev.txt package/lib/requirements.txt
	$(PYTHON) -m venv $(VENV)
	# ucc-gen 6.6 runs `pip show --version`, which pip 26 refuses
	$(BIN)/pip install --quiet --disable-pip-version-check "pip==25.0"
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(BIN)/activate

venv: $(BIN)/activate

build: venv
	rm -rf output
	$(BIN)/ucc-gen build --source package --ta-version $(VERSION) --pip-version 25.0 > .build.log 2>&1 \
		|| (tail -40 .build.log; exit 1)
	# ucc-gen can log a traceback, stop half-way and still exit 0
	@if grep -q Traceback .build.log || [ ! -f $(OUTPUT)/default/app.conf ]; then \
		grep -B2 -A12 Traceback .build.log | head -40; echo "ucc-gen build failed"; exit 1; fi
	# AppInspect's check_for_expansive_permissions
	chmod -R u+rwX,go+rX,go-w output

package: build
	mkdir -p dist
	rm -f $(PACKAGE)
	$(BIN)/ucc-gen package --path $(OUTPUT) -o dist > .package.log 2>&1 || (tail -40 .package.log; exit 1)
	@ls -l dist/*.tar.gz

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Unit tests on the development Python (the import and compiled-library tests start
# 3.9 and 3.13 themselves).
unit: build
	$(TEST_ENV) $(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

# End-to-end tests (marked slow: they run the built scripts through tests/harness),
# once per Splunk Python, the two runs side by side (they mostly wait on their scripts):
# every runner starts the scripts with MAILSEC_SCRIPT_PYTHON.
E2E_RUNS := $(addprefix e2e-py,$(SPLUNK_PYTHONS))  # not .PHONY: pattern rules skip those
e2e: build
	@$(MAKE) --no-print-directory -j$(words $(E2E_RUNS)) $(E2E_RUNS)

e2e-py%:
	@python=$$($(BIN)/python tests/harness/pythons.py $*) || exit 1; \
	MAILSEC_SCRIPT_PYTHON=$$python $(TEST_ENV) $(BIN)/python -m pytest -m slow -p no:cacheprovider \
		$(PYTEST_ARGS) > .e2e-py$*.log 2>&1; status=$$?; \
	echo "== end-to-end tests, add-on scripts on Python $*: $$python"; cat .e2e-py$*.log; \
	exit $$status

appinspect: package
	$(BIN)/python tools/appinspect_gate.py $(PACKAGE)

test: lint unit e2e appinspect

demo: build
	PYTHONPATH=package/bin:tests $(BIN)/python -m demo

bench: build
	@for script in benchmarks/*.py; do echo "== $$script"; PYTHONPATH=package/bin:tests $(BIN)/python $$script || exit 1; done

clean:
	rm -rf output dist .build.log .package.log .e2e-py*.log .pytest_cache .ruff_cache .hypothesis demo-out
