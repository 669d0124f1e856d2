#!/usr/bin/env bash
# Multi-process training through torchrun and mmengine's launcher ('pytorch').
#
#   tools/dist_train.sh CONFIG NPROC [train.py options ...]
#
# On a machine without a GPU each process trains on the CPU and the processes talk over gloo
# (tools/train.py sets that up); on GPUs mmengine's default (nccl) is used. Environment:
# PORT (default 29500), NNODES, NODE_RANK, MASTER_ADDR as for torchrun; PYTHON (default: .venv's
# python if present, else python). Each process gets OMP_NUM_THREADS=1 unless it is set.
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG NPROC [train.py options ...]" >&2
    exit 2
fi
CONFIG=$1
NPROC=$2
shift 2
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python; fi
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PYTHON" -m torch.distributed.run \
    --nnodes="${NNODES:-1}" \
    --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" \
    --nproc_per_node="$NPROC" \
    --master_port="${PORT:-29500}" \
    "$ROOT/tools/train.py" "$CONFIG" --launcher pytorch "$@"
