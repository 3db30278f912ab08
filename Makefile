# Two entry points: `make run` (the pipeline on the embedded default) and `make test`.
# Both create .venv on first use: the CPU build of torch goes in first, so nothing pulls a CUDA build.
# On a GPU machine: `make run TORCH=torch` (or install the CUDA wheel you want into .venv first).
VENV ?= .venv
TORCH ?= torch==2.13.0
PYTHON ?= python3
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: install run adopt test test-quick

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --upgrade pip
	$(VENV)/bin/python -m pip install "$(TORCH)"
	$(VENV)/bin/python -m pip install -e ".[dev]"
	touch $@

install: $(VENV)/.installed

run: install
	snakemake --cores all --resources gpu=1

# After a run by one engine, record its outputs for the other, so that neither reruns them (README
# "Moving between engines"): DVC's in Snakemake's metadata (`snakemake --touch`) when `dvc status` is
# clean, else Snakemake's in dvc.lock (`dvc commit`) when Snakemake would run nothing and knows how
# every output was made. Otherwise an output is stale for both engines: it refuses and changes nothing.
adopt:
	@if [ -f dvc.lock ] && [ "$$(dvc status --json)" = "{}" ]; then \
	  echo "make adopt: dvc status is clean: recording DVC's outputs for Snakemake (snakemake --touch)"; \
	  snakemake --touch --forceall --cores 1 --quiet all; \
	elif plan="$$(snakemake -n --cores 1 2>&1)" && echo "$$plan" | grep -q "^Nothing to be done" \
	    && ! echo "$$plan" | grep -q "missing provenance"; then \
	  echo "make adopt: Snakemake's outputs are up to date: recording them in dvc.lock (dvc commit)"; \
	  dvc commit --force --no-relink --quiet && dvc status; \
	else \
	  echo "make adopt: refused: outputs are stale for both engines (dvc status is not clean; Snakemake" \
	    "would rerun jobs, or has no record of how some outputs were made); run make run or dvc repro" \
	    "first. snakemake -n:" >&2; \
	  echo "$$plan" | grep -E "^(rule |    reason: |[0-9]+ jobs have missing|Rules with missing)" >&2; exit 1; \
	fi

# pytest exits 5 when it collects nothing: that must fail, not pass silently.
# TEST_WORKERS pytest-xdist processes, one test file each at a time (module fixtures are built once).
TEST_WORKERS ?= 2
test: install
	pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

test-quick: install
	$(MAKE) test PYTEST_ARGS="-m 'not slow'"
