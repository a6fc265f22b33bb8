# streamskew: `streamskew run` (Kafka consumer group + Prometheus endpoint on 9464), and every
# other subcommand. See docker-compose.yml for a broker, the demo baseline and a producer.
#
#   docker build -t streamskew .
#   docker run --rm streamskew --help
#   docker run --rm -p 127.0.0.1:9464:9464 -v "$PWD:/work" streamskew \
#       run --config /work/streamskew.toml --metrics-port 9464
FROM python:3.11-slim

# site-packages is read-only for the runtime user: numba caches its compiled kernels in
# NUMBA_CACHE_DIR instead of next to the sources. `run --metrics-port` listens on every
# interface of the container (the CLI's own default is loopback, which a published port
# cannot reach); STREAMSKEW_METRICS_HOST is the default of --metrics-host.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    STREAMSKEW_METRICS_HOST=0.0.0.0

# An unprivileged user with a fixed uid, owning only /data: a named volume mounted there
# starts as a copy of this directory, ownership included. (NUMBA_CACHE_DIR is created on first
# use under the world-writable /tmp, so any uid works.)
RUN groupadd --system --gid 10001 streamskew \
    && useradd --system --uid 10001 --gid streamskew --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin streamskew \
    && mkdir -p /data \
    && chown streamskew:streamskew /data

# Only what the package build needs (see .dockerignore), so code edits elsewhere keep the cache.
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY streamskew/ ./streamskew/
# The project itself; its dependencies' ranges live in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir '.[metrics,report]' \
    && streamskew --version

WORKDIR /app
COPY docker/produce_demo.py ./docker/produce_demo.py

USER 10001:10001
EXPOSE 9464
ENTRYPOINT ["streamskew"]
CMD ["--help"]
