# Canopy: multi-stage build, non-root runtime, healthcheck.
FROM node:20-bookworm-slim AS web
WORKDIR /src
COPY web ./web
RUN mkdir -p server/static && cd web && npm ci --no-audit --no-fund && npm run build

FROM python:3.11-slim-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends build-essential && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml ./
COPY server ./server
COPY providers ./providers
COPY processes ./processes
COPY db ./db
RUN python -m venv /opt/canopy && /opt/canopy/bin/pip install --no-cache-dir .

FROM python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends curl && rm -rf /var/lib/apt/lists/* \
    && useradd --system --create-home --uid 10001 canopy
COPY --from=build /opt/canopy /opt/canopy
WORKDIR /app
COPY --from=web /src/server/static ./server/static
COPY pygeoapi-config.yml ./
COPY server ./server
COPY providers ./providers
COPY processes ./processes
COPY db ./db
ENV PATH=/opt/canopy/bin:$PATH HOST=0.0.0.0 PORT=5000 CANOPY_DATA_DIR=/var/lib/canopy \
    CANOPY_RUN_DIR=/tmp/canopy-run PYTHONUNBUFFERED=1
RUN mkdir -p /var/lib/canopy && chown canopy /var/lib/canopy
USER canopy
EXPOSE 5000
HEALTHCHECK --interval=15s --timeout=3s --retries=3 CMD curl -fsS http://127.0.0.1:${PORT}/healthz || exit 1
CMD ["python", "-m", "server", "serve"]
