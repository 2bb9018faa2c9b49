# Quickstart: `make demo` and `make test`. Each creates .venv if missing and installs
# the package with the tested torch/torchvision pair (constraints.txt) first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo demo-camvid test test-all clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python setup.py constraints.txt
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/labelreg demo

# the demo on CamVid's real street scenes (read from ../shared/data/camvid, or CAMVID=<folder>)
CAMVID ?= ../shared/data/camvid
demo-camvid: $(STAMP)
	$(BIN)/labelreg demo --dataset camvid --data $(CAMVID)

test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile  # one worker per core; a test file stays on one worker

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadfile -m "slow or not slow"

clean:
	rm -rf $(VENV) runs/demo data/synthetic
