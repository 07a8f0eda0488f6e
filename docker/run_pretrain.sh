#!/usr/bin/env bash
# Launch ALUM pre-training on one or several nodes.
#
#   docker/run_pretrain.sh --config run.json [--key value …]          # all GPUs of this node
#   HOSTFILE=docker/hostfile docker/run_pretrain.sh --config run.json  # deepspeed over ssh to every node
#   LAUNCHER=mpirun HOSTFILE=hosts NP=16 docker/run_pretrain.sh …       # OpenMPI, rank from the environment
#   LAUNCHER=torchrun NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 docker/run_pretrain.sh …
# Any other first argument (python, bash, …) is run as a plain command.
set -euo pipefail

case "${1:-}" in
    python*|bash|sh|deepspeed|torchrun|mpirun) exec "$@" ;;
    -h|--help)
        sed -n '2,9p' "$0"
        exec python -m pretrain train --help
        ;;
esac

LAUNCHER="${LAUNCHER:-deepspeed}"
NGPUS="${NGPUS:-$( (nvidia-smi -L 2>/dev/null || true) | wc -l)}"
[ "${NGPUS}" -gt 0 ] || NGPUS=1
MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}"
MASTER_PORT="${MASTER_PORT:-29500}"

case "${LAUNCHER}" in
    deepspeed)
        if [ -n "${HOSTFILE:-}" ]; then
            exec deepspeed --hostfile "${HOSTFILE}" --master_addr "${MASTER_ADDR}" \
                --master_port "${MASTER_PORT}" -m pretrain train "$@"
        fi
        exec deepspeed --num_gpus "${NGPUS}" --master_port "${MASTER_PORT}" -m pretrain train "$@"
        ;;
    torchrun)
        exec torchrun --nnodes "${NNODES:-1}" --node_rank "${NODE_RANK:-0}" --nproc_per_node "${NGPUS}" \
            --master_addr "${MASTER_ADDR}" --master_port "${MASTER_PORT}" -m pretrain train "$@"
        ;;
    mpirun)
        hostarg=()
        [ -n "${HOSTFILE:-}" ] && hostarg=(--hostfile "${HOSTFILE}")
        exec mpirun -np "${NP:-${NGPUS}}" "${hostarg[@]}" --bind-to none \
            -x MASTER_ADDR="${MASTER_ADDR}" -x MASTER_PORT="${MASTER_PORT}" -x PATH -x LD_LIBRARY_PATH \
            python -m pretrain train "$@"
        ;;
    *)
        echo "error: LAUNCHER=${LAUNCHER}: expected deepspeed, torchrun or mpirun" >&2
        exit 2
        ;;
esac
