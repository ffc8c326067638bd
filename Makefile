# Everything a developer or CI runs. `make demo` and `make test` work on a fresh clone
# with only Python 3.11 and make present.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
UV_VERSION := 0.13.9
DEMO_DIR ?= build/demo
DEMO_HPS ?= n-trials=10 epochs=10 seed=1

.PHONY: install demo test lint clean lock engine wheelhouse image image-vars smoke login push

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
	@echo "--- plots, drawn from the study ($(DEMO_DIR)/output/data/plots)"
	$(BIN)/sagemaker-optuna report --study chainer-mlp \
		--storage sqlite:///$(abspath $(DEMO_DIR))/output/data/optuna-study.db --out $(DEMO_DIR)/output/data
	@echo "--- best trial ($(DEMO_DIR)/output/data/best_trial.json)"; cat $(DEMO_DIR)/output/data/best_trial.json; echo
	@echo "--- model folder ($(DEMO_DIR)/model)"; ls -l $(DEMO_DIR)/model; cat $(DEMO_DIR)/model/model.json; echo

# Serve the demo model locally (training it first if needed) and send it five test digits.
.PHONY: serve-demo
serve-demo: install
	@test -f $(DEMO_DIR)/model/model.json || $(MAKE) demo
	$(BIN)/python -m serving.demo_client $(DEMO_DIR)/model

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint docker/Dockerfile

clean:
	rm -rf build .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# --- The image (README.md, "Image") ----------------------------------------------------------
# DOCKER: docker when its daemon answers, else podman (run `make engine` once to install it and,
# without a reachable registry, the local base image). Every variable here can be overridden.
IMAGE_NAME       ?= sagemaker-optuna-chainer
IMAGE            ?= $(IMAGE_NAME):$(IMAGE_TAG)
LOCAL_BASE_IMAGE ?= localhost/debian-python:bookworm
WHEELHOUSE       := build/wheelhouse
DOCKER_BUILD_FLAGS ?= --network=none
DOCKER_PUSH_FLAGS  ?=
SMOKE_DIR        ?= build/smoke
SMOKE_HPS        ?= n-trials=3 epochs=2 seed=1
AWS              ?= $(BIN)/aws
IMAGE_REPO_NAME  ?= $(IMAGE_NAME)
PUSH_TAGS        ?= $(IMAGE_TAG) latest
REGISTRY         ?= $(AWS_ACCOUNT_ID).dkr.ecr.$(AWS_DEFAULT_REGION).amazonaws.com

# Evaluated once per make run (a commit made during a build must not change the tag).
ifeq ($(origin IMAGE_TAG),undefined)
IMAGE_TAG := $(shell git rev-parse --short=12 HEAD 2>/dev/null || echo dev)
endif
# Detected once, on first use, unless given.
ifeq ($(origin DOCKER),undefined)
DOCKER = $(eval DOCKER := $$(shell docker info >/dev/null 2>&1 && echo docker || echo podman))$(DOCKER)
endif
# The base image: the local one made by docker/setup-engine.sh when it exists, else the
# Dockerfile's default (python:3.11-slim-bookworm from Docker Hub).
ifeq ($(origin BASE_IMAGE),undefined)
BASE_IMAGE = $(eval BASE_IMAGE := $$(shell $$(ENGINE) image inspect $(LOCAL_BASE_IMAGE) >/dev/null 2>&1 && echo $(LOCAL_BASE_IMAGE)))$(BASE_IMAGE)
endif
ifeq ($(origin AWS_ACCOUNT_ID),undefined)
AWS_ACCOUNT_ID = $(eval AWS_ACCOUNT_ID := $$(shell $(AWS) sts get-caller-identity --query Account --output text))$(AWS_ACCOUNT_ID)
endif
# podman needs docker/containers.conf on machines like CI's (runc, no default ulimits).
PODMAN_CONF ?= $(or $(CONTAINERS_CONF),$(CURDIR)/docker/containers.conf)
ENGINE = $(if $(filter podman,$(notdir $(firstword $(DOCKER)))),CONTAINERS_CONF=$(PODMAN_CONF) )$(DOCKER)

engine:
	bash docker/setup-engine.sh

# Wheels of the whole lock, built on the host (through whatever proxy pip is set up for), so
# that the image build needs no index and no compiler. Needs Linux on the image's CPU
# architecture and a glibc no newer than the base image's (Debian 12: 2.36).
wheelhouse: $(WHEELHOUSE)/.complete

$(WHEELHOUSE)/.complete: requirements.lock build-constraints.txt | $(VENV)/.installed
	rm -rf $(WHEELHOUSE) $(WHEELHOUSE).tmp
	$(BIN)/pip wheel --quiet --disable-pip-version-check --build-constraint build-constraints.txt \
		-r requirements.lock -w $(WHEELHOUSE).tmp
	touch $(WHEELHOUSE).tmp/.complete
	mv $(WHEELHOUSE).tmp $(WHEELHOUSE)

image: wheelhouse
	$(ENGINE) build $(DOCKER_BUILD_FLAGS) $(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) \
		-f docker/Dockerfile -t $(IMAGE) .
	@$(ENGINE) image inspect --format '{{.Size}}' $(IMAGE) | awk '{printf "$(IMAGE): %.0f MB\n", $$1 / 1e6}'

# What the tests and scripts need to drive the same engine the same way.
image-vars:
	@echo "DOCKER=$(DOCKER)"
	@echo "CONTAINERS_CONF=$(if $(filter podman,$(notdir $(firstword $(DOCKER)))),$(PODMAN_CONF))"
	@echo "IMAGE=$(IMAGE)"
	@echo "BASE_IMAGE=$(BASE_IMAGE)"

# A 3-trial job on the digits, run exactly as SageMaker runs it (and with no network at all).
smoke: image
	rm -rf $(SMOKE_DIR)
	$(BIN)/python -m entrypoint.localjob $(SMOKE_DIR) --digits $(SMOKE_HPS)
	$(ENGINE) run --rm --network=none -v $(abspath $(SMOKE_DIR)):/opt/ml $(IMAGE) train
	ls -l $(SMOKE_DIR)/model
	cat $(SMOKE_DIR)/output/data/best_trial.json; echo

login: SHELL := /bin/bash
login: .SHELLFLAGS := -o pipefail -c
login: install
	$(AWS) ecr get-login-password --region $(AWS_DEFAULT_REGION) \
		| $(ENGINE) login --username AWS --password-stdin $(DOCKER_PUSH_FLAGS) $(REGISTRY)

# Pushes $(IMAGE) (built by `make image`) as $(REGISTRY)/$(IMAGE_REPO_NAME):<each of PUSH_TAGS>.
push: login
	for tag in $(PUSH_TAGS); do \
		$(ENGINE) tag $(IMAGE) $(REGISTRY)/$(IMAGE_REPO_NAME):$$tag \
		&& $(ENGINE) push $(DOCKER_PUSH_FLAGS) $(REGISTRY)/$(IMAGE_REPO_NAME):$$tag || exit 1; \
	done
