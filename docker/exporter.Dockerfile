# The exporter: checkpoint -> ONNX -> TensorRT FP16 engine -> GPU model repository.
# Base: the NGC TensorRT image of the SAME release as the Triton image (24.10), so the engine
# is built by the TensorRT that Triton 24.10 runs (architecture §4); `aspects-export release
# publish` refuses an engine whose TensorRT differs from the serving release's.  It carries
# the `tensorrt` Python bindings; the rest comes from the project's [export,gpu] extras.
# The same image is the Deployment's fetch-release init container (boto3 + NVML).
# Build context: the repository root.   docker compose build exporter
ARG TENSORRT_IMAGE=nvcr.io/nvidia/tensorrt:24.10-py3
FROM ${TENSORRT_IMAGE}

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    ASPECTS_MODEL_REPOSITORY=/opt/aspects/model_repository \
    ASPECTS_CACHE_DIR=/opt/aspects/cache \
    ASPECTS_REQUIRE_PHANTOM=1
WORKDIR /opt/aspects
# torch: the CPU build.  It only exports ONNX and runs the ONNX-vs-PyTorch gate; the GPU is
# reached through TensorRT, NVML (the GPU name) and cuda-python (the engine's gate), which
# work with every driver this TensorRT release supports.  A CUDA torch would bring its own
# CUDA and stop with "no CUDA GPU" on a driver older than that CUDA.
RUN python3 -m pip install --index-url https://download.pytorch.org/whl/cpu \
      torch==2.14.1 torchvision==0.29.1
COPY pyproject.toml README.md NOTICE ./
COPY client ./client
COPY export ./export
COPY synth ./synth
COPY train ./train
COPY model_repository ./model_repository
COPY models ./models
# The numeric gates run on atlas phantoms (ASPECTS_REQUIRE_PHANTOM=1 refuses the synthetic
# ellipses): the atlas (rapidtide's ASPECTS_2mm + MNI152 tissue maps, Apache-2.0) is baked
# into the image at build time, where the registries are reachable, checked by its sha256s.
RUN python3 -m pip install './client[dicom,score]' '.[export,gpu]' \
 && python3 -c "import torch; assert torch.version.cuda is None, 'torch must be the CPU build'" \
 && python3 -c "from aspects_synth.atlas import ensure_atlas, verify_cache; ensure_atlas(); assert verify_cache()" \
 && python3 -c "import tensorrt, pynvml, aspects_export; print('TensorRT', tensorrt.__version__)"
COPY docker/exporter-entrypoint.sh /usr/local/bin/aspects-exporter

ENTRYPOINT ["/usr/local/bin/aspects-exporter"]
