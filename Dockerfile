# syntax=docker/dockerfile:1
# One image for the three jobs of sensorflow (the dataflow, the sidecar, one batch task):
#   docker run IMAGE run --help | sidecar --help | task run SPEC_URL
# Dependencies come pinned, with hashes, from requirements.lock (bash .ci/lock.sh regenerates it).
# Build: docker build -t sensorflow:0.1.0 .
#        docker build --build-arg MSODBCSQL18=true -t sensorflow:0.1.0 .   (Azure SQL: Microsoft's driver)
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: a virtualenv with the locked dependencies and the package --------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY requirements.lock /tmp/requirements.lock
# Wheels only: nothing is compiled, so no compiler is needed even here.
RUN pip install --require-hashes --only-binary=:all: -r /tmp/requirements.lock
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sensorflow ./sensorflow
COPY ingest ./ingest
COPY windowing ./windowing
COPY batch_jobs ./batch_jobs
COPY simulator ./simulator
# The build backend (setuptools, wheel) is in the lock too: no unpinned download here.
RUN pip install --no-deps --no-build-isolation . \
    && sensorflow --version

# ---- runtime: the virtualenv, ODBC drivers, a non-root user ----------------------------------
FROM ${PYTHON_IMAGE} AS runtime
# Microsoft's ODBC Driver 18 for SQL Server (stores mssql+odbc:, Azure SQL) comes from Microsoft's
# apt repository under its licence (ACCEPT_EULA); off by default. PostgreSQL's driver is Debian's.
ARG MSODBCSQL18=false
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends unixodbc odbc-postgresql; \
    if [ "$MSODBCSQL18" = "true" ]; then \
        apt-get install -y --no-install-recommends ca-certificates curl gpg; \
        curl -fsSL https://packages.microsoft.com/keys/microsoft.asc \
            | gpg --dearmor -o /usr/share/keyrings/microsoft-prod.gpg; \
        echo "deb [signed-by=/usr/share/keyrings/microsoft-prod.gpg] https://packages.microsoft.com/debian/12/prod bookworm main" \
            > /etc/apt/sources.list.d/microsoft-prod.list; \
        apt-get update; \
        ACCEPT_EULA=Y apt-get install -y --no-install-recommends msodbcsql18; \
        apt-get purge -y --auto-remove curl gpg; \
    fi; \
    rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 sensorflow \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin sensorflow
COPY --from=build /opt/venv /opt/venv
# Read-only root filesystem in Kubernetes: no .pyc writes, matplotlib's cache under /tmp.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MPLCONFIGDIR=/tmp/matplotlib
WORKDIR /tmp
# Numeric, so Kubernetes' runAsNonRoot can check it.
USER 10001:10001
# 9999: Bytewax cluster traffic between processes; 9100: /metrics, /healthz, /readyz.
EXPOSE 9999 9100
# No HEALTHCHECK: the image runs three different jobs, and on Kubernetes the probes of the
# dataflow container (/healthz, /readyz) say what healthy means.
ENTRYPOINT ["sensorflow"]
CMD ["--help"]
