# GPU image for ALUM pre-training and fine-tuning: CUDA + pinned torch + DeepSpeed (ops prebuilt) + OpenMPI.
#   docker build -t alum .                                  # default
#   docker build -t alum --build-arg WITH_APEX=1 .          # + NVIDIA apex, built from its source release
# The *_VERSION pins below must equal pyproject.toml's (tests/e2e/test_docker.py checks it).
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-devel-ubuntu24.04
FROM ${CUDA_IMAGE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
ARG DEEPSPEED_VERSION=0.19.8
ARG MPI4PY_VERSION=4.1.2
ARG WITH_APEX=0
ARG APEX_VERSION=25.09
# Compute capabilities to build kernels for: there is no GPU at build time to detect them from.
ARG TORCH_CUDA_ARCH_LIST="8.0;8.6;8.9;9.0"

# "TOKENIZERS_…" trips the secrets heuristic; nothing secret is set here.
# hadolint ignore=DL3064
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST} \
    TOKENIZERS_PARALLELISM=false \
    HF_HUB_OFFLINE=1

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3 python3-venv python3-dev build-essential ninja-build git curl ca-certificates \
        openmpi-bin libopenmpi-dev openssh-client openssh-server pdsh iproute2 \
    && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/venv \
    && pip install --upgrade pip==25.3 setuptools==80.9.0 wheel==0.45.1 \
    && pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

# DeepSpeed with its commonly used ops compiled now rather than JIT-compiled on every node at first use.
RUN DS_BUILD_CPU_ADAM=1 DS_BUILD_FUSED_ADAM=1 DS_BUILD_FUSED_LAMB=1 DS_BUILD_UTILS=1 \
    pip install --no-build-isolation "deepspeed==${DEEPSPEED_VERSION}" \
    && pip install "mpi4py==${MPI4PY_VERSION}" \
    && ds_report

# Optional NVIDIA apex from its source release (the PyPI package named "apex" is an unrelated project).
RUN if [ "${WITH_APEX}" = "1" ]; then \
        curl -fsSL "https://github.com/NVIDIA/apex/archive/refs/tags/${APEX_VERSION}.tar.gz" -o /tmp/apex.tar.gz \
        && mkdir -p /tmp/apex && tar -xzf /tmp/apex.tar.gz -C /tmp/apex --strip-components=1 \
        && APEX_CPP_EXT=1 APEX_CUDA_EXT=1 pip install --no-build-isolation /tmp/apex \
        && rm -rf /tmp/apex /tmp/apex.tar.gz; \
    fi

RUN useradd --create-home --uid 1000 alum
WORKDIR /workspace/alum
COPY --chown=alum:alum pyproject.toml README.md ./
COPY --chown=alum:alum data_tools ./data_tools
COPY --chown=alum:alum pretrain ./pretrain
COPY --chown=alum:alum finetune ./finetune
COPY --chown=alum:alum demo ./demo
COPY --chown=alum:alum experiments ./experiments
COPY --chown=alum:alum configs ./configs
COPY --chown=alum:alum scripts ./scripts
COPY --chown=alum:alum deepspeed_configs ./deepspeed_configs
COPY --chown=alum:alum docker ./docker
COPY --chown=alum:alum requirements ./requirements
# The project with its exact pins (pyproject.toml); torch and deepspeed above already satisfy theirs.
# hadolint ignore=DL3013
RUN pip install ".[dev]" \
    && pip install --no-deps megatron-core==0.16.1 gensim==4.4.0 \
    && pip install --no-deps -r requirements/textattack.txt \
    && chmod +x docker/run_pretrain.sh

USER 1000:1000
ENV TORCH_EXTENSIONS_DIR=/home/alum/.cache/torch_extensions
ENTRYPOINT ["/workspace/alum/docker/run_pretrain.sh"]
CMD ["--help"]
