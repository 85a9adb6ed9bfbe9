#!/usr/bin/env bash
# Pretraining on a Cloud TPU VM slice: create the slice, install ssl_jax on every worker, run
# `python -m ssl_jax.main --multihost` on all workers at once, delete the slice.
# Run with --help for the commands and the environment variables; launch/README.md has examples.
set -euo pipefail
# Empty arrays are expanded as ${a[@]+"${a[@]}"}: bash 3.2 (macOS) treats "${a[@]}" as unset.

usage() {
  cat <<'EOF'
Usage: launch/tpu_vm.sh [--dry_run] [--keep] COMMAND [COMMAND ...]

Commands (run in the order given):
  create    gcloud compute tpus tpu-vm create (ACCELERATOR, RUNTIME_VERSION; SPOT / PREEMPTIBLE)
  pack      git archive HEAD of this checkout -> REPO (only when REPO is a gs://...tar.gz)
  install   on every worker: Python, a virtual environment, the code from REPO, pip install -e .
            with JAX_SPEC (jax[tpu])
  run       on every worker: python -m ssl_jax.main --config=CONFIG --workdir=WORKDIR
            --config.data.data_dir=DATA_DIR --multihost EXTRA_ARGS
  delete    gcloud compute tpus tpu-vm delete
  all       create install run delete (delete is skipped with --keep; it also runs when 'run'
            fails, so a failed run does not leave a slice billing)

Flags:
  --dry_run, -n   print every command instead of running it (also: DRY_RUN=1); needs no gcloud.
                  'run' also prints the line each worker runs, one per worker
  --keep          with 'all': keep the slice after the run (also: KEEP=1)
  --help, -h      this text

Environment (default):
  BUCKET           gs://YOUR_BUCKET   bucket holding code, data and runs
  TPU_NAME         ssl-jax-v3-32
  ZONE             europe-west4-a
  ACCELERATOR      v3-32              4 workers x 8 TPU cores = 32 JAX devices
  WORKERS          from ACCELERATOR   worker hosts in the slice, for the dry run's per-worker lines
  RUNTIME_VERSION  tpu-ubuntu2204-base
  PROJECT          (gcloud's current project)
  SPOT             0                  1: --spot
  PREEMPTIBLE      0                  1: --preemptible
  CONFIG           configs/jigsaw_r50.py   (relative to the checkout; ':ARG' allowed)
  RUN_NAME         from CONFIG, e.g. jigsaw_r50
  WORKDIR          $BUCKET/runs/$RUN_NAME  (the same WORKDIR resumes)
  DATA_DIR         $BUCKET/tfds       TFDS data_dir; empty: keep the config's
  EXTRA_ARGS       (none)             more flags, e.g. "--config.optim.batch_size=1024"
  REPO             $BUCKET/ssl_jax.tar.gz   a gs://...tar.gz (see 'pack') or a git URL
  REPO_REF         main               branch or tag, for a git URL
  REMOTE_DIR       ssl_jax            checkout on each worker (relative to the home directory)
  VENV_DIR         ssl_jax_venv       virtual environment on each worker
  PYTHON           python3.11         interpreter on the workers
  APT_PACKAGES     "$PYTHON $PYTHON-venv"   apt packages installed when missing; empty: none
  JAX_SPEC         jax[tpu]           pip requirement for JAX on TPU (pin it: jax[tpu]==X)
  LIBTPU_FIND_LINKS  https://storage.googleapis.com/jax-releases/libtpu_releases.html
  LOG_FILE         ssl_jax_run.log    each worker's copy of its output (home directory)
  DRY_RUN          0
  KEEP             0
EOF
}

DRY_RUN="${DRY_RUN:-0}"
KEEP="${KEEP:-0}"
commands=()
while (($#)); do
  case "$1" in
    --dry_run | --dry-run | -n) DRY_RUN=1 ;;
    --keep) KEEP=1 ;;
    -h | --help)
      usage
      exit 0
      ;;
    create | pack | install | run | delete | all) commands+=("$1") ;;
    *)
      echo "tpu_vm.sh: unknown argument '$1'; commands: create pack install run delete all;" \
        "flags: --dry_run --keep --help" >&2
      exit 2
      ;;
  esac
  shift
done
if ((${#commands[@]} == 0)); then
  usage >&2
  exit 2
fi

BUCKET="${BUCKET:-gs://YOUR_BUCKET}"
BUCKET="${BUCKET%/}"
TPU_NAME="${TPU_NAME:-ssl-jax-v3-32}"
ZONE="${ZONE:-europe-west4-a}"
ACCELERATOR="${ACCELERATOR:-v3-32}"
RUNTIME_VERSION="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"
PROJECT="${PROJECT:-}"
SPOT="${SPOT:-0}"
PREEMPTIBLE="${PREEMPTIBLE:-0}"
CONFIG="${CONFIG:-configs/jigsaw_r50.py}"
# configs/jigsaw_r50.py:perms=10000 -> jigsaw_r50_perms=10000
config_path="${CONFIG%%:*}"
config_name="$(basename "$config_path" .py)"
if [[ "$CONFIG" == *:* ]]; then
  config_name="${config_name}_${CONFIG#*:}"
  config_name="${config_name//,/_}"
fi
RUN_NAME="${RUN_NAME:-$config_name}"
WORKDIR="${WORKDIR:-$BUCKET/runs/$RUN_NAME}"
DATA_DIR="${DATA_DIR-$BUCKET/tfds}"
EXTRA_ARGS="${EXTRA_ARGS:-}"
REPO="${REPO:-$BUCKET/ssl_jax.tar.gz}"
REPO_REF="${REPO_REF:-main}"
REMOTE_DIR="${REMOTE_DIR:-ssl_jax}"
VENV_DIR="${VENV_DIR:-ssl_jax_venv}"
PYTHON="${PYTHON:-python3.11}"
JAX_SPEC="${JAX_SPEC:-jax[tpu]}"
libtpu_releases="https://storage.googleapis.com/jax-releases/libtpu_releases.html"
LIBTPU_FIND_LINKS="${LIBTPU_FIND_LINKS-$libtpu_releases}"
LOG_FILE="${LOG_FILE:-ssl_jax_run.log}"
# Ubuntu 22.04 runtimes ship Python 3.10; ssl_jax needs 3.11, and venv needs ensurepip.
APT_PACKAGES="${APT_PACKAGES-$PYTHON $PYTHON-venv}"

# One shell word, quoted only when it has to be, so printed commands can be pasted as they are.
quote() {
  local word="$1"
  if [[ "$word" =~ ^[A-Za-z0-9_./:=@,+%^-]+$ ]]; then
    printf '%s' "$word"
  elif [[ ! "$word" =~ [\$\`\"\\!] ]]; then
    printf '"%s"' "$word"
  elif [[ "$word" =~ ^(--[A-Za-z0-9_.-]+=)(.*)$ ]]; then
    printf "%s'%s'" "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]//\'/\'\\\'\'}"
  else
    printf "'%s'" "${word//\'/\'\\\'\'}"
  fi
}

# A command line as one string: for printing, and for --command on the workers.
join_quoted() {
  local out="" word
  for word in "$@"; do
    out+="${out:+ }$(quote "$word")"
  done
  printf '%s' "$out"
}

# Prints the command; runs it unless this is a dry run.
step() {
  printf '+ %s\n' "$(join_quoted "$@")"
  if [[ "$DRY_RUN" != 1 ]]; then
    "$@"
  fi
}

tpu_vm=(gcloud compute tpus tpu-vm)
where=("--zone=$ZONE")
if [[ -n "$PROJECT" ]]; then
  where+=("--project=$PROJECT")
fi

# Runs one shell command line on every worker of the slice at the same time.
on_all_workers() {
  step "${tpu_vm[@]}" ssh "$TPU_NAME" "${where[@]}" --worker=all "--command=$1"
}

do_create() {
  local extra=()
  if [[ "$SPOT" == 1 ]]; then
    extra+=(--spot)
  elif [[ "$PREEMPTIBLE" == 1 ]]; then
    extra+=(--preemptible)
  fi
  step "${tpu_vm[@]}" create "$TPU_NAME" "${where[@]}" "--accelerator-type=$ACCELERATOR" \
    "--version=$RUNTIME_VERSION" ${extra[@]+"${extra[@]}"}
}

do_pack() {
  if [[ "$REPO" != gs://*.tar.gz ]]; then
    echo "tpu_vm.sh pack: REPO=$REPO is not a gs://...tar.gz; set REPO=gs://BUCKET/ssl_jax.tar.gz" \
      "or use a git URL (then 'install' clones it and 'pack' is not needed)" >&2
    exit 2
  fi
  local root archive
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  archive="${TMPDIR:-/tmp}/ssl_jax_$RUN_NAME.tar.gz"
  # Committed files only (HEAD): uncommitted edits do not reach the workers.
  step git -C "$root" archive --format=tar.gz "--output=$archive" HEAD
  step gcloud storage cp "$archive" "$REPO"
}

do_install() {
  local fetch pip_links=()
  if [[ "$REPO" == gs://* ]]; then
    fetch="rm -rf $(quote "$REMOTE_DIR") && mkdir -p $(quote "$REMOTE_DIR")"
    fetch+=" && gcloud storage cp $(quote "$REPO") - | tar -xzf - -C $(quote "$REMOTE_DIR")"
  else
    fetch="rm -rf $(quote "$REMOTE_DIR")"
    fetch+=" && $(join_quoted git clone --depth=1 "--branch=$REPO_REF" "$REPO" "$REMOTE_DIR")"
  fi
  if [[ -n "$LIBTPU_FIND_LINKS" ]]; then
    pip_links=(-f "$LIBTPU_FIND_LINKS")
  fi
  local py venv_pip
  py="$(quote "$PYTHON")"
  venv_pip="$(quote "$VENV_DIR/bin/pip")"
  local remote="set -euo pipefail"
  if [[ -n "$APT_PACKAGES" ]]; then
    local packages=()
    read -r -a packages <<<"$APT_PACKAGES"
    remote+="; dpkg -s $(join_quoted "${packages[@]}") >/dev/null 2>&1"
    remote+=" || { sudo apt-get update -qq"
    remote+=" && $(join_quoted sudo apt-get install -y -qq "${packages[@]}"); }"
  fi
  remote+="; $fetch"
  remote+="; $py -m venv $(quote "$VENV_DIR")"
  remote+=" && $venv_pip install -q -U pip"
  remote+=" && $(join_quoted "$VENV_DIR/bin/pip" install -q -e "./$REMOTE_DIR" "$JAX_SPEC" \
    ${pip_links[@]+"${pip_links[@]}"})"
  on_all_workers "$remote"
}

do_run() {
  local args=(--config="$CONFIG" --workdir="$WORKDIR")
  if [[ -n "$DATA_DIR" ]]; then
    args+=("--config.data.data_dir=$DATA_DIR")
  fi
  args+=(--multihost)
  local extra=()
  # EXTRA_ARGS is a list of flags separated by spaces (no spaces inside one flag).
  read -r -a extra <<<"$EXTRA_ARGS"
  args+=(${extra[@]+"${extra[@]}"})
  local remote
  remote="set -o pipefail; cd $(quote "$REMOTE_DIR")"
  remote+=" && $(join_quoted "../$VENV_DIR/bin/python" -m ssl_jax.main "${args[@]}")"
  remote+=" 2>&1 | tee -a $(quote "../$LOG_FILE")"
  on_all_workers "$remote"
  if [[ "$DRY_RUN" == 1 ]]; then
    print_worker_commands "$remote"
  fi
}

do_delete() {
  step "${tpu_vm[@]}" delete "$TPU_NAME" "${where[@]}" --quiet
}

# Sets workers (hosts in the slice), devices (JAX devices in all) and unit (what one device is)
# from ACCELERATOR; empty for a type not listed here. The number in the type counts
#   v2-N, v3-N               TensorCores; one JAX device per core, 8 cores per worker
#   v4-N, v5p-N              TensorCores; 2 per chip and one JAX device per chip, 4 chips per worker
#   v5litepod-N, v6e-N       chips; one JAX device per chip, one worker up to 8 chips, else 4 per
#                            worker (v5e-N, v6e-N: the same)
# WORKERS=N overrides the worker count (a type not listed, or a layout that differs).
slice_shape() {
  workers="" devices="" unit=""
  local n="${ACCELERATOR##*-}"
  if [[ "$n" =~ ^[1-9][0-9]*$ ]]; then
    case "${ACCELERATOR%-*}" in
      v2 | v3)
        devices=$n unit="TPU cores" workers=$(((n + 7) / 8))
        ;;
      v4 | v5p)
        devices=$((n / 2)) unit="TPU chips" workers=$(((n + 7) / 8))
        ;;
      v5litepod | v5e | v6e)
        devices=$n unit="TPU chips" workers=1
        if ((n > 8)); then workers=$((n / 4)); fi
        ;;
    esac
  fi
  if [[ -n "${WORKERS:-}" ]]; then
    if ! [[ "$WORKERS" =~ ^[1-9][0-9]*$ ]]; then
      echo "tpu_vm.sh: WORKERS=$WORKERS is not a positive whole number; set it to the slice's" \
        "number of worker hosts, or unset it to derive it from ACCELERATOR=$ACCELERATOR" >&2
      exit 2
    fi
    workers=$WORKERS
    if [[ -n "$devices" ]] && ((devices % workers)); then
      devices="" # the devices do not split evenly: the layout is not one this script knows
    fi
  fi
}

describe_slice() {
  if [[ -n "$workers" && -n "$devices" ]]; then
    local noun=workers
    if ((workers == 1)); then noun=worker; fi
    echo "# $ACCELERATOR: $workers $noun x $((devices / workers)) $unit = $devices JAX devices;" \
      "config.optim.batch_size (global) must be a multiple of $devices"
  elif [[ -n "$workers" ]]; then
    echo "# $ACCELERATOR: WORKERS=$workers workers (JAX devices per worker: not known for this layout)"
  elif [[ "$DRY_RUN" == 1 ]]; then
    echo "# ACCELERATOR=$ACCELERATOR is not a type this script knows (v2-N v3-N v4-N v5p-N" \
      "v5litepod-N v6e-N); set WORKERS=N to see each worker's command"
  fi
}

# Dry run: the line each worker runs. JAX finds its place on the TPU VM itself.
print_worker_commands() {
  local remote="$1" w
  if [[ -z "$workers" ]]; then
    return 0
  fi
  echo "# each worker runs the same line (--worker=all; --worker=N runs it on worker N alone)." \
    "jax.distributed.initialize() reads the worker's number and the slice's workers from the" \
    "TPU VM metadata (agent-worker-number, worker-network-endpoints); process 0, on worker 0," \
    "serves the coordinator on port 8482:"
  for ((w = 0; w < workers; w++)); do
    if [[ -n "$devices" ]]; then
      echo "[worker $w/$workers: process $w of $workers, $((devices / workers)) of $devices" \
        "JAX devices] $remote"
    else
      echo "[worker $w/$workers: process $w of $workers] $remote"
    fi
  done
}

if [[ "$DRY_RUN" == 1 ]]; then
  echo "# dry run: commands are printed, not run"
else
  if ! command -v gcloud >/dev/null; then
    echo "tpu_vm.sh: gcloud not found; install the Google Cloud CLI, or use --dry_run" >&2
    exit 1
  fi
  if [[ "$BUCKET" == gs://YOUR_BUCKET && ( "$WORKDIR" == gs://YOUR_BUCKET* || \
    "$REPO" == gs://YOUR_BUCKET* || "$DATA_DIR" == gs://YOUR_BUCKET* ) ]]; then
    echo "tpu_vm.sh: set BUCKET=gs://your-bucket (or WORKDIR, DATA_DIR and REPO)" >&2
    exit 2
  fi
fi
slice_shape
describe_slice

for command in "${commands[@]}"; do
  case "$command" in
    create) do_create ;;
    pack) do_pack ;;
    install) do_install ;;
    run) do_run ;;
    delete) do_delete ;;
    all)
      do_create
      do_install
      status=0
      do_run || status=$?
      if [[ "$KEEP" == 1 ]]; then
        echo "# --keep: the slice $TPU_NAME stays up; delete it with: launch/tpu_vm.sh delete"
      else
        do_delete
      fi
      if ((status != 0)); then
        echo "tpu_vm.sh: the run failed (exit $status); rerun 'create install run' to resume" \
          "from $WORKDIR" >&2
        exit "$status"
      fi
      ;;
  esac
done
