# keymon container image.
#
#   docker build -t keymon .
#   docker run --read-only -p 9877:9877 \
#     -v "$PWD/keymon.yaml:/etc/keymon/keymon.yaml:ro" \
#     -v "$PWD/secrets:/run/secrets/keymon:ro" \
#     -v keymon-data:/var/lib/keymon keymon
#
# Two stages. The builder installs the runtime dependencies from requirements/runtime.lock
# (every file hash-checked) into a virtual environment at /opt/keymon and adds the keymon wheel,
# built offline by a hash-checked hatchling. The final stage copies that environment onto a
# clean base: no compiler, no build backend, no pip, no lock files.
#
# The base image is a build argument, pinned by tag here: a desk builds from its own mirror or
# pins a digest with --build-arg BASE_IMAGE=python:3.11-slim-bookworm@sha256:... (see
# deploy/README.md). The digest could not be looked up where this file was written (offline),
# and a guessed digest is worse than none. Both stages use the same image: the virtual
# environment's interpreter is a link to the base's Python. PROJECT_URL (the OCI source and
# documentation labels) is passed by scripts/build-image from pyproject.toml's
# [project.urls]; its default here is kept equal to it by scripts/set-project-url.
#
# The running container writes only to /var/lib/keymon (data_dir: SQLite state, temporary
# files). It runs as UID 10001 with a read-only root filesystem; Python writes no bytecode at
# run time (everything is compiled here). Secrets are never part of the image: mount them as
# files (Docker/Kubernetes secrets) and point the configuration at them with {file: PATH}.

ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /src

# The build backend (hatchling and its dependencies), hash-pinned: their entries are taken
# from requirements/dev.lock, so the image builds with exactly the backend the tests use.
COPY requirements/dev.lock requirements/runtime.lock requirements/
RUN awk -v want=" hatchling packaging pathspec pluggy trove-classifiers " \
        '/^[A-Za-z0-9]/ { split($1, name, "=="); keep = index(want, " " name[1] " ") > 0 } \
         keep && !/^[[:space:]]*#/' \
        requirements/dev.lock > requirements/build.lock \
 && python -m venv /opt/build \
 && /opt/build/bin/python -m pip install --no-deps --require-hashes --only-binary=:all: \
        -r requirements/build.lock \
 && python -m venv /opt/keymon \
 && /opt/keymon/bin/python -m pip install --require-hashes --only-binary=:all: \
        -r requirements/runtime.lock

COPY pyproject.toml README.md ./
COPY keymon/ keymon/
RUN /opt/build/bin/python -m pip wheel --no-deps --no-build-isolation --no-index \
        --wheel-dir /tmp/dist . \
 && /opt/keymon/bin/python -m pip install --no-deps --no-index /tmp/dist/keymon-*.whl \
 && /opt/keymon/bin/python -m pip check \
 && /opt/keymon/bin/python -m pip uninstall --yes pip setuptools \
 && /opt/keymon/bin/python -m compileall -q /opt/keymon/lib


FROM ${BASE_IMAGE}

ARG BASE_IMAGE
ARG PROJECT_URL=https://github.com/keymon/keymon
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=unknown

LABEL org.opencontainers.image.title="keymon" \
      org.opencontainers.image.description="Continuous health monitoring of exchange API keys: permissions, IP restriction, deadlines." \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.url="${PROJECT_URL}" \
      org.opencontainers.image.source="${PROJECT_URL}" \
      org.opencontainers.image.documentation="${PROJECT_URL}/blob/main/deploy/README.md" \
      org.opencontainers.image.base.name="${BASE_IMAGE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"

# A fixed numeric UID/GID, so that Kubernetes' runAsNonRoot can verify it and volume
# permissions can be planned (fsGroup 10001, or chown 10001 on a bind mount).
# The standard library is byte-compiled here because the official image ships it without .pyc
# files and the read-only root filesystem would otherwise make every start (and every health
# check) compile it again in memory.
RUN groupadd --system --gid 10001 keymon \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin keymon \
 && mkdir -p /etc/keymon /var/lib/keymon \
 && chown 10001:10001 /var/lib/keymon \
 && chmod 0750 /var/lib/keymon \
 && python -m compileall -q -x '/(test|tests|idle_test|lib2to3|tkinter|idlelib|turtledemo)/' \
        /usr/local/lib/python3.11

COPY --from=builder /opt/keymon /opt/keymon

# KEYMON_DATA_DIR overrides `data_dir` of the configuration file: state always lands on the
# volume. TMPDIR points there too (SQLite and Python temporary files), since nothing else is
# writable. KEYMON_CONFIG is every command's default --config, so `docker exec keymon keymon
# check` finds the mounted configuration.
ENV PATH=/opt/keymon/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    KEYMON_CONFIG=/etc/keymon/keymon.yaml \
    KEYMON_DATA_DIR=/var/lib/keymon \
    TMPDIR=/var/lib/keymon

VOLUME ["/var/lib/keymon"]
WORKDIR /var/lib/keymon
USER 10001:10001
EXPOSE 9877

# /healthz answers 200 while the process, its scheduler and its notifier live. The probe is
# `keymon healthcheck` in its light form (python -m keymon.healthcheck: standard library and
# PyYAML, a fifth of a second instead of the full command line's second and a half): it calls
# the address the daemon listens on, from KEYMON_LISTEN, else the listen: of $KEYMON_CONFIG,
# else 0.0.0.0:9877, on loopback for a wildcard host; it reads no secret. No curl in the image.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-m", "keymon.healthcheck"]

ENTRYPOINT ["keymon"]
CMD ["run", "--config", "/etc/keymon/keymon.yaml"]
