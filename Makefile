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

.PHONY: help venv models system-deps test-deps apt-deps run test test-ready lint bench clean \
        reference-venv test-arm64

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

# mosquitto is the broker the MQTT tests start, sshd (openssh-server) the one
# the `edge models fetch --from user@host:path` tests start, each unprivileged
# on its own port, chromium + chromium-driver the browser the console's tests
# drive (installed when missing and we are root); only make test needs them:
# a door never needs a broker, an sshd or a browser of its own.
test-deps:
	@for pair in mosquitto:mosquitto sshd:openssh-server; do \
	  prog=$${pair%%:*}; pkg=$${pair#*:}; \
	  if ! command -v $$prog >/dev/null 2>&1 && [ ! -x /usr/sbin/$$prog ]; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	      echo "installing $$pkg (for the tests)"; \
	      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$pkg >/dev/null; \
	    else \
	      echo "warning: $$prog is missing, its tests fail (sudo apt-get install $$pkg)"; \
	    fi; \
	  fi; \
	done
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

# Both apt steps, one after the other (dpkg takes one install at a time).
apt-deps:
	@$(MAKE) --no-print-directory system-deps
	@$(MAKE) --no-print-directory test-deps

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
# --no-compile here and in .venv-reference: they run a few scripts once, and
# byte-compiling all of PyTorch and JAX up front costs more than those runs use.
CONVERT_VENV := .venv-convert
CONVERT_STAMP := $(CONVERT_VENV)/.installed

$(CONVERT_STAMP): scripts/convert-requirements.txt
	$(PYTHON) -m venv $(CONVERT_VENV)
	$(CONVERT_VENV)/bin/pip install --quiet --upgrade pip
	$(CONVERT_VENV)/bin/pip install --quiet --no-compile -r scripts/convert-requirements.txt
	@touch $@

# The converters do not install on aarch64 (litert-converter 0.5.0 publishes an
# x86_64 wheel only, no aarch64 one nor a source archive): a Pi copies the
# models from another machine instead.
# The files our converters build: when one is missing (a fresh clone), the
# converter venv is a prerequisite, so `make -j` installs it beside .venv.
CONVERTED := models/sface.tflite models/minifasnet_v2.tflite models/minifasnet_v1se.tflite
NEED_CONVERT := $(WITH_CONVERT)$(filter-out $(wildcard $(CONVERTED)),$(CONVERTED))

models: $(STAMP) $(if $(NEED_CONVERT),$(CONVERT_STAMP))
	@$(EDGE) models fetch --skip-build || { \
	  if [ "$$(uname -m)" = aarch64 ]; then \
	    echo "the converted models cannot be built on aarch64 (no litert-converter wheel):"; \
	    echo "copy them: $(EDGE) models fetch --from USER@OTHER_DOOR:PATH/models (or a USB stick's folder)"; \
	    exit 1; \
	  fi; \
	  echo "building the converted models (scripts/convert_*.py, once)"; \
	  $(MAKE) --no-print-directory $(CONVERT_STAMP) && \
	  EDGE_CONVERT_PYTHON=$(abspath $(CONVERT_VENV))/bin/python $(EDGE) models fetch; }

# OpenCV 4.11 for tests/test_sface.py's reference (SFace's ONNX through
# cv2.FaceRecognizerSF): the project's OpenCV 5.0 refuses that file.
REFERENCE_VENV := .venv-reference
REFERENCE_STAMP := $(REFERENCE_VENV)/.installed

$(REFERENCE_STAMP): tests/reference-requirements.txt
	$(PYTHON) -m venv $(REFERENCE_VENV)
	$(REFERENCE_VENV)/bin/pip install --quiet --no-compile -r tests/reference-requirements.txt
	@touch $@

reference-venv: $(REFERENCE_STAMP)

run: $(STAMP) system-deps models
	$(EDGE) run

lint: $(STAMP)
	$(BIN)/ruff check edge tests scripts
	$(BIN)/mypy edge

# Everything the tests need, made in parallel: the three venvs install side by
# side (pip is mostly unpacking and compiling, one core each), lint runs while
# the models are built, apt runs once. WITH_CONVERT: the tests also use the
# converter venv (tests/test_spoofeval.py), so models waits for it instead of
# building it itself.
test-ready: $(STAMP) apt-deps models lint $(REFERENCE_STAMP) $(CONVERT_STAMP)

# The tests run on TEST_JOBS pytest-xdist workers (auto: one per core); a
# module whose fixtures are expensive keeps to one worker (xdist_group marks).
TEST_JOBS ?= auto

test:
	@$(MAKE) --no-print-directory -j4 test-ready WITH_CONVERT=1
	$(BIN)/python -m pytest -q -n $(TEST_JOBS) --dist loadgroup

# The install, the models and `pytest -m pi` on an emulated Raspberry Pi (Debian
# bookworm arm64 under qemu-user-static; installs qemu-user-static,
# binfmt-support and debootstrap when missing). Root; ~17 min the first time,
# then the cached system is reused. Not part of make test or CI: too slow.
test-arm64: $(STAMP) models
	scripts/test-arm64.sh

bench: $(STAMP) models
	$(EDGE) bench

clean:
	rm -rf $(VENV) $(CONVERT_VENV) $(REFERENCE_VENV) .pytest_cache .ruff_cache
