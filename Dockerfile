# syntax=docker/dockerfile:1.4
# Canopy: one image for every role (web, worker, migrate, secret, create-admin, demo), run as
# a non-root user. The role is the command:
#   python -m server serve | worker | migrate | secret | create-admin | demo --wait
#
# Base images are build arguments so that machines without a registry can build it from a
# Debian 12 made by debootstrap (scripts/base-image.sh):
#   docker build -t canopy:0.1.0 .
#   podman build --build-arg BASE=localhost/canopy-base:bookworm \
#                --build-arg NODE_BASE=localhost/canopy-node:bookworm -t canopy:0.1.0 .
# Where pip/npm must trust an extra CA (a TLS-inspecting proxy), pass its bundle as a build
# secret: it is mounted for the install steps only, never stored in a layer:
#   --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt
ARG BASE=python:3.11-slim-bookworm
ARG NODE_BASE=node:20-bookworm-slim

# --- the web app and the page assets, bundled from npm (no CDN at run time) -------------
FROM ${NODE_BASE} AS web
WORKDIR /src/web
COPY web/package.json web/package-lock.json ./
RUN --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then export NODE_EXTRA_CA_CERTS=/run/secrets/ca; fi; \
    npm ci --no-audit --no-fund --loglevel=error
COPY web ./
RUN mkdir -p ../server/static && npm run --silent build

# --- the Python dependencies in a virtualenv (wheels only: no compiler needed) ----------
FROM ${BASE} AS build
COPY pyproject.toml /tmp/pyproject.toml
# the dependency list alone first: editing the code does not reinstall 100+ packages
RUN --mount=type=secret,id=ca \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi; \
    python3 -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && python3 -m venv /opt/canopy \
    && /opt/canopy/bin/pip install --no-cache-dir --disable-pip-version-check --upgrade pip \
    && /opt/canopy/bin/pip install --no-cache-dir --disable-pip-version-check -r /tmp/requirements.txt

# --- the runtime ---------------------------------------------------------------------------
FROM ${BASE}
RUN groupadd --gid 10001 canopy \
    && useradd --uid 10001 --gid 10001 --create-home --shell /usr/sbin/nologin canopy \
    && mkdir -p /var/lib/canopy && chown canopy:canopy /var/lib/canopy
COPY --from=build /opt/canopy /opt/canopy
WORKDIR /app
COPY pygeoapi-config.yml ./
COPY db ./db
COPY providers ./providers
COPY processes ./processes
COPY server ./server
COPY --from=web /src/server/static ./server/static
# bytecode made now: /app is not writable by the user the server runs as
RUN /opt/canopy/bin/python -m compileall -q /app
ENV PATH=/opt/canopy/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 \
    PORT=5000 \
    CANOPY_DATA_DIR=/var/lib/canopy \
    CANOPY_RUN_DIR=/tmp/canopy-run \
    NUMBA_CACHE_DIR=/tmp/numba-cache
USER 10001:10001
VOLUME ["/var/lib/canopy"]
EXPOSE 5000
# One check for every role: the web server answers /healthz, a worker's consumer has touched
# its heartbeat file within 30 s, one-shot commands (migrate, secret, demo) are healthy.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "server", "healthcheck"]
CMD ["python", "-m", "server", "serve"]
