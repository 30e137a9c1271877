# Two commands on a fresh Debian machine with PostgreSQL and Redis running locally:
#   make run    set up (venv, install, database, migrate) and start API, worker and beat
#   make test   run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/ticketing
export DATABASE_URL

.PHONY: run test setup migrate bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

setup: $(VENV)/.installed

migrate: setup
	$(BIN)/python -m core.dbcreate
	DJANGO_DEBUG=$${DJANGO_DEBUG:-1} $(BIN)/python manage.py migrate --noinput

# Every API and worker process writes its metrics here; /metrics adds them up.
METRICS_DIR ?= /tmp/ticketing-metrics

run: migrate
	rm -rf $(METRICS_DIR) && mkdir -p $(METRICS_DIR)
	PROMETHEUS_MULTIPROC_DIR=$(METRICS_DIR) DJANGO_DEBUG=$${DJANGO_DEBUG:-1} \
		$(BIN)/honcho start -f Procfile

test: setup
	$(BIN)/pytest

bench: migrate
	$(BIN)/python -m loadtests.bench

clean:
	rm -rf $(VENV)

# A flash sale under Locust against a production-mode stack of its own (DJANGO_DEBUG=0,
# gunicorn.conf.py, a Celery worker, throttles raised), then reports in loadtest-reports/.
# Options: make loadtest LOADTEST_ARGS="--tickets 10000 --login" (python -m loadtests.run --help)
.PHONY: loadtest
loadtest: setup
	$(BIN)/python -m loadtests.run $(LOADTEST_ARGS)
