# syntax=docker/dockerfile:1
# The pdscale controller image: `pdscale run` and `pdscale promql` with the controller's dependencies only
# (`pip install .`: kubernetes, requests, pyyaml, prometheus-client, aiohttp; no simulator stack).
#   make image IMAGE=registry.example.com/pdscale:0.1.0
# The emulated-worker image (manifests/examples/emulated: `pdscale worker` and `pdscale proxy`) is the same file
# with the `worker` extra (numpy, which the emulated engine's histograms use):
#   make image-worker WORKER_IMAGE=registry.example.com/pdscale-worker:0.1.0   (--build-arg PDSCALE_EXTRAS=worker)
# Runs as uid/gid 65532 (non-root) and writes nothing outside /tmp, so it runs with readOnlyRootFilesystem: true
# (manifests/base/controller.yaml mounts an emptyDir at /tmp). tests/contract/test_image.py performs the same
# install into a fresh virtual environment and lints this file with hadolint.
#
# Base pinned by version and digest. The digest is the one recorded for this tag in a public, bot-maintained
# pin file (github.com/nalabelle/build, images/digests.Dockerfile); it was not re-checked against the registry
# from here. Override with --build-arg PYTHON_IMAGE=... to use a mirror or a newer patch release.
ARG PYTHON_IMAGE=docker.io/library/python:3.11.10-slim-bookworm@sha256:5148c0e4bbb64271bca1d3322360ebf4bfb7564507ae32dd639322e4952a6b16

FROM ${PYTHON_IMAGE} AS build
# setup.cfg extras to add, comma-separated (empty: the controller install)
ARG PDSCALE_EXTRAS=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml setup.cfg README.md LICENSE ./
COPY autoscaler/ autoscaler/
COPY metrics_adapter/ metrics_adapter/
COPY sim/ sim/
COPY workers/ workers/
# a non-editable install; pip compiles the .pyc files here, so nothing is written at run time
RUN python -m venv /opt/pdscale \
    && /opt/pdscale/bin/pip install ".${PDSCALE_EXTRAS:+[${PDSCALE_EXTRAS}]}" \
    && /opt/pdscale/bin/pdscale run --help > /dev/null

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="pdscale" \
      org.opencontainers.image.description="SLO-driven autoscaler for disaggregated prefill/decode LLM serving" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/pdscale /opt/pdscale
ENV PATH=/opt/pdscale/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
WORKDIR /tmp
USER 65532:65532
ENTRYPOINT ["pdscale"]
CMD ["run", "--help"]
