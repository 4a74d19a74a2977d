# Two entry points (see README): `make demo` runs the main job, `make test` runs lint + tests.
# Both create ./.venv on first use. TORCH pins the wheel installed first so that pip does not
# pull a multi-GB CUDA build on CPU machines; override it for GPU machines (make TORCH=torch).
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet "$(TORCH)"
	$(VENV)/bin/pip install --quiet -e ".[dev]"
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
