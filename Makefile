# The two commands a fresh clone needs: `make demo` and `make test` (`make lint` checks the code).
# Both create (or reuse) .venv in the repo and install the project into it.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LIQREPLAY_SEED_DATA ?= ../shared/data
LIQREPLAY_LAKE ?= lake
export LIQREPLAY_LAKE
RESULTS ?= results/demo
REPORT  ?= out/report.html

.PHONY: demo test lint venv chromium bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

# Debian's chromium for the report's browser tests (no browser download: the
# network here only reaches package registries). Installed when missing and root.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium not found and cannot install it: browser tests will be skipped"; fi; }

test: $(STAMP) chromium
	$(BIN)/python -m pytest -q

# ruff (installed by the test extras) with the [tool.ruff] settings in pyproject.toml
lint: $(STAMP)
	$(BIN)/ruff check .

# Load the real 2022 data (../shared/data when present, else the live sources),
# backtest every window and the whole year, write the HTML report.
demo: $(STAMP)
	@if [ -d "$(LIQREPLAY_SEED_DATA)" ]; then \
	  $(BIN)/liqreplay import "$(LIQREPLAY_SEED_DATA)"; \
	else \
	  echo "no seed data at $(LIQREPLAY_SEED_DATA): fetching the 2022 windows from the live sources"; \
	  $(BIN)/liqreplay refresh --config fetch/demo_refresh.toml; \
	fi
	$(BIN)/liqreplay data status
	$(BIN)/liqreplay run --all --out $(RESULTS)
	$(BIN)/liqreplay report $(RESULTS) --out $(REPORT)

bench: $(STAMP)
	$(BIN)/liqreplay bench

clean:
	rm -rf $(VENV) lake results out
