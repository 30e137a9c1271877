# On a fresh Debian machine with Python 3.11 (PostgreSQL and Redis installed, or reachable):
#   make run    set up (venv, install, database, migrate), start PostgreSQL/Redis if they
#               are installed but stopped, then the front door (HAProxy), API, worker and beat
#   make demo   an Admin, a buyer and an event on sale, and curl lines to paste
#   make test   the whole test suite;  make lint  ruff (lint + format check)
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/ticketing
export DATABASE_URL

.PHONY: run demo test lint setup services migrate requirements bench clean runtime-smoke

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Development installs the dev file (it includes every runtime pin); the production
# image installs requirements.txt only (see the Dockerfile).
$(VENV)/.installed: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements-dev.txt
	touch $@

setup: $(VENV)/.installed

# PostgreSQL and Redis: started when installed but stopped; one clear line otherwise.
services:
	@scripts/services-up

migrate: services setup
	$(BIN)/python -m core.dbcreate
	DJANGO_DEBUG=$${DJANGO_DEBUG:-1} $(BIN)/python manage.py migrate --noinput

# Every API and worker process writes its metrics here; /metrics adds them up.
METRICS_DIR ?= /tmp/ticketing-metrics

# The front door (HAProxy, deploy/haproxy/haproxy.cfg) answers on :8000 and the API runs
# behind it on API_BEHIND_DOOR, trusting X-Forwarded-For from the door's address only.
# Without HAProxy, the API answers on :8000 itself (scripts/system-packages installs it).
HAPROXY ?= $(shell command -v haproxy || ls /usr/sbin/haproxy 2>/dev/null)
API_BEHIND_DOOR ?= 127.0.0.1:8001

run: migrate
	rm -rf $(METRICS_DIR) && mkdir -p $(METRICS_DIR)
ifneq ($(HAPROXY),)
	PROMETHEUS_MULTIPROC_DIR=$(METRICS_DIR) DJANGO_DEBUG=$${DJANGO_DEBUG:-1} HAPROXY=$(HAPROXY) \
		API_BIND=$(API_BEHIND_DOOR) HAPROXY_API_ADDRESS=$(API_BEHIND_DOOR) \
		DJANGO_TRUSTED_PROXY_ADDRESSES=127.0.0.2 $(BIN)/honcho start -f Procfile
else
	@echo "make run: HAProxy (the front door) is not installed, so the API answers :8000 itself; scripts/system-packages installs it"
	PROMETHEUS_MULTIPROC_DIR=$(METRICS_DIR) DJANGO_DEBUG=$${DJANGO_DEBUG:-1} \
		$(BIN)/honcho start -f Procfile api worker beat
endif

demo: migrate
	DJANGO_DEBUG=$${DJANGO_DEBUG:-1} $(BIN)/python manage.py demo

test: services setup
	$(BIN)/pytest

# The product from requirements.txt alone, as the image runs it (also run by .ci/run).
runtime-smoke: services
	scripts/runtime-smoke

# Seconds: ruff checks the rules chosen in pyproject.toml, then the formatting.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Compile the pins from the hand-written lists (requirements.in, requirements-dev.in).
# Pins already in the .txt files are kept, so adding a package to requirements.in and
# running `make requirements` changes only what the new package needs.
#   make requirements UPGRADE=all           every package to its newest allowed version
#   make requirements UPGRADE="django celery"   those packages only
PIP_COMPILE := CUSTOM_COMPILE_COMMAND="make requirements" $(BIN)/pip-compile --quiet \
	--strip-extras --no-emit-index-url --no-emit-find-links
ifeq ($(UPGRADE),all)
UPGRADE_FLAGS := --upgrade
else
UPGRADE_FLAGS := $(foreach package,$(UPGRADE),--upgrade-package $(package))
endif

requirements: $(BIN)/python
	test -x $(BIN)/pip-compile || $(BIN)/pip install --quiet -r requirements-dev.txt
	$(PIP_COMPILE) $(UPGRADE_FLAGS) --output-file requirements.txt requirements.in
	$(PIP_COMPILE) $(UPGRADE_FLAGS) --output-file requirements-dev.txt requirements-dev.in

bench: migrate
	$(BIN)/python -m loadtests.bench

clean:
	rm -rf $(VENV)

# A flash sale under Locust against a production-mode stack of its own (DJANGO_DEBUG=0,
# the granian API server, a Celery worker, throttles raised), then reports in loadtest-reports/.
# Options: make loadtest LOADTEST_ARGS="--tickets 10000 --login" (python -m loadtests.run --help)
.PHONY: loadtest
loadtest: setup
	$(BIN)/python -m loadtests.run $(LOADTEST_ARGS)
