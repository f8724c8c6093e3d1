# PayStream: `make up` installs and starts the whole pipeline, `make test` tests it.
SHELL := /bin/bash
.DEFAULT_GOAL := help
STACK := python3 -m stack
VENV := .venv/bin

.PHONY: help install up down clean status env test test-unit lint bench profile chaos

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

install: ## install what is missing (apt, Maven Central, PyPI), cached under .cache/
	@bash stack/install.sh

up: install ## install, start every component, print where each listens and a demo merchant key
	@$(STACK) up
	@$(STACK) status >/dev/null || { $(STACK) status; exit 1; }

down: ## stop every process `make up` started, keeping the data
	@$(STACK) down

clean: ## stop everything and remove all data (.stack/)
	@$(STACK) clean

status: ## one line per component; exits 0 only when all are up
	@$(STACK) status

env: ## print `export NAME=value` for every endpoint: eval "$(make -s env)"
	@$(STACK) env

test: ## run the whole suite against the running stack (make up first)
	@$(STACK) status >/dev/null || { echo "the stack is not fully up: run make up"; $(STACK) status; exit 1; }
	@eval "$$($(STACK) env)" && $(VENV)/pytest $(PYTEST_ARGS)

test-unit: ## only the tests that need no running stack
	@$(VENV)/pytest tests/unit

bench: ## API create throughput vs pgbench, and end-to-end pipeline latency (stack up)
	@eval "$$($(STACK) env)" && for b in bench/*_bench.py; do echo "== $$b"; b=$${b#bench/}; $(VENV)/python -m bench.$${b%.py} || exit 1; done

profile: ## where the worker's CPU goes: approved payments at 200/s, py-spy flame graph + layers (stack up)
	@eval "$$($(STACK) env)" && $(VENV)/python -m bench.stripe_bench --phases free --free-seconds 45 --profile 25 $(PROFILE_ARGS)

chaos: ## kill -9 each component under load, make up after each, check the money (stack up)
	@$(VENV)/python -m stack.chaos $(CHAOS_ARGS)

lint: ## ruff and mypy
	@$(VENV)/ruff check . && $(VENV)/mypy

.PHONY: kafka-ui
kafka-ui: ## Kafka UI in the terminal (kaskade): topics, or TOPIC=name for its records
	@stack/kafka-ui $(TOPIC)
