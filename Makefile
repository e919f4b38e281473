# Canopy: `make run` serves the system with a demo forest; `make test` runs the whole suite.
# Both install what is missing first (system packages, the virtualenv) and start a private
# PostGIS and Redis under ./.data unless DATABASE_URL / REDIS_URL point elsewhere.
PY := .venv/bin/python

.PHONY: run test bootstrap bootstrap-test web bench lint clean

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

clean:
	rm -rf .data/test-* .data/run
