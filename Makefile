# Two entry points for a fresh machine:  `make run` (the app) and `make test` (the tests).
# Both create .venv and install everything on first use; later calls only check a stamp.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.faceapp-installed
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
VENV_NEED_KB := 6800000

.PHONY: run test lint setup system-deps clean-venv bench

setup: $(STAMP)

# QtMultimedia needs libpulse0, Qt's xcb/offscreen plugins need a few X/GL libraries;
# postgresql-15 (Debian's, without pgvector) is the second PostgreSQL the tests start.
system-deps:
	@missing=""; for p in libpulse0 libegl1 libgl1 libxkbcommon0 libxkbcommon-x11-0 libfontconfig1 libdbus-1-3 libglib2.0-0 \
	    libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-shape0 libxcb-xkb1 \
	    postgresql-15 postgresql-client-15; do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = "0" ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq || true; \
	    for p in $$missing; do DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$p >/dev/null 2>&1 \
	      || echo "warning: could not install $$p (Qt camera/GUI may not work)"; done; \
	  else echo "warning: missing Debian packages:$$missing (run as root or install them)"; fi; \
	fi

$(STAMP): pyproject.toml Makefile
	@$(MAKE) --no-print-directory system-deps
	@# the venv takes about 6.5 GB (torch's x86_64 wheel brings CUDA libraries): say so up front
	@# rather than leave pip's "No space left on device" halfway through the install
	@free_kb=$$(df -Pk . | awk 'NR==2 {print $$4}'); \
	if [ ! -d $(VENV)/lib ] && [ -n "$$free_kb" ] && [ "$$free_kb" -lt $(VENV_NEED_KB) ]; then \
	  echo "warning: $$((free_kb / 1024)) MiB free here; .venv needs about $$(($(VENV_NEED_KB) / 1024)) MiB" \
	       "(free some disk space if the install below fails)"; fi
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, so nothing below can pull another build or downgrade it
	$(PIP) install -q $(TORCH_PINS)
	# facenet-pytorch 2.6.0 pins torch<2.3, numpy<2, Pillow<10.3; its code runs on current
	# versions, so it is installed without its pins (the MTCNN weights ship in its wheel)
	$(PIP) install -q --no-deps facenet-pytorch==2.6.0
	$(PIP) install -q -e '.[test]' $(TORCH_PINS)
	@touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/faceapp gui $(ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check faceapp tests
	$(VENV)/bin/lint-imports

test: $(STAMP)
	$(VENV)/bin/ruff check faceapp tests
	$(VENV)/bin/lint-imports
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(VENV)/bin/faceapp bench all --json

clean-venv:
	rm -rf $(VENV)
