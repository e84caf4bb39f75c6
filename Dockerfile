# syntax=docker/dockerfile:1
#
# RadGround images. Two targets:
#
#   runtime (default)  python:3.11-slim-bookworm; CPU. `radground serve` (embedded),
#                      and in a cluster the node and the IO workers.
#       docker build -t radground .
#       docker run -p 11112:11112 -v radground-data:/var/lib/radground radground
#
#   gpu                NVIDIA's TensorRT image (TensorRT cannot be pip-installed) with
#                      RadGround's `gpu` extra; the GPU workers.
#       docker build --target gpu -t radground:gpu .
#       docker run --gpus all radground:gpu worker --queues gpu
#
# Both run as the unprivileged user "radground" (uid/gid 10001 in both, so
# they can share volumes; never root, so Celery has no superuser to warn about),
# keep their data under /var/lib/radground (0700: volumes mounted there start
# with that mode; RadGround creates files 0600 in 0700 folders), and link
# the shipped default model to /opt/radground/models/radground-cxr-det.onnx.
# docker-compose.yml shows the cluster; docs/cluster.md explains it.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
# TensorRT 10.14, CUDA 13.0, Ubuntu 24.04, Python 3.12 (needs driver >= 580).
ARG TENSORRT_IMAGE=nvcr.io/nvidia/tensorrt:25.11-py3

# --- the sources `pip install .` needs (the build context is filtered by .dockerignore)
FROM scratch AS source
COPY pyproject.toml README.md /src/
COPY dicom_node /src/dicom_node
COPY engine /src/engine
COPY exporters /src/exporters
COPY worklist /src/worklist
COPY radground /src/radground

# --- build: a virtual environment holding RadGround and its dependencies (no test extras)
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY --from=source /src /src
WORKDIR /src
RUN pip install . \
 && radground --version

# --- gpu: NVIDIA TensorRT image + the `gpu` extra (GPU workers)
FROM ${TENSORRT_IMAGE} AS gpu
# The image's Python is the system one (Ubuntu 24.04, PEP 668): install into it,
# where NVIDIA's tensorrt package already is.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_BREAK_SYSTEM_PACKAGES=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RADGROUND_CONFIG=/etc/radground/radground.toml
COPY --from=source /src /src
WORKDIR /src
# onnxruntime (a core dependency) and onnxruntime-gpu (the extra) install the
# same Python package; keep only the GPU build so the CUDA provider is there.
RUN python3 -m pip install ".[gpu]" \
 && python3 -m pip uninstall -y onnxruntime \
 && python3 -m pip install --force-reinstall --no-deps "onnxruntime-gpu>=1.18" \
 && python3 -c "import tensorrt, onnxruntime; assert 'CUDAExecutionProvider' in onnxruntime.get_available_providers(); print('TensorRT', tensorrt.__version__)" \
 && radground --version \
 && rm -rf /src
# The fonts previews and key images draw English and Chinese labels with.
RUN apt-get update \
 && apt-get install -y --no-install-recommends fonts-droid-fallback fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 radground \
 && useradd --system --uid 10001 --gid radground --home-dir /var/lib/radground --shell /usr/sbin/nologin radground \
 && mkdir -p /var/lib/radground/instances /var/lib/radground/outputs /var/lib/radground/engines /opt/radground/models /etc/radground \
 && chown -R radground:radground /var/lib/radground \
 && chmod -R u=rwX,go= /var/lib/radground \
 && ln -s "$(python3 -c 'from engine.default_model.config import ONNX_PATH; print(ONNX_PATH)')" \
          /opt/radground/models/radground-cxr-det.onnx \
 && test -f /opt/radground/models/radground-cxr-det.onnx
COPY config/radground.toml /etc/radground/radground.toml
RUN sed -i 's/^host = "127.0.0.1"/host = "0.0.0.0"/' /etc/radground/radground.toml \
 && grep -q '^host = "0.0.0.0"' /etc/radground/radground.toml
WORKDIR /var/lib/radground
USER radground
ENTRYPOINT ["radground"]
CMD ["worker", "--queues", "gpu"]

# --- runtime: CPU image (node, IO workers, embedded `radground serve`).
# The last stage, so a plain `docker build .` builds it.
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    RADGROUND_CONFIG=/etc/radground/radground.toml
# The fonts previews and key images draw English and Chinese labels with.
RUN apt-get update \
 && apt-get install -y --no-install-recommends fonts-droid-fallback fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 radground \
 && useradd --system --uid 10001 --gid radground --home-dir /var/lib/radground --shell /usr/sbin/nologin radground \
 && mkdir -p /var/lib/radground/instances /var/lib/radground/outputs /var/lib/radground/engines /opt/radground/models \
 && chown -R radground:radground /var/lib/radground \
 && chmod -R u=rwX,go= /var/lib/radground
COPY --from=build /opt/venv /opt/venv
# The documented defaults, except that inside a container the node listens on
# every interface. Mount another file here (or set RADGROUND_CONFIG) to configure it.
COPY config/radground.toml /etc/radground/radground.toml
RUN sed -i 's/^host = "127.0.0.1"/host = "0.0.0.0"/' /etc/radground/radground.toml \
 && grep -q '^host = "0.0.0.0"' /etc/radground/radground.toml \
 && ln -s "$(python -c 'from engine.default_model.config import ONNX_PATH; print(ONNX_PATH)')" \
          /opt/radground/models/radground-cxr-det.onnx \
 && test -f /opt/radground/models/radground-cxr-det.onnx
WORKDIR /var/lib/radground
USER radground
EXPOSE 11112
HEALTHCHECK --interval=30s --timeout=15s --start-period=60s --retries=3 \
    CMD ["radground", "echo", "RADGROUND@127.0.0.1:11112"]
ENTRYPOINT ["radground"]
CMD ["serve"]
