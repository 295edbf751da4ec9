# Both entry points create .venv and install on a fresh machine; re-running is fast
# because installation is skipped while the stamp is newer than pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sklrp-installed
DOCSTAMP := $(VENV)/.sklrp-docs-installed
# torch is pinned here: an open range would pull a multi-GB CUDA build.
TORCH := torch==2.13.0

.PHONY: test demo docs install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest

demo: $(STAMP)
	MPLBACKEND=Agg $(BIN)/python -m sklrp audit --demo --out audit-report

$(DOCSTAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install -q $(TORCH) -e '.[docs]'
	touch $(DOCSTAMP)

# Sphinx with warnings as errors; the gallery pages are rendered without running the examples
# (tests/test_examples.py runs them).
docs: $(DOCSTAMP)
	MPLBACKEND=Agg $(BIN)/python -m sphinx -W --keep-going -q -b html doc doc/_build/html

clean:
	rm -rf $(VENV) build *.egg-info audit-report doc/_build doc/auto_examples doc/generated
