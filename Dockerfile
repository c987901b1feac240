# syntax=docker/dockerfile:1
# Myna Gateway portal image: docs/operations.md says how to run it.
#
# Stage 1 builds the portal's wheel and the wheels of everything it depends on; stage 2 installs
# them into a virtual environment on a slim Python, without compilers or the source tree. No key,
# secret or instance is baked in: configuration comes from environment variables and a TOML
# file mounted at $IDP_CONFIG, the instance (CA and signing keys) from a mounted volume that
# `idp init` fills once. tests/e2e/test_container.py runs this file's install and start steps.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY idp/ idp/
COPY smartphone/ smartphone/
COPY relying_party_demo/ relying_party_demo/
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim AS portal
# Paths are build arguments so that the container test can lay the same steps out under a temporary directory.
ARG APP_HOME=/opt/myna-gateway
ARG WHEELS=/tmp/wheels
ARG CONFIG_DIR=/etc/myna-gateway
ARG DATA_DIR=/var/lib/myna-gateway
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=$APP_HOME/bin:$PATH \
    GUNICORN_BIND=0.0.0.0:8000 \
    IDP_INSTANCE=$DATA_DIR/instance \
    GUNICORN_CONFIG=$CONFIG_DIR/gunicorn.conf.py
COPY --from=build /wheels/ $WHEELS/
COPY config/gunicorn.conf.py $CONFIG_DIR/gunicorn.conf.py
RUN python -m venv "$APP_HOME" \
    && "$APP_HOME/bin/python" -m pip install --no-cache-dir --no-index --find-links "$WHEELS" myna-gateway \
    && rm -rf "$WHEELS"
RUN useradd --system --uid 10001 --home-dir "$DATA_DIR" --create-home --shell /usr/sbin/nologin myna
USER myna
WORKDIR $DATA_DIR
VOLUME ["/var/lib/myna-gateway"]
EXPOSE 8000
# Liveness: /healthz on the port of GUNICORN_BIND (a TCP address).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ['GUNICORN_BIND'].rsplit(':', 1)[1]; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4)"]
CMD ["sh", "-c", "exec python -m gunicorn --config \"$GUNICORN_CONFIG\" idp.wsgi:app"]
