# The thin client (`aspects segment`): only aspects_client (with its DICOM and scoring
# rooms), no torch, no GPU.  Build context: the repository root.
#   docker compose --profile client build client
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
WORKDIR /opt/aspects
COPY NOTICE ./
COPY requirements/client.lock ./requirements/
COPY client ./client
RUN pip install -c requirements/client.lock './client[dicom,score]' && aspects --version

WORKDIR /out
ENTRYPOINT ["aspects"]
CMD ["--help"]
