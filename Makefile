# vitspeed: the two commands are `make book` and `make test`.
# Both create the locked environment in .venv first (needs only python3 >= 3.11 and the package index).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV_VERSION := 0.13.8
PRESET ?= cpu
export MPLBACKEND := Agg
export PYDEVD_DISABLE_FILE_VALIDATION := 1

.PHONY: book test env unit nbval notebooks clean lock test-oldest lock-oldest

env: $(VENV)/.stamp

$(VENV)/.stamp: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q "uv==$(UV_VERSION)"
	$(BIN)/uv pip install -q --python $(BIN)/python -r requirements.lock
	$(BIN)/uv pip install -q --python $(BIN)/python --no-deps -e .
	touch $@

## make book: execute every notebook with papermill (preset $(PRESET), results to data/), then build HTML.
book: env
	$(BIN)/vitspeed run --preset $(PRESET)
	$(BIN)/jupyter-book build . -W --keep-going
	@echo "Book: _build/html/index.html"

## make test: unit tests, then nbval over the notebooks with their CPU-sized defaults.
test: env unit nbval

unit: env
	$(BIN)/python -m pytest tests -q

# Notebook runs under nbval write their results to a scratch folder, not to the committed data/.
nbval: env
	VITSPEED_RESULTS_DIR=$$(mktemp -d) $(BIN)/python -m pytest --nbval-lax notebooks -q -p no:cacheprovider

## make notebooks: re-execute the notebook sources in place (defaults), keeping only checked outputs.
notebooks: env
	$(BIN)/python tools/refresh_notebooks.py notebooks/*.ipynb

lock:
	bash tools/lock.sh

## make test-oldest: the unit tests against the oldest versions pyproject.toml allows (requirements-oldest.txt),
## in their own environment .venv-oldest. Not part of `make test`.
OLDEST := .venv-oldest

test-oldest: $(OLDEST)/.stamp
	$(OLDEST)/bin/python -m pytest tests -q -p no:cacheprovider

$(OLDEST)/.stamp: requirements-oldest.txt pyproject.toml
	rm -rf $(OLDEST)
	$(PYTHON) -m venv $(OLDEST)
	$(OLDEST)/bin/python -m pip install -q "uv==$(UV_VERSION)"
	$(OLDEST)/bin/uv pip install -q --python $(OLDEST)/bin/python -r requirements-oldest.txt
	$(OLDEST)/bin/uv pip install -q --python $(OLDEST)/bin/python --no-deps -e .
	touch $@

lock-oldest:
	bash tools/lock_oldest.sh

clean:
	rm -rf _build book/chapters
