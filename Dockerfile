# selfreflect serve in a container (see README, "Docker"). The bundled model
# ships inside the package, so it is inside the image: nothing is downloaded
# at run time.

# -- build: the package and its dependencies into a virtualenv ----------------
FROM python:3.11-slim AS builder
# server: the Qdrant client (QDRANT_URL, as compose.yaml uses it);
# EXTRAS=server,voyage adds the Voyage AI client (PREFER_LOCAL_EMBEDDINGS=false)
ARG EXTRAS="server"
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/selfreflect
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/selfreflect/bin/pip install ".[${EXTRAS}]"

# -- run: the virtualenv alone, as a user of its own ---------------------------
FROM python:3.11-slim
# the user that reads the mounted ~/.claude: give your own uid and gid, so
# Claude Code's private transcript files (0600) can be read
ARG SELFREFLECT_UID=1000
ARG SELFREFLECT_GID=1000
RUN groupadd --gid "${SELFREFLECT_GID}" selfreflect \
    && useradd --uid "${SELFREFLECT_UID}" --gid "${SELFREFLECT_GID}" --create-home --shell /usr/sbin/nologin selfreflect \
    && mkdir /data \
    && chown selfreflect:selfreflect /data \
    && chmod 700 /data
COPY --from=builder /opt/selfreflect /opt/selfreflect
ENV PATH=/opt/selfreflect/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    CLAUDE_CONFIG_DIR=/claude \
    SELFREFLECT_HOME=/data \
    SELFREFLECT_HOST=0.0.0.0 \
    SELFREFLECT_PORT=7718
USER ${SELFREFLECT_UID}:${SELFREFLECT_GID}
WORKDIR /home/selfreflect
VOLUME ["/data"]
EXPOSE 7718
# Listening on 0.0.0.0 needs SELFREFLECT_TOKEN, and every request carries it,
# /healthz too. No curl in the slim image: Python asks (a 503 or no answer
# raises, and the check fails).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as r; r.urlopen(r.Request('http://127.0.0.1:' + os.environ.get('SELFREFLECT_PORT', '7718') + '/healthz', headers={'Authorization': 'Bearer ' + os.environ.get('SELFREFLECT_TOKEN', '')}), timeout=4)"]
CMD ["selfreflect", "serve"]
