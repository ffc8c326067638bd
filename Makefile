# Everything a developer or CI runs. `make demo` and `make test` work on a fresh clone
# with only Python 3.11 and make present.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
UV_VERSION := 0.13.9
DEMO_DIR ?= build/demo
DEMO_HPS ?= n-trials=10 epochs=10 seed=1

.PHONY: install demo test unit lint clean lock engine wheelhouse debs image image-vars smoke login push sdk sdk-lock

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# Chainer's sdist needs setuptools<81 at build time (build-constraints.txt). Bytecode is written at
# install (uv writes none by default): where PYTHONDONTWRITEBYTECODE is set, as on some CI machines,
# every process would otherwise compile ~1,000 modules again (+2 s a start; make unit 46 -> 30 s).
$(VENV)/.installed: $(BIN)/uv requirements-dev.lock pyproject.toml
	$(BIN)/uv pip sync --compile-bytecode --python $(BIN)/python --build-constraints build-constraints.txt requirements-dev.lock
	$(BIN)/uv pip install --python $(BIN)/python --no-deps -e .
	touch $@

install: $(VENV)/.installed

lock: $(BIN)/uv
	$(BIN)/uv pip compile pyproject.toml --python-version 3.11 --build-constraints build-constraints.txt -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --extra dev --extra plots --python-version 3.11 --build-constraints build-constraints.txt -o requirements-dev.lock

demo: install
	rm -rf $(DEMO_DIR)
	$(BIN)/python -m devtools.localjob $(DEMO_DIR) --digits $(DEMO_HPS)
	SAGEMAKER_BASE_DIR=$(abspath $(DEMO_DIR)) SAGEMAKER_TRAINING_MODULE=entrypoint.train:main \
		PYTHONUNBUFFERED=1 $(BIN)/train
	@echo "--- plots, drawn from the study ($(DEMO_DIR)/output/data/plots)"
	$(BIN)/sagemaker-optuna report --study chainer-mlp \
		--storage sqlite:///$(abspath $(DEMO_DIR))/output/data/optuna-study.db --out $(DEMO_DIR)/output/data
	@echo "--- what the job left ($(DEMO_DIR)); the same seed gives the same study and model every run"
	@$(BIN)/python -m devtools.demo $(DEMO_DIR)

# Serve the demo model locally (training it first if needed) and send it five test digits.
# `serve` runs nginx in front of gunicorn: nginx must be installed (`make engine` does it).
.PHONY: serve-demo
serve-demo: install
	@test -f $(DEMO_DIR)/model/model.json || $(MAKE) demo
	$(BIN)/python -m devtools.demo_client $(DEMO_DIR)/model

# The fast layer (docs/testing.md): tests/unit only, in-process tests, no service,
# subprocess, SDK venv or engine needed; seconds. The buildspec's unit step runs it. UNIT_TESTS
# picks a part of tests/unit (a folder or a file); PYTEST_ARGS narrows it further.
# Its temporary files (SQLite studies, job folders: ~10 MB) go to /dev/shm when it is writable:
# SQLite's commits then wait for no disk, which was a third of the layer's time here.
# UNIT_WORKERS: pytest-xdist's -n (auto: one per core; 0 runs it in this process).
UNIT_TESTS ?= tests/unit
UNIT_WORKERS ?= auto
UNIT_TMPDIR ?= $(shell test -d /dev/shm -a -w /dev/shm && echo /dev/shm)
unit: install
	$(if $(UNIT_TMPDIR),TMPDIR=$(UNIT_TMPDIR) )$(BIN)/python -m pytest -m unit -n $(UNIT_WORKERS) $(UNIT_TESTS) $(PYTEST_ARGS)

# Every layer. As root on a Debian-like machine (CI, a fresh VM) the engine, nginx and
# docker-compose are set up first, so that this one command runs every layer; otherwise the tests
# that need them skip (and fail when CI is set). SETUP_ENGINE=no skips the set-up.
SETUP_ENGINE ?= auto
test: install sdk
	@if [ "$(SETUP_ENGINE)" = auto ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		bash docker/setup-engine.sh; \
	elif [ "$(SETUP_ENGINE)" = auto ]; then \
		echo "make test: engine set-up skipped (needs root and apt-get: run 'sudo make engine' once)"; fi
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The SageMaker Python SDK, v2 and v3 (they cannot share a venv), each in its own venv under
# build/ from its pinned lock in sdk/, for the local-mode tests (tests/container/test_sdk_local.py).
SDK_VERSIONS := v2 v3
SDK_VENVS    := $(foreach v,$(SDK_VERSIONS),build/sdk-$(v)/.installed)
sdk: $(SDK_VENVS)

build/sdk-%/.installed: sdk/%.lock | $(BIN)/uv
	rm -rf build/sdk-$*
	$(PYTHON) -m venv build/sdk-$*
	$(BIN)/uv pip sync --quiet --compile-bytecode --python build/sdk-$*/bin/python sdk/$*.lock
	touch $@

sdk-lock: $(BIN)/uv
	for v in $(SDK_VERSIONS); do \
		$(BIN)/uv pip compile sdk/$$v.in --python-version 3.11 -o sdk/$$v.lock || exit 1; \
	done

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/hadolint docker/Dockerfile

clean:
	rm -rf build .pytest_cache .ruff_cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# --- The image (docs/image.md) ----------------------------------------------------------
# DOCKER: docker when its daemon answers, else podman (run `make engine` once to install it and,
# without a reachable registry, the local base image). Every variable here can be overridden.
IMAGE_NAME       ?= sagemaker-optuna-chainer
IMAGE            ?= $(IMAGE_NAME):$(IMAGE_TAG)
LOCAL_BASE_IMAGE ?= localhost/debian-python:bookworm
DEFAULT_BASE_IMAGE := python:3.11-slim-bookworm
WHEELHOUSE       := build/wheelhouse
DEBS             := build/debs
APT_PACKAGES     ?= nginx
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

# Debian packages the image needs (nginx, for `serve`) and its base lacks: `apt-get install
# --download-only` run in a container of the base image itself, so the set and the versions are
# exactly what that base needs; the Dockerfile installs them with dpkg, offline. Fetched again
# when the base image changes. Needs the container to reach the base's Debian mirror.
debs:
	@base='$(or $(BASE_IMAGE),$(DEFAULT_BASE_IMAGE))'; \
	id=$$($(ENGINE) image inspect --format '{{.Id}}' "$$base" 2>/dev/null || echo "$$base"); \
	if [ "$$(cat $(DEBS)/.base 2>/dev/null)" = "$$id $(APT_PACKAGES)" ]; then exit 0; fi; \
	echo "debs: $(APT_PACKAGES) and what $$base lacks for them, into $(DEBS)"; \
	rm -rf $(DEBS) $(DEBS).tmp && mkdir -p $(DEBS).tmp/partial && \
	$(ENGINE) run --rm --network=host -v $(abspath $(DEBS).tmp):/debs "$$base" sh -c \
		'apt-get update -qq && apt-get install -qq -y --download-only --no-install-recommends \
		-o Dir::Cache::archives=/debs $(APT_PACKAGES) >/dev/null' && \
	rm -rf $(DEBS).tmp/partial $(DEBS).tmp/lock && \
	id=$$($(ENGINE) image inspect --format '{{.Id}}' "$$base") && echo "$$id $(APT_PACKAGES)" > $(DEBS).tmp/.base && \
	mv $(DEBS).tmp $(DEBS) && ls $(DEBS)

# The RDS global CA bundle, which the image uses to verify an RDS endpoint (hpo_study/database/tls.py).
# Needs internet (CodeBuild has it: buildspec.yml runs this); `make image` without it builds an
# image without the bundle and says so.
RDS_CA_URL ?= https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem
RDS_CA     := build/rds-ca/global-bundle.pem
.PHONY: rds-ca
rds-ca:
	mkdir -p $(dir $(RDS_CA))
	curl -fsSL --max-time 120 -o $(RDS_CA).tmp $(RDS_CA_URL)
	grep -q "BEGIN CERTIFICATE" $(RDS_CA).tmp
	mv $(RDS_CA).tmp $(RDS_CA)
	@echo "rds-ca: $$(grep -c 'BEGIN CERTIFICATE' $(RDS_CA)) certificates in $(RDS_CA)"

image: wheelhouse debs
	@mkdir -p $(dir $(RDS_CA))
	@if [ -s $(RDS_CA) ]; then echo "image: with the RDS CA bundle ($(RDS_CA))"; else \
		echo "image: WARNING: no RDS CA bundle ($(RDS_CA); 'make rds-ca' needs internet): jobs on an RDS endpoint will need db-ssl-ca or db-ssl-verify=false"; fi
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
	$(BIN)/python -m devtools.localjob $(SMOKE_DIR) --digits $(SMOKE_HPS)
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

# --- The AWS side as code (docs/infra.md) ---------------------------
# The linters live in their own venv (infra/requirements-tools.txt, `make lock-infra-tools`):
# checkov alone pins dozens of packages that must not move the runtime or dev locks.
INFRA_TOOLS    ?= build/infra-tools
INFRA_TEMPLATE ?= infra/optuna-hpo.yaml
STACK          ?= optuna-hpo
INFRA_PARAMS   ?=
INFRA_REGION    = $(or $(AWS_DEFAULT_REGION),$(AWS_REGION),$(shell $(AWS) configure get region))

.PHONY: infra infra-check infra-tools lock-infra-tools

$(INFRA_TOOLS)/.installed: infra/requirements-tools.txt | $(BIN)/uv
	rm -rf $(INFRA_TOOLS)
	$(PYTHON) -m venv $(INFRA_TOOLS)
	$(BIN)/uv pip sync --python $(INFRA_TOOLS)/bin/python infra/requirements-tools.txt
	touch $@

infra-tools: $(INFRA_TOOLS)/.installed

lock-infra-tools: $(BIN)/uv
	$(BIN)/uv pip compile infra/requirements-tools.in --python-version 3.11 -o infra/requirements-tools.txt

# cfn-lint (errors and warnings), checkov (no failed check; skips carry their reason in the
# template), parliament on every IAM policy (infra/check_policies.py, accepted findings in
# infra/parliament.yaml).
infra-check: infra-tools
	$(INFRA_TOOLS)/bin/cfn-lint $(INFRA_TEMPLATE)
	$(INFRA_TOOLS)/bin/checkov --file $(INFRA_TEMPLATE) --framework cloudformation --quiet --compact --skip-download
	$(INFRA_TOOLS)/bin/python infra/check_policies.py $(INFRA_TEMPLATE)

# make infra STACK=optuna-hpo INFRA_PARAMS="SourceLocation=https://github.com/OWNER/REPO.git"
infra: install
	$(AWS) cloudformation deploy --stack-name $(STACK) --template-file $(INFRA_TEMPLATE) \
		--capabilities CAPABILITY_IAM CAPABILITY_AUTO_EXPAND --region $(INFRA_REGION) \
		--parameter-overrides S3PrefixListId=$$($(AWS) ec2 describe-managed-prefix-lists --region $(INFRA_REGION) \
			--filters Name=prefix-list-name,Values=com.amazonaws.$(INFRA_REGION).s3 \
			--query 'PrefixLists[0].PrefixListId' --output text) $(INFRA_PARAMS)
	$(AWS) cloudformation describe-stacks --stack-name $(STACK) --region $(INFRA_REGION) \
		--query 'Stacks[0].Outputs' --output table
