#!/usr/bin/env bash
# gpu_check.sh — one-shot validation of qwen35-tune on ONE H100/H200: offline, time-capped, random-init models of the
# real Qwen3.5 shapes (qwen35_tune/model_configs). The stages live in scripts/gpu_check/stages.py and call the
# project's public functions, so the check follows the code; CI runs it as a CPU dry run
# (tests/smoke/test_gpu_check_dry_run.py), so it cannot rot.
#
# Stages (each in its own process with a time cap; results stream to $OUT/results.jsonl and $OUT/summary.txt, stage
# logs to $OUT/logs.tgz, so a stage that dies or times out keeps the earlier numbers):
#   doctor      versions, `qwen35-tune doctor RECIPE` (offline), what train's kernel check binds or refuses
#   conv        the bound causal convolution (fla's Triton kernel when causal-conv1d is absent) at the real GDN width
#               (8192 channels), called with a packed batch's boundaries, vs transformers' torch conv per sample
#   gva         fla chunk_gated_delta_rule at Qwen3.5's grouped-value shapes (16 qk / 32 v heads, K=V=128), varlen,
#               vs transformers' torch reference per sample: output and all five gradients
#   throughput  the real 9B (32 layers + vision tower, random bf16), shipped LoRA recipe, gradient checkpointing,
#               AdamW, TRL's chunked loss, 8192 tokens a step: A one 8k sample, B 8 samples packed (the kernels
#               train selects), C the same 8 padded 4 per micro-batch; tokens/s, 6N-MFU, peak memory, vs `plan`
#   packed      packed == unpacked through train's kernels: 4-layer 9B-shaped fp32 model, per-sample loss and LoRA
#               grads; the position_ids-only control leaks; kernel vs torch hidden states
#   qlora_moe   35B-A3B-shaped (2 layers, 256 experts, real vocabulary) saved, then loaded as train loads it
#               (load_model + prepare_model): memory after load / after preparation, expert bytes, step time
#   *_cc        only if causal-conv1d finished building in the background: doctor, conv, packed, throughput B again
#
# Usage, from anywhere:
#   bash scripts/gpu_check.sh prepare   # on a machine WITH the package registry: wheels into .whl/ (git-ignored)
#   bash scripts/gpu_check.sh run       # on the GPU machine (no network): offline install into /tmp/site, run
#   bash scripts/gpu_check.sh list      # stage names and time caps
#   GPU_CHECK_SMOKE=1 bash scripts/gpu_check.sh run   # CPU dry run, tiny shapes, all stages in one process
# Environment: PYBIN (python, default python3), OUT (default /tmp/gpu_check_out), GPU_CHECK_STAGES ("conv packed"),
#   GPU_CHECK_BUDGET_S (default 575: the whole run, under a 600 s command limit), CAP_SCALE (slow dry runs only).
# The .whl/ folder is git-ignored: a device runner that copies only the work tree must be told to carry it
#   (e.g. carry: [".whl"]). Transfer limit 64 MiB in all: `prepare` prints the estimate (bitsandbytes ~43 MB).
#
# Reading results.jsonl (one JSON object per line; every stage ends with a {"status": ok|error|oom|timeout} row):
#   doctor.verdict PASS = doctor exits 0 and train would run fla's recurrence and a varlen convolution.
#   conv.verdict   PASS = output rel err < 1e-2, grads < 3e-2 (bf16), and convolving the row without boundaries leaks.
#   gva.verdict    PASS = fla's varlen grouped-value kernel matches the torch reference (< 3e-2 out, < 5e-2 grads).
#   packed.verdict PASS = per-sample loss rel diff < 1e-3, LoRA grads < 1e-2, control leaks > 10x, kernel vs torch
#                  hidden states < 2e-2.
#   throughput rows: tokens_per_s, mfu_6N (6 x non-embedding LM params + lm_head, + causal attention, / 989 TF/s),
#                  peak_gib vs the planner's table (its "ddp" total, GB). B vs A: cost of packing boundaries; C vs B:
#                  what packing buys over padding.
#   qlora_moe rows: after_load vs after_prepare memory and expert_bytes (x20 for the real 40 layers), step_s.
#
# Budget: ~15 device-minutes in all (start 1-2 min). Stage caps below add up to 555 s; a normal run is shorter.
# The first use of fla's Triton kernels JIT-compiles them (tens of seconds, inside the conv / gva caps).
# causal-conv1d and flash-attn have no wheels on PyPI: causal-conv1d is built here from its sdist (sm_90 only,
# in the background, capped); flash-attn is not attempted (a 30+ minute build): attention runs sdpa.
set -uo pipefail

MODE="${1:-run}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
PYBIN="${PYBIN:-python3}"
WHL="$REPO/.whl"
STAGES_PY="$HERE/gpu_check/stages.py"
PLAN=(doctor:45 conv:60 gva:90 throughput:160 packed:90 qlora_moe:110)  # name:cap_seconds, in run order
FLA_VERSION="${FLA_VERSION:-0.6.0}"
CAUSAL_CONV1D_VERSION="${CAUSAL_CONV1D_VERSION:-1.7.0}"

if [[ "$MODE" == "list" ]]; then
  for item in "${PLAN[@]}"; do echo "${item%%:*} ${item##*:}"; done
  exit 0
fi

if [[ "$MODE" == "prepare" ]]; then
  cd "$REPO" || exit 1
  mkdir -p "$WHL"
  # The versions CI tests with (read from PYBIN's environment), so the GPU run checks the same stack.
  pin() { "$PYBIN" -c "import importlib.metadata as m; print('$1==' + m.version('$1'))" 2>/dev/null || echo "$1"; }
  PLAT=(--python-version "${GPU_PY_VERSION:-3.12}" --implementation cp --platform manylinux_2_28_x86_64
        --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
        --platform manylinux2014_x86_64)
  for p in $(pin transformers) $(pin trl) $(pin peft) $(pin accelerate) $(pin bitsandbytes) $(pin pydantic) \
           $(pin pydantic-core) $(pin annotated-types) $(pin typing-inspection) typing-extensions einops \
           "regex>=2025.10.22" "fla-core==$FLA_VERSION" "flash-linear-attention==$FLA_VERSION"; do
    "$PYBIN" -m pip download -q --no-deps --only-binary=:all: "${PLAT[@]}" -d "$WHL" "$p" || echo "!! no wheel: $p"
  done
  # causal-conv1d: sdist only. Downloading it runs its setup.py, which imports torch: PYBIN must have torch.
  "$PYBIN" -m pip download -q --no-deps --no-binary=:all: --no-build-isolation -d "$WHL" \
    "causal-conv1d==$CAUSAL_CONV1D_VERSION" || echo "!! causal-conv1d sdist not downloaded: the *_cc stages skip"
  ls -la "$WHL"
  whl_b=$(find "$WHL" -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}')
  repo_b=$(git ls-files -z | xargs -0 stat -c %s 2>/dev/null | awk '{s+=$1} END {print s+0}')
  total=$(( (whl_b + repo_b) / 1048576 ))
  echo "transfer estimate: ${total} MiB (wheels $(( whl_b / 1048576 )) + tracked files $(( repo_b / 1048576 ))) of a" \
       "64 MiB limit; untracked, non-ignored files count too"
  (( total < 64 )) || { echo "!! over the transfer limit: drop a wheel the GPU image already has"; exit 1; }
  exit 0
fi

if [[ "$MODE" != "run" ]]; then
  echo "usage: bash scripts/gpu_check.sh prepare|run|list" >&2
  exit 2
fi

SMOKE="${GPU_CHECK_SMOKE:-0}"
BUDGET_S="${GPU_CHECK_BUDGET_S:-575}"
export OUT="${OUT:-/tmp/gpu_check_out}"
LOGDIR="${LOGDIR:-$OUT.logs}"  # logs live outside $OUT, which keeps only a few result files
mkdir -p "$OUT" "$LOGDIR"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 WANDB_MODE=offline TOKENIZERS_PARALLELISM=false PYTHONDONTWRITEBYTECODE=1
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
export TRITON_CACHE_DIR="${TRITON_CACHE_DIR:-/tmp/triton_cache}" QWEN35_TUNE_CACHE="${QWEN35_TUNE_CACHE:-/tmp/qwen35_cache}"
START=$(date +%s)
elapsed() { echo $(( $(date +%s) - START )); }
log() { echo "[$(elapsed)s] $*" | tee -a "$OUT/summary.txt"; }
pack_logs() { tar czf "$OUT/logs.tgz" -C "$LOGDIR" . 2>/dev/null; }

export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
if [[ "$SMOKE" != "1" ]]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$OUT/summary.txt"
  if ls "$WHL"/*.whl >/dev/null 2>&1; then
    "$PYBIN" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      "$WHL"/*.whl > "$LOGDIR/pip_install.log" 2>&1 || log "!! wheel install failed (see pip_install.log)"
    export PYTHONPATH="/tmp/site:$PYTHONPATH"
  else
    log "!! no .whl/ carried: using the image's packages (no fla: the kernel stages will fail or report torch)"
  fi
  if ls "$WHL"/causal_conv1d-*.tar.gz >/dev/null 2>&1; then  # built in the background while the stages run
    (
      d=$(mktemp -d) && tar xzf "$WHL"/causal_conv1d-*.tar.gz -C "$d" && cd "$d"/causal_conv1d-* &&
      "$PYBIN" - <<'PY' &&
import pathlib, re
p = pathlib.Path("setup.py")
# keep sm_90 only: every other -gencode append is cancelled by popping the "-gencode" flag appended before it
p.write_text(re.sub(r'cc_flag\.append\("arch=compute_(?!90,)\d+,code=sm_\d+"\)', "cc_flag.pop()", p.read_text()))
PY
      CAUSAL_CONV1D_FORCE_BUILD=TRUE MAX_JOBS=8 NVCC_THREADS=2 timeout 420 "$PYBIN" -m pip install -v --no-index \
        --no-deps --no-build-isolation --target /tmp/site_cc . && touch "$LOGDIR/.cc_ok"
    ) > "$LOGDIR/causal_conv1d_build.log" 2>&1 &
    CC_PID=$!
  fi
fi

# stage TAG CAP NAME... : run the named stages in one process under a time cap (shrunk to what the budget has left)
stage() {
  local tag="$1" cap=$(( $2 * ${CAP_SCALE:-1} )); shift 2
  local left=$(( BUDGET_S * ${CAP_SCALE:-1} - $(elapsed) ))
  (( cap > left )) && cap=$left
  if (( cap < 15 )); then
    log "stage $tag skipped: ${left}s of the budget left"
    echo "{\"stage\": \"$tag\", \"status\": \"skipped\", \"reason\": \"budget\"}" >> "$OUT/results.jsonl"
    return
  fi
  log "stage $tag (cap ${cap}s)"
  timeout "$cap" "$PYBIN" "$STAGES_PY" "$@" > "$LOGDIR/$tag.log" 2>&1
  local rc=$?
  (( rc == 124 )) && echo "{\"stage\": \"$tag\", \"status\": \"timeout\", \"cap_s\": $cap}" >> "$OUT/results.jsonl"
  log "stage $tag rc=$rc"
  grep '^RESULT' "$LOGDIR/$tag.log" | cut -c8- | cut -c1-700 >> "$OUT/summary.txt"
  pack_logs
}

wanted=()
for item in "${PLAN[@]}"; do
  name="${item%%:*}"
  if [[ -z "${GPU_CHECK_STAGES:-}" || " ${GPU_CHECK_STAGES//,/ } " == *" $name "* ]]; then wanted+=("$item"); fi
done
if [[ "$SMOKE" == "1" ]]; then  # a dry run: one process for all (imports dominate on CPU), their caps summed
  total=0; names=()
  for item in "${wanted[@]}"; do total=$(( total + ${item##*:} )); names+=("${item%%:*}"); done
  (( ${#names[@]} )) && stage smoke "$total" "${names[@]}"
else
  for item in "${wanted[@]}"; do stage "${item%%:*}" "${item##*:}" "${item%%:*}"; done
fi

if [[ "$SMOKE" != "1" && -n "${CC_PID:-}" ]]; then
  # second pass with causal-conv1d: transformers' own varlen convolution (seq_idx) instead of fla's
  wait_s=$(( BUDGET_S - $(elapsed) - 150 ))
  if (( wait_s > 0 )); then
    log "waiting up to ${wait_s}s for the causal-conv1d build"
    for _ in $(seq 1 "$wait_s"); do kill -0 "$CC_PID" 2>/dev/null || break; sleep 1; done
  fi
  if [[ -f "$LOGDIR/.cc_ok" ]]; then
    export PYTHONPATH="/tmp/site_cc:$PYTHONPATH"
    stage doctor_cc 25 doctor
    stage conv_cc 40 conv
    stage packed_cc 90 packed
    stage throughput_cc 120 throughput_packed
  else
    log "causal-conv1d not built in time (logs.tgz: causal_conv1d_build.log): its varlen path is untested"
    kill "$CC_PID" 2>/dev/null
  fi
fi
log "verdicts and failures:"
"$PYBIN" - "$OUT/results.jsonl" <<'PY' | tee -a "$OUT/summary.txt"
import json, sys
for line in open(sys.argv[1]):
    row = json.loads(line)
    if "verdict" in row or row.get("status") not in (None, "ok"):
        print(f"  {row['stage']}: {row.get('verdict') or row['status']}")
PY
log "done"
pack_logs
