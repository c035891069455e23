# Two commands on a fresh clone: `make demo` and `make test`. Each creates .venv when missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_DIR ?= demo-workspace

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint typecheck unit clean chromium postgresql java prometheus mlflow bench bench-scale

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	DEMO_DIR=$(DEMO_DIR) BERYL=$(BIN)/beryl PYTHON=$(BIN)/python bash scripts/demo.sh

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/ruff format --check src tests benchmarks scripts

typecheck: $(STAMP)
	$(BIN)/mypy

# The dashboard's browser test drives Debian's Chromium (never a downloaded browser build).
chromium:
	@command -v chromium > /dev/null 2>&1 || { \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium > /dev/null; }

# The PostgreSQL tests start a server of their own (tests/pg_server.py) from Debian's binaries.
postgresql:
	@command -v initdb > /dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb > /dev/null 2>&1 || { \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq postgresql > /dev/null; }

# The Spark tests run pyspark on the machine's Java (17 or newer).
java:
	@command -v java > /dev/null 2>&1 || { \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq openjdk-17-jre-headless > /dev/null; }

# The alert rules' unit tests run Debian's promtool (from the prometheus package).
prometheus:
	@command -v promtool > /dev/null 2>&1 || { \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus > /dev/null; }

# The MLflow tracking tests start MLflow's own server, from a venv of its own (its pins are not
# Beryl's); Beryl talks to it with mlflow-skinny from .venv.
MLFLOW_VENV := .venv-mlflow
$(MLFLOW_VENV)/.installed: tests/requirements-mlflow-server.txt
	test -x $(MLFLOW_VENV)/bin/python || $(PYTHON) -m venv $(MLFLOW_VENV)
	$(MLFLOW_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(MLFLOW_VENV)/bin/python -m pip install --quiet -r tests/requirements-mlflow-server.txt
	touch $@

mlflow: $(MLFLOW_VENV)/.installed

unit: $(STAMP) chromium postgresql java prometheus mlflow
	$(BIN)/python -m pytest

test: lint typecheck unit

# Benchmarks against peers, measured side by side in one run: tables on stdout; JSON and the
# scaling plot (scaling.png, drawn by benchmarks/plot.py at the end of the data run) in
# benchmarks/results/. `.venv/bin/python benchmarks/plot.py` redraws the plot from the JSON.
# Serving with reason codes, live monitoring off and granian beside; the data path on two data
# sets; ingestion, training and batch scoring at 10M and 100M rows (about 15 minutes); then every
# target in one table (benchmarks/summary.py), whose exit code is make's: a run that misses a
# target does not stop the others, and a run that does not finish leaves its JSON missing.
SERVING_PEERS := beryl,mlflow,plain-fastapi,bare-asgi,beryl-granian,bare-asgi-granian
RESULTS := benchmarks/results
bench: $(STAMP)
	rm -f $(RESULTS)/serving.json $(RESULTS)/data.json $(RESULTS)/scale.json
	-$(BIN)/python benchmarks/serving/run.py --peers $(SERVING_PEERS) --explain 3 --live
	-$(BIN)/python benchmarks/data/run.py
	-$(BIN)/python benchmarks/scale/run.py --engines local --sizes 10000000 100000000
	-$(BIN)/python benchmarks/plot.py
	$(BIN)/python benchmarks/summary.py

# The local engine against Spark local[2] on generated rows (long: minutes per size).
bench-scale: $(STAMP) java
	$(BIN)/python benchmarks/scale/run.py --sizes 10000000 100000000

clean:
	rm -rf $(VENV) $(MLFLOW_VENV) $(DEMO_DIR) .mypy_cache .pytest_cache .ruff_cache
