# aeserve images, two stages: `builder` builds the aeserve wheel and a virtualenv with its
# dependencies; `runtime` copies that virtualenv and the model repository onto a clean base.
#
#   CPU serving (default):  docker build -t aeserve:0.1.0 .
#   CUDA serving:           docker build -t aeserve:0.1.0-cuda \
#                             --build-arg BASE_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04 \
#                             --build-arg ONNXRUNTIME=onnxruntime-gpu .
#                           (the base's CUDA and cuDNN majors must be onnxruntime-gpu's)
#   training (torch, CPU):  docker build -t aeserve-train:0.1.0 --build-arg EXTRAS=serve,train \
#                             --build-arg TORCH_INDEX=<PyTorch's CPU wheel index> .
#
# The default build installs the `serve` extra of pyproject.toml only: onnxruntime, no torch, no
# compiler, and its wheel holds aeserve's serving code only (no training, no batch scoring).
# Every setting is an AESERVE_* environment variable (README, "Serve").

# A python:3.11-slim image, or an NVIDIA CUDA runtime image (its python3 comes from apt).
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS builder
# onnxruntime (CPU) or onnxruntime-gpu (CUDA execution provider).
ARG ONNXRUNTIME=onnxruntime
# The extras to install: "serve" (the server only), "serve,log" (plus pyarrow, for the prediction
# log, AESERVE_PREDICTION_LOG), or "serve,train" (plus torch==2.13.0, onnx, scikit-learn, ... and
# the training code).
ARG EXTRAS=serve
# Optional extra index for torch; PyTorch's CPU wheel index keeps a training image free of CUDA.
ARG TORCH_INDEX=
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
USER root
RUN if ! command -v python3 >/dev/null; then \
      apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-venv ca-certificates && rm -rf /var/lib/apt/lists/*; \
    fi \
 && python3 -m venv /opt/venv
WORKDIR /src
# Dependencies first, from pyproject.toml alone (placeholder packages), so that a change to the
# code or the README reuses this layer.
COPY pyproject.toml LICENSE ./
RUN mkdir aeserve && touch README.md aeserve/__init__.py \
 && case ",$EXTRAS," in *,train,*) \
      /opt/venv/bin/pip install torch==2.13.0 ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"};; \
    esac \
 && /opt/venv/bin/pip install ".[$EXTRAS]" \
 && if [ "$ONNXRUNTIME" != onnxruntime ]; then \
      /opt/venv/bin/pip uninstall -y onnxruntime && /opt/venv/bin/pip install "$ONNXRUNTIME"; \
    fi \
 && /opt/venv/bin/pip uninstall -y aeserve \
 && rm -rf aeserve README.md build *.egg-info
COPY README.md ./
COPY aeserve/ aeserve/
# The wheel holds the parts this image runs: the serving image none of the training code, nor
# batch scoring (its pyarrow is not installed here); a stream image (EXTRAS=stream, the
# `aeserve stream` runner) holds batch scoring, which the runner is part of.
# The server needs neither pip nor setuptools (parts of torch import setuptools: kept for training).
RUN case ",$EXTRAS," in *,train,*) ;; *) rm -rf aeserve/training;; esac \
 && case ",$EXTRAS," in *,train,*|*,batch,*|*,stream,*) ;; *) rm -rf aeserve/batch;; esac \
 && /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels . \
 && /opt/venv/bin/pip install --no-deps /wheels/aeserve-*.whl \
 && /opt/venv/bin/python -m pip uninstall -y pip \
      $(case ",$EXTRAS," in *,train,*) ;; *) echo setuptools;; esac) \
 && find /opt/venv/lib -depth -type d -name tests -path '*/site-packages/*' -exec rm -rf {} +

FROM ${BASE_IMAGE} AS runtime
USER root
# Base images without Python (CUDA): the interpreter only, no pip, no compiler.
RUN if ! command -v python3 >/dev/null; then \
      apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 && rm -rf /var/lib/apt/lists/*; \
    fi \
 && groupadd --system --gid 10001 aeserve \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin aeserve
COPY --from=builder /opt/venv /opt/venv
COPY models/ /models/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    ORT_DISABLE_TELEMETRY=1 \
    AESERVE_MODELS_DIR=/models
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["aeserve"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
