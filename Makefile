# The project's checks. `make check` is the README's test command and what CI runs.
PYTHON ?= python

.PHONY: check lint typecheck test bench format

check: lint typecheck test

lint:
	$(PYTHON) -m ruff check src tests benchmarks
	$(PYTHON) -m ruff format --check src tests benchmarks

typecheck:
	$(PYTHON) -m mypy src

# pytest exits 5 when it collects no test: that is a failure here, not a pass.
test:
	$(PYTHON) -m pytest -q; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

format:
	$(PYTHON) -m ruff format src tests benchmarks
	$(PYTHON) -m ruff check --fix src tests benchmarks

bench:
	$(PYTHON) benchmarks/bench_fit.py
