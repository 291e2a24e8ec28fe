# bids-syncact developer targets. Needs only Python 3.10+ and make (npm for test-integration).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NPM_PREFIX ?= .cache/npm
BIDS_VALIDATOR_NPM ?= bids-validator@1.15.0
PIP := $(BIN)/python -m pip --disable-pip-version-check
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: install demo test test-integration test-container image podman lint format boutiques \
	clean chromium slurm

install: $(STAMP)

# DESIGN.md section 7: torch is not pinned; torchvision>0.28 brings the torch it was built for.
$(STAMP): pyproject.toml bids_syncact/_version.py
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip 2> >(grep -v '^WARNING: Location' >&2)
	$(PIP) install --quiet -e '.[dev]' 2> >(grep -v '^WARNING: Location' >&2)
	touch $@

demo: $(STAMP)
	$(BIN)/bids-syncact-demo demo

lint: $(STAMP)
	$(BIN)/ruff check bids_syncact tests
	$(BIN)/ruff format --check bids_syncact tests
	$(BIN)/lint-imports --no-cache
	$(BIN)/codespell bids_syncact tests README.md
	$(BIN)/hadolint Dockerfile
	bash -n scripts/image.sh scripts/podman-base.sh scripts/install.sh

# pytest exits 5 when it collects nothing: make fails then too.
test: lint
	$(BIN)/pytest -m 'not integration and not slow and not container'

$(NPM_PREFIX)/node_modules/.bin/bids-validator:
	npm install --prefix $(NPM_PREFIX) --no-audit --no-fund --loglevel=error $(BIDS_VALIDATOR_NPM)

test-integration: $(STAMP) $(NPM_PREFIX)/node_modules/.bin/bids-validator chromium slurm
	PATH="$(CURDIR)/$(NPM_PREFIX)/node_modules/.bin:$$PATH" \
		$(BIN)/pytest -m '(integration or slow) and not container'

# The image (DESIGN.md section 7): docker when `docker info` works, else podman (make podman
# installs Debian's). The published image has CPU torch and fetches weights and TemplateFlow
# files; where neither the PyTorch index nor the downloads are reachable (these machines):
#   make image TORCH_VARIANT=pypi FETCH_RESOURCES=0
# scripts/image.sh lists every setting (ENGINE, BASE_IMAGE, PODMAN_OPTS, IMAGE_DISK_GB, ...).
TORCH_VARIANT ?= cpu
FETCH_RESOURCES ?= 1
export TORCH_VARIANT FETCH_RESOURCES
image:
	scripts/image.sh

# Debian's podman, runc and debootstrap, when there is no working docker engine.
podman:
	@{ command -v docker >/dev/null && docker info >/dev/null 2>&1; } || \
	{ PATH="$$PATH:/usr/sbin:/sbin"; command -v podman && command -v runc && \
		command -v debootstrap; } >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo 'sudo -n' ); \
		$$SUDO apt-get update -qq && \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends podman runc debootstrap; } || { \
		echo "make: no docker engine, and Debian's podman, runc and debootstrap cannot be" \
			"installed (needs root or passwordless sudo)" >&2; \
		exit 1; }

# Builds the image, then runs the demo in it (read-only, uid 1000, no network) and with the pip
# install, and compares the outputs (tests/test_container.py; needs root: skipped without it,
# except under CI=true). Timings and differences go to .cache/container-test.json.
test-container: $(STAMP) podman
	$(MAKE) image
	$(BIN)/pytest -m container tests/test_container.py

# Debian's chromium for the reports' browser test (playwright drives it; it downloads nothing).
chromium:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo 'sudo -n' ); \
		$$SUDO apt-get update -qq && \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends chromium; } || { \
		echo "make: cannot install Debian's chromium (needs root or passwordless sudo):" \
			"install it (apt-get install chromium), then rerun make test-integration" >&2; \
		exit 1; }

# Debian's SLURM and munge for the cluster test (tests/test_slurm.py starts its own daemons,
# as root; without root the test is skipped, so a failed install only warns, except in CI).
slurm:
	@PATH="$$PATH:/usr/sbin:/sbin"; \
	{ command -v slurmctld && command -v slurmd && command -v munged; } >/dev/null || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo 'sudo -n' ); \
		$$SUDO apt-get update -qq && \
		$$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends slurm-wlm munge; } || { \
		echo "make: cannot install Debian's slurm-wlm and munge (needs root or passwordless" \
			"sudo): the SLURM test will be skipped" >&2; \
		[ "$$CI" != true ]; }

# boutiques.json is made from the argument parser; a test fails when it is stale.
boutiques: $(STAMP)
	$(BIN)/python -m bids_syncact.cli.boutiques boutiques.json

format: $(STAMP)
	$(BIN)/ruff check --fix bids_syncact tests
	$(BIN)/ruff format bids_syncact tests

clean:
	rm -rf $(VENV) .cache demo demo-work work .pytest_cache .ruff_cache
