# Everything a developer or CI runs. `make demo` and `make test` work on a fresh clone
# with only Python 3.11 and make present.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
UV_VERSION := 0.13.9
DEMO_DIR ?= build/demo
DEMO_HPS ?= n-trials=10 epochs=10 seed=1

.PHONY: install demo test lint clean lock

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# Chainer's sdist needs setuptools<81 at build time (build-constraints.txt).
$(VENV)/.installed: $(BIN)/uv requirements-dev.lock pyproject.toml
	$(BIN)/uv pip sync --python $(BIN)/python --build-constraints build-constraints.txt requirements-dev.lock
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -e .
	touch $@

install: $(VENV)/.installed

lock: $(BIN)/uv
	$(BIN)/uv pip compile pyproject.toml --python-version 3.11 --build-constraints build-constraints.txt -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 --build-constraints build-constraints.txt -o requirements-dev.lock

demo: install
	rm -rf $(DEMO_DIR)
	$(BIN)/python -m entrypoint.localjob $(DEMO_DIR) --digits $(DEMO_HPS)
	SAGEMAKER_BASE_DIR=$(abspath $(DEMO_DIR)) SAGEMAKER_TRAINING_MODULE=entrypoint.train:main \
		PYTHONUNBUFFERED=1 $(BIN)/train
	@echo "--- best trial ($(DEMO_DIR)/output/data/best_trial.json)"; cat $(DEMO_DIR)/output/data/best_trial.json; echo
	@echo "--- model folder ($(DEMO_DIR)/model)"; ls -l $(DEMO_DIR)/model; cat $(DEMO_DIR)/model/model.json; echo

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf build .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
