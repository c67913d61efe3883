# The README's two commands: `make demo` (set up + the main job) and `make test`.
# Both are idempotent: the virtual environment and system packages are installed once.
VENV   ?= .venv
PY     := $(VENV)/bin/python
SALIQ  := $(VENV)/bin/saliq
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEBS   := dataset-fashion-mnist chromium postgresql docker-compose

.PHONY: setup system demo test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch 2.14.1 / torchvision 0.29.1 are served from the local disk on our machines
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[test]'
	touch $@

system:
	@missing=$$(for p in $(DEBS); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  $(SUDO) apt-get install -y -q $$missing >/dev/null || \
	  { $(SUDO) apt-get update -q >/dev/null && $(SUDO) apt-get install -y -q $$missing >/dev/null; }; \
	fi

demo: setup system
	$(SALIQ) sweep run sweeps/quick.yaml --restart

test: setup system lint
	$(PY) -m pytest -q

lint: setup
	$(VENV)/bin/ruff check saliq tests bench

bench: setup system
	$(PY) bench/run.py --quick

clean:
	rm -rf saliq-runs saliq-trial .pytest_cache
