# Both entry points create .venv and install on a fresh machine; re-running is fast
# because installation is skipped while the stamp is newer than pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.sklrp-installed
DOCSTAMP := $(VENV)/.sklrp-docs-installed
# torch is pinned here: an open range would pull a multi-GB CUDA build.
TORCH := torch==2.13.0

.PHONY: test demo docs install clean lint

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

test: $(STAMP) install-vlfeat
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/python -m ruff check sklrp tests benchmarks examples

demo: $(STAMP)
	MPLBACKEND=Agg $(BIN)/python -m sklrp audit --demo --out audit-report

$(DOCSTAMP): pyproject.toml $(STAMP)
	$(BIN)/python -m pip install -q $(TORCH) -e '.[docs]'
	touch $(DOCSTAMP)

# Sphinx with warnings as errors; the gallery pages are rendered without running the examples
# (tests/test_examples.py runs them).
docs: $(DOCSTAMP)
	MPLBACKEND=Agg $(BIN)/python -m sphinx -W --keep-going -q -b html doc doc/_build/html

# Peer comparison: zennit imports torchvision, and PyPI's torchvision only imports beside
# torch 2.14.1 (a CUDA build, ~5.5 GB), so zennit lives in its own venv, which also serves the
# tests on torchvision's resnet18 / densenet121. Creating it takes ~3.5 min from local disk.
# sklrp is installed into it without deps (its torch pin would conflict).
PEERS := .venv-peers
PEERSTAMP := $(PEERS)/.sklrp-peers-installed
PEER_TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: compare

$(PEERSTAMP): pyproject.toml
	test -x $(PEERS)/bin/python || $(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install -q --upgrade pip
	$(PEERS)/bin/python -m pip install -q $(PEER_TORCH)
	$(PEERS)/bin/python -m pip install -q zennit==0.5.1 pytest skorch numpy scipy scikit-learn matplotlib tqdm joblib
	$(PEERS)/bin/python -m pip install -q --no-deps -e .
	touch $(PEERSTAMP)

# SKLRP_REQUIRE_PEERS=1 turns the test's importorskip into a hard import: here zennit must be present.
.PHONY: peers compare-test
peers: $(PEERSTAMP)

compare-test: $(PEERSTAMP)
	SKLRP_REQUIRE_PEERS=1 $(PEERS)/bin/python -m pytest -p no:cacheprovider tests/test_nn_zennit.py -q

# time per batch and agreement against zennit: the thesis composite, every named composite,
# an unmodified torchvision resnet18
compare: compare-test
	OMP_NUM_THREADS=2 $(PEERS)/bin/python benchmarks/bench_nn.py --quick

# AOPC vs quantus.RegionPerturbation (quantus installs beside the peers' torch without changing it)
.PHONY: compare-aopc
compare-aopc: $(PEERSTAMP)
	$(PEERS)/bin/python -m pip install -q quantus==0.6.0 $(PEER_TORCH)
	OMP_NUM_THREADS=2 $(PEERS)/bin/python benchmarks/bench_aopc.py --quantus --models mlp,cnn --n 128 --steps 20

# cyvlfeat (the real VLFeat; optional extra "vlfeat") for DenseSIFT(backend="vlfeat") and the Fisher-vector
# cross-check. It is an sdist that builds against libvlfeat: where apt-get exists and we are root (CI),
# install libvlfeat-dev first. Skipped in ~0.3 s when cyvlfeat imports; never fails the build: without
# it DenseSIFT uses its numpy backend and the VLFeat tests are skipped (and say so).
.PHONY: install-vlfeat
install-vlfeat: $(STAMP)
	@$(BIN)/python -c "import cyvlfeat" 2>/dev/null || { \
	  if [ ! -e /usr/include/vl/generic.h ] && command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	    apt-get install -y -q libvlfeat-dev >/dev/null 2>&1 || \
	    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q libvlfeat-dev >/dev/null 2>&1; } || true; \
	  fi; \
	  if [ -e /usr/include/vl/generic.h ]; then \
	    { $(BIN)/python -m pip install -q cython setuptools wheel numpy $(TORCH) && \
	      $(BIN)/python -m pip install -q --no-build-isolation cyvlfeat==0.7.1 $(TORCH); } || \
	    echo "cyvlfeat build failed: VLFeat backend and cross-checks are skipped"; \
	  else echo "libvlfeat-dev not available: DenseSIFT uses its numpy backend, VLFeat cross-checks are skipped"; fi; }

clean:
	rm -rf $(VENV) build *.egg-info audit-report doc/_build doc/auto_examples doc/generated
