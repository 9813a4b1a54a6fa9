# Two commands on a fresh machine with Python 3.11: `make demo`, `make test`.
# Each creates .venv and installs the pinned stack when it is missing.

PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install demo test bench clean

$(STAMP): setup.py
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11 or run make PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) -m retrieval_tf.demo

# Two workers, each taking whole test files (module fixtures built once).
test: $(STAMP)
	$(PY) -m pytest -q -n 2 --dist loadfile tests

bench: $(STAMP)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m benchmarks.baselines
	$(PY) -m benchmarks.pipeline
	$(PY) -m benchmarks.ann
	$(PY) -m benchmarks.scan_paths
	$(PY) -m benchmarks.index_build
	$(PY) -m benchmarks.poeem
	$(PY) -m benchmarks.poeem --figures
	$(PY) -m benchmarks.poeem_indexing
	$(PY) -m benchmarks.dr --part=table
	$(PY) -m benchmarks.dr --part=sensitivity
	$(PY) -m benchmarks.dr --part=timing
	$(PY) -m benchmarks.pdn
	$(PY) -m benchmarks.dpsr
	$(PY) -m benchmarks.mgdspr
	$(PY) -m benchmarks.mgdspr --part=similarity --reuse
	$(PY) -m benchmarks.mgdspr --part=real --datasets=crowdflower,amazon-beauty,bestbuy

clean:
	rm -rf $(VENV) runs .pytest_cache
