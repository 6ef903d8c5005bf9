# syntax=docker/dockerfile:1
# flk_fast ingest server image. Both stages run scripts/install-flk.sh, which the test
# suite runs for real (tests/deploy/test_image.py), so the image installs what CI ran.
#   docker build --build-arg FLK_VERSION=0.2.0 -t REPO/flk-fast:0.2.0 .
#   docker run --read-only --tmpfs /tmp -v flk-data:/var/lib/flk -p 8080:8080 \
#     -e FLK_HMAC_KEY_FILE=/run/secrets/hmac.key ... REPO/flk-fast:0.2.0
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential libssl-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# No .git in the build context: the version comes from this argument.
ARG FLK_VERSION=0.1.0
RUN FLK_VERSION=${FLK_VERSION} scripts/install-flk.sh wheels /wheels

FROM ${PYTHON_IMAGE} AS runtime
# libgomp1: the kernels' OpenMP runtime; libssl3: the Merkle kernel links libcrypto.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 flk \
 && useradd --system --uid 10001 --gid flk --home-dir /var/lib/flk --shell /usr/sbin/nologin flk \
 && install -d -o flk -g flk -m 0750 /var/lib/flk
COPY scripts/install-flk.sh /usr/local/lib/flk/install-flk.sh
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    /usr/local/lib/flk/install-flk.sh runtime /wheels /opt/flk
# Defaults for a container; every one can be overridden (docs/server.md, docs/deploy.md).
ENV PATH=/opt/flk/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    FLK_HOST=0.0.0.0 \
    FLK_PORT=8080 \
    FLK_DATA_DIR=/var/lib/flk
USER 10001:10001
WORKDIR /var/lib/flk
VOLUME ["/var/lib/flk"]
EXPOSE 8080
# flk serve drains in-flight requests on SIGTERM (--drain-timeout-s) before it exits.
STOPSIGNAL SIGTERM
# Plain HTTP on FLK_PORT; with --tls-cert use the orchestrator's own probes instead.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('FLK_PORT', '8080'), timeout=2)"]
ENTRYPOINT ["flk"]
CMD ["serve"]
