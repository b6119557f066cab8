# syntax=docker/dockerfile:1
# atomic-counter: `uvicorn app.main:app` on a slim official Python, as a non-root user.
#
#   docker build -t atomic-counter .
#   docker run --rm -p 127.0.0.1:8000:8000 atomic-counter      # sqlite only
#
# Port and worker count come from the environment (UVICORN_PORT, WEB_CONCURRENCY),
# read by uvicorn itself, so the command stays exec-form with no shell in between.

ARG PYTHON_VERSION=3.12

# --- builder: a virtualenv with the pinned runtime dependencies --------------------
FROM python:${PYTHON_VERSION}-slim AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

RUN python -m venv /opt/venv

# Only the lock file: this layer (the slow one) is rebuilt when the pins change,
# not when the code does.
COPY requirements.lock /tmp/requirements.lock
RUN --mount=type=cache,target=/root/.cache/pip \
    /opt/venv/bin/pip install --no-deps -r /tmp/requirements.lock \
    && /opt/venv/bin/pip check

# --- runtime ---------------------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim AS runtime

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    UVICORN_HOST=0.0.0.0 \
    UVICORN_PORT=8000 \
    UVICORN_TIMEOUT_GRACEFUL_SHUTDOWN=20 \
    WEB_CONCURRENCY=1 \
    SQLITE_PATH=/app/data/counters.db

# A fixed, unprivileged uid/gid (no login shell, no home of its own), and the one
# directory it may write: the sqlite store's. A named volume mounted there starts
# out owned by this user.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin app \
    && install -d -o app -g app -m 0750 /app/data

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
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('UVICORN_PORT', '8000'), timeout=2)"]

CMD ["uvicorn", "app.main:app"]
