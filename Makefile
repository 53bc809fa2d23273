# loglines: the two commands of the README, and a few helpers.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(VENV)/bin/pip

.PHONY: demo test install bench lint clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

## make demo: install, then run the demo pipeline under supervisord in the foreground
demo: install
	$(VENV)/bin/loglines -c loglines.cfg init
	$(VENV)/bin/loglines -c loglines.cfg check
	@echo "Output: var/out/downloads.ndjson and var/out/other.log. Ctrl-C stops everything."
	$(VENV)/bin/loglines -c loglines.cfg up --foreground

## make test: install what the tests need (Prometheus, Chromium and valgrind from Debian when missing)
## and run the whole suite
TEST_PACKAGES := prometheus chromium valgrind
test: install
	@dpkg -s $(TEST_PACKAGES) >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(TEST_PACKAGES); }
	$(PY) -m pytest -ra $(PYTEST_ARGS)

## make bench: every benchmark beside its peers (rsyslog from Debian, installed if missing;
## syslog-ng from Debian, which conflicts with rsyslog: downloaded and unpacked into bench/.peers/;
## wrk for the HTTP ingest, valgrind to count the parser's instructions)
BENCH_PACKAGES := rsyslog rsyslog-hiredis rsyslog-elasticsearch wrk valgrind
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
bench: install
	@dpkg -s $(BENCH_PACKAGES) >/dev/null 2>&1 || { $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $(BENCH_PACKAGES); }
	$(PIP) install --quiet -e '.[test,bench]'
	$(PY) -m bench.syslogng install
	$(PY) -m bench.run

## make lint: ruff over everything, mypy (strict) over pipeline/
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean:
	rm -rf var supervisord.conf workers_available/*.conf workers_enabled/*.conf .pytest_cache
