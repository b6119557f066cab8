# atomic-counter: `python -m app.server` on a slim official Python, as a non-root user.
#
#   docker build -t atomic-counter .
#   docker run --rm -p 127.0.0.1:8000:8000 atomic-counter      # sqlite only
#
# The default target is the service (the last stage). `--target bench` adds the `[bench]`
# extra for `atomic-counter bench` against a deployment:
#
#   docker build --target bench -t atomic-counter-bench .
#   docker run --rm --network host atomic-counter-bench bench --url http://127.0.0.1:8000 \
#       --stores all --requests 1000
#
# Plain Dockerfile syntax only (no `# syntax=` frontend, no RUN --mount): it builds the
# same with the classic builder (DOCKER_BUILDKIT=0, or Compose without buildx) and with
# BuildKit, whose only image pull is the base (no frontend image). It fetches from PyPI and
# Debian's mirror: build on the host network. app.server listens on PORT (or
# UVICORN_PORT; 8000 when neither is set), on all interfaces (HOST, set below).

# Pinned by Python version and Debian codename. Builder and runtime share it: the
# virtualenv's interpreter is the base image's.
ARG PYTHON_IMAGE=python:3.12.12-slim-bookworm

# --- builder: a virtualenv with the hashed runtime lock -------------------------------
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_NO_CACHE_DIR=1

# binutils for `strip`: the wheels' extension modules carry their debug symbols.
RUN apt-get update \
    && apt-get install -y --no-install-recommends binutils=2.40-2 \
    && rm -rf /var/lib/apt/lists/*

# Only the lock file: this layer (the slow one) is rebuilt when the pins change, not
# when the code does. The venv gets no pip of its own: the base image's installs into it.
COPY requirements.lock /tmp/requirements.lock
RUN python -m venv --without-pip /opt/venv \
    && python -m pip --python /opt/venv/bin/python install \
        --no-deps --require-hashes --only-binary=:all: -r /tmp/requirements.lock \
    && python -m pip --python /opt/venv/bin/python check

# Slimming, each step worth megabytes (see the image size in docs/operations.md): symbols out of the
# extension modules; the C/Cython sources some wheels ship; and botocore's models of
# every AWS service but DynamoDB, the only one the app calls, and STS, for web-identity
# credentials (the compose tests prove the dynamo store still works).
WORKDIR /opt/venv/lib
RUN find . -name '*.so' -exec strip --strip-unneeded {} + \
    && find . -type f \( -name '*.c' -o -name '*.cpp' -o -name '*.h' -o -name '*.pyx' \
        -o -name '*.pxd' -o -name '*.pyi' \) -delete \
    && find python3*/site-packages/botocore/data -mindepth 1 -maxdepth 1 -type d \
        ! -name dynamodb ! -name sts -exec rm -rf {} +

# --- runtime ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

# Declared again: an ARG from before FROM is not visible inside a stage.
ARG PYTHON_IMAGE
ARG VERSION=0.0.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="atomic-counter" \
      org.opencontainers.image.description="Atomic counters over HTTP on six datastores." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 \
    SQLITE_PATH=/app/data/counters.db

# A fixed, unprivileged uid/gid (no login shell, no home of its own), and the one
# directory it may write: the sqlite store's. A named volume mounted there starts out
# owned by this user. Everything else can be a read-only root filesystem.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin app \
    && install -d -o app -g app -m 0750 /app/data

# Amazon DocumentDB's CA bundle, when the deployer has put it in deploy/ca/ before the
# build (deploy/ecs/README.md, step 1); DOCDB_URL's tlsCAFile names this path.
COPY deploy/ca/ /etc/ssl/docdb/

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
# The code last, owned by root and read-only to the app user; byte-compiled here
# because the user cannot write __pycache__ at run time.
COPY app/ ./app/
RUN python -m compileall -q app

USER 10001:10001
EXPOSE 8000

# Liveness only: /healthz touches no datastore. Python, not curl: slim has no curl.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % (os.environ.get('PORT') or os.environ.get('UVICORN_PORT') or '8000'), timeout=2)"]

CMD ["python", "-m", "app.server"]

# --- bench: `atomic-counter bench` on top of the runtime image -------------------------
# The service image leaves the [bench] extra out; this target adds its hashed lock
# (requirements-bench.lock: what the extra needs beyond requirements.lock).
FROM runtime AS bench

USER 0
COPY requirements-bench.lock /tmp/requirements-bench.lock
# The venv has no pip of its own (see the builder): the base image's installs into it.
RUN /usr/local/bin/python -m pip --python /opt/venv/bin/python install \
        --no-cache-dir --disable-pip-version-check --root-user-action=ignore \
        --no-deps --require-hashes --only-binary=:all: -r /tmp/requirements-bench.lock \
    && /usr/local/bin/python -m pip --python /opt/venv/bin/python check \
    && rm /tmp/requirements-bench.lock

# matplotlib (the --out chart) wants a writable config directory; the user has no home.
ENV MPLCONFIGDIR=/tmp/matplotlib
USER 10001:10001

# A load client, not a server: nothing for the inherited /healthz probe to reach.
HEALTHCHECK NONE
ENTRYPOINT ["python", "-m", "app.cli"]
CMD ["--help"]

# --- service: the default target -------------------------------------------------------
# Last, so a plain `docker build` (the pipeline) gets the runtime image as it is. BuildKit
# builds only the stages a target needs; the classic builder builds every stage before it,
# bench included, so docker-compose.yml names `runtime` (the same image) as its target.
FROM runtime AS service
