# The exporter: checkpoint -> ONNX -> TensorRT FP16 engine -> GPU model repository.
# Base: the NGC TensorRT image of the SAME release as the Triton image (24.10), so the engine
# is built by the TensorRT that Triton 24.10 runs (DESIGN §4).  It carries the `tensorrt`
# Python bindings; torch etc. come from the project's [export] extra.
# Build context: the repository root.   docker compose build exporter
ARG TENSORRT_IMAGE=nvcr.io/nvidia/tensorrt:24.10-py3
FROM ${TENSORRT_IMAGE}

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    ASPECTS_MODEL_REPOSITORY=/opt/aspects/model_repository \
    ASPECTS_CACHE_DIR=/build/cache
WORKDIR /opt/aspects
COPY pyproject.toml README.md NOTICE ./
COPY client ./client
COPY export ./export
COPY synth ./synth
COPY train ./train
COPY model_repository ./model_repository
COPY models ./models
RUN python3 -m pip install '.[export]' \
 && python3 -c "import tensorrt, aspects_export; print('TensorRT', tensorrt.__version__)"
COPY docker/exporter-entrypoint.sh /usr/local/bin/aspects-exporter
COPY docker/upload_repository.py /opt/aspects/docker/upload_repository.py

ENTRYPOINT ["/usr/local/bin/aspects-exporter"]
