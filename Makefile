# Two entry points: `make run` (the pipeline on the embedded default) and `make test`.
# Both create .venv on first use: the CPU build of torch goes in first, so nothing pulls a CUDA build.
# On a GPU machine: `make run TORCH=torch` (or install the CUDA wheel you want into .venv first).
VENV ?= .venv
TORCH ?= torch==2.13.0
PYTHON ?= python3
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install run test test-quick

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --upgrade pip
	$(VENV)/bin/python -m pip install "$(TORCH)"
	$(VENV)/bin/python -m pip install -e ".[dev]"
	touch $@

install: $(VENV)/.installed

run: install
	snakemake --cores all --resources gpu=1

# pytest exits 5 when it collects nothing: that must fail, not pass silently.
# TEST_WORKERS pytest-xdist processes, one test file each at a time (module fixtures are built once).
TEST_WORKERS ?= 2
test: install
	pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-quick: install
	$(MAKE) test PYTEST_ARGS="-m 'not slow'"
