PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# `make demo` installs the core and the demo's one extra; `make test` everything.
DEMO_STAMP := $(VENV)/.installed-demo
ALL_STAMP := $(VENV)/.installed-all

.PHONY: demo test bench lint install clean

$(PY):
	$(PYTHON) -m venv $(VENV) || python3 -m venv $(VENV)

# torch first, as the CPU build constraints.txt pins (another version pulls multi-GB CUDA wheels)
$(DEMO_STAMP): $(PY) pyproject.toml constraints.txt
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[demo]"
	touch $@

$(ALL_STAMP): $(DEMO_STAMP)
	$(PIP) install -q -c constraints.txt -e ".[demo,attacks,ray,dev]"
	touch $@

install: $(ALL_STAMP)

demo: $(DEMO_STAMP)
	$(VENV)/bin/nnslicer demo

test: $(ALL_STAMP)
	$(PY) -m pytest -q

bench: $(ALL_STAMP)
	$(PY) benchmarks/run.py

lint: $(ALL_STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
