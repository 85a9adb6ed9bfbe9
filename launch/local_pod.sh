#!/usr/bin/env bash
# A pod on this machine: N CPU processes train one run together, as the hosts of a pod do.
#
#   launch/local_pod.sh N [ssl_jax.main arguments ...]
#   STORAGE_EMULATOR_HOST=http://127.0.0.1:PORT launch/local_pod.sh 4 \
#       --config=configs/jigsaw_r50.py:runlocal --workdir=gs://bucket/run
#
# Each process gets the variables a cluster script sets (SSL_JAX_COORDINATOR, NUM_PROCESSES,
# PROCESS_ID), DEVICES virtual CPU devices (default 2) and its own temporary directory; logs go
# to LOGDIR/process_I.log (default: a new temporary folder) and, prefixed [pI], to this output.
# PYTHON (default: python3) runs ssl_jax.local_pod, which does the work (see its docstring).
set -euo pipefail

if [[ $# -lt 2 || ! "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: $0 N --config=CONFIG --workdir=WORKDIR [--config.key=value ...]" >&2
  echo "  N (a positive whole number) processes; got '${1:-}'" >&2
  exit 2
fi
processes="$1"
shift
cd "$(dirname "$0")/.."
args=(--processes="$processes" --devices="${DEVICES:-2}")
if [[ -n "${LOGDIR:-}" ]]; then
  args+=(--logdir="$LOGDIR")
fi
exec "${PYTHON:-python3}" -m ssl_jax.local_pod "${args[@]}" -- "$@"
