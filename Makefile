# `make test` and `make demo` set up .venv/ themselves: a fresh clone needs nothing else.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.mmlora-installed

.PHONY: install test demo clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the dependency list changes (editable install: code edits need nothing).
$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest -q -p no:cacheprovider tests

demo: install
	bash scripts/demo.sh

clean:
	rm -rf $(VENV) build *.egg-info
