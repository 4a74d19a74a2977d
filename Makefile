# Two entry points (see README): `make demo` runs the main job, `make test` runs lint + tests.
# Both create ./.venv on first use. TORCH pins the wheel installed first so that pip does not
# pull a multi-GB CUDA build on CPU machines; override it for GPU machines (make TORCH=torch).
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
STAMP := $(VENV)/.installed
# The benchmark's peer, d3rlpy's CalQL (tests/test_benchmark.py runs it). d3rlpy 2.8.1 pins
# gymnasium 1.0.0, which would downgrade ours, so it goes in without its dependencies, and
# these are the ones it imports.
PEERS := d3rlpy==2.8.1 gym==0.26.2 structlog==26.1.0 dataclasses-json==0.6.7 \
	marshmallow==4.4.0 typing-inspect==0.9.0 mypy-extensions==1.2.0 scikit-learn==1.9.1 \
	joblib==1.6.0 threadpoolctl==3.8.0 narwhals==2.29.0 cloudpickle==3.1.3

.PHONY: demo test lint clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet "$(TORCH)"
	$(VENV)/bin/pip install --quiet -e ".[dev]"
	$(VENV)/bin/pip install --quiet --no-deps $(PEERS)
	touch $(STAMP)

demo: $(STAMP)
	WANDB_MODE=$${WANDB_MODE:-offline} $(VENV)/bin/wsrl-wm demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# The default suite, then the tests marked slow (pyproject's addopts leave them out).
test: lint
	WANDB_MODE=disabled OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(VENV)/bin/python -m pytest -q
	WANDB_MODE=disabled OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(VENV)/bin/python -m pytest -q -m slow

clean:
	rm -rf $(VENV)
