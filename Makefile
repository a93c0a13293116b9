# Two commands on a fresh machine: `make run` (the daemon on config.yaml) and
# `make test`. Both build .venv, install the package and fetch the models first.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
EDGE   := $(BIN)/edge
STAMP  := $(VENV)/.installed

# A Raspberry Pi's camera stack (picamera2, libcamera) comes from apt and is
# built against NumPy 1.x: there the venv must see the system packages and
# stay on numpy<2. Detected by the Pi's device-tree model or an importable
# system picamera2.
ON_PI := $(shell { grep -qs "Raspberry Pi" /proc/device-tree/model || \
                   $(PYTHON) -c "import picamera2" ; } >/dev/null 2>&1 && echo 1)
ifeq ($(ON_PI),1)
VENV_FLAGS  := --system-site-packages
CONSTRAINTS := numpy<2
else
VENV_FLAGS  :=
CONSTRAINTS :=
endif

.PHONY: help venv models system-deps test-deps run test lint bench clean reference-venv

help:
	@echo "make run    - start the door daemon on config.yaml"
	@echo "make test   - install everything and run the tests"
	@echo "make bench  - edge bench (speed and memory)"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@echo "$(CONSTRAINTS)" > $(VENV)/constraints.txt
	$(BIN)/pip install --quiet -c $(VENV)/constraints.txt -e '.[test,plot,metrics,mqtt,osdp,fleet,console]'
	@touch $@

venv: $(STAMP)

# mosquitto is the broker the MQTT tests start, chromium + chromium-driver the
# browser the console's tests drive (installed when missing and we are root);
# only make test needs them: a door never needs a broker or a browser of its own.
test-deps:
	@if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing mosquitto (for the MQTT tests)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto >/dev/null; \
	  else \
	    echo "warning: mosquitto is missing, the MQTT tests are skipped (sudo apt-get install mosquitto)"; \
	  fi; \
	fi
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium and chromium-driver (for the console's browser tests)"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
	      install -y -qq chromium chromium-driver >/dev/null; \
	  else \
	    echo "warning: chromium is missing, the console's browser tests are skipped (sudo apt-get install chromium chromium-driver)"; \
	  fi; \
	fi

# PostgreSQL is the fleet's central store; the fleet tests start a real server of
# their own (tests/pg.py: initdb in a temporary folder). Installed when missing
# and we are root; a door never needs a server of its own.
	@if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing postgresql (for the fleet tests)"; \
	    apt-get -o DPkg::Lock::Timeout=600 update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq postgresql >/dev/null; \
	  else \
	    echo "error: PostgreSQL is missing and the fleet tests need it (sudo apt-get install postgresql)"; exit 1; \
	  fi; \
	fi

# espeak-ng speaks the greeting; installed when missing and we are root.
system-deps:
	@if ! command -v espeak-ng >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing espeak-ng"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null; \
	  else \
	    echo "warning: espeak-ng is missing; install it with: sudo apt-get install espeak-ng"; \
	  fi; \
	fi

# The liveness and SFace models are built from their upstream files by our
# converters, which need PyTorch: their own venv, made only when a file must be built.
CONVERT_VENV := .venv-convert
CONVERT_STAMP := $(CONVERT_VENV)/.installed

$(CONVERT_STAMP): scripts/convert-requirements.txt
	$(PYTHON) -m venv $(CONVERT_VENV)
	$(CONVERT_VENV)/bin/pip install --quiet --upgrade pip
	$(CONVERT_VENV)/bin/pip install --quiet -r scripts/convert-requirements.txt
	@touch $@

models: $(STAMP)
	@$(EDGE) models fetch --skip-build || { \
	  echo "building the converted models (scripts/convert_*.py, once)"; \
	  $(MAKE) --no-print-directory $(CONVERT_STAMP) && \
	  EDGE_CONVERT_PYTHON=$(abspath $(CONVERT_VENV))/bin/python $(EDGE) models fetch; }

# OpenCV 4.11 for tests/test_sface.py's reference (SFace's ONNX through
# cv2.FaceRecognizerSF): the project's OpenCV 5.0 refuses that file.
REFERENCE_VENV := .venv-reference
REFERENCE_STAMP := $(REFERENCE_VENV)/.installed

$(REFERENCE_STAMP): tests/reference-requirements.txt
	$(PYTHON) -m venv $(REFERENCE_VENV)
	$(REFERENCE_VENV)/bin/pip install --quiet -r tests/reference-requirements.txt
	@touch $@

reference-venv: $(REFERENCE_STAMP)

run: $(STAMP) system-deps models
	$(EDGE) run

lint: $(STAMP)
	$(BIN)/ruff check edge tests scripts
	$(BIN)/mypy edge

test: $(STAMP) system-deps test-deps models lint $(REFERENCE_STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP) models
	$(EDGE) bench

clean:
	rm -rf $(VENV) $(CONVERT_VENV) $(REFERENCE_VENV) .pytest_cache .ruff_cache
