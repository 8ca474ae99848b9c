# `make test` and `make demo` set up everything they need on a fresh machine:
# the virtual environment, the project and its Python packages, and Debian packages.
VENV ?= .venv
PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
DEBIAN_PACKAGES := espeak-ng chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: test demo dagster mlflow lint system-packages clean

# Debian packages first: some Python packages (webrtcvad, via resemblyzer) compile on install.
$(INSTALLED): pyproject.toml | system-packages
	test -x $(PYTHON) || python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	$(PYTHON) -m pip install --progress-bar off -e '.[dev]'
	touch $(INSTALLED)

system-packages:
	@missing=""; for p in $(DEBIAN_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq $$missing; fi

test: $(INSTALLED) system-packages
	$(PYTHON) -m pytest

# The main job on the offline defaults: generated corpus -> speech -> codec -> codes ->
# tokenizer, voices, shards and the DuckDB catalog -> every stage of the tiny plan.
demo: $(INSTALLED) system-packages
	DAGSTER_HOME=$(CURDIR)/dagster_home $(PYTHON) -m pipelines.run --size small --plan tiny

# The Dagster UI over the same instance `make demo` writes to (http://localhost:3000).
dagster: $(INSTALLED)
	DAGSTER_HOME=$(CURDIR)/dagster_home $(VENV)/bin/dagster dev

# The MLflow UI over the embedded tracking store the training runs write to.
mlflow: $(INSTALLED)
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/assets_store/mlflow/mlflow.db \
	  --host 127.0.0.1 --port 5000

lint: $(INSTALLED)
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache
