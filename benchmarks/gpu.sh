#!/usr/bin/env bash
# Every GPU benchmark, one after the other, each in a time box so that the whole run stays under
# 8 minutes on an H100/H200 (most of it is torch.compile and Triton autotuning; the timings
# themselves take seconds). Writes benchmarks/results/*-cuda.json:
#
#   train-gpu-cuda.json       GPT-2 124M training step, bf16, B12 x T1024, ours vs transformers,
#                             both compiled: tokens/s and MFU           (benchmarks/train_gpu.py)
#   decode-gpu-cuda.json      decoding, batch 1 and 32, GPT-2 and SmolLM2 (random weights): our
#                             static cache + compiled step vs transformers' static-cache
#                             generate                                  (benchmarks/decode_gpu.py)
#   flash-attention-cuda.json our Triton flash-attention kernels vs SDPA, fwd and fwd+bwd
#                             (benchmarks/flash_attention_gpu.py)
#
#   bash benchmarks/gpu.sh            # on a machine with CUDA
#   bash benchmarks/gpu.sh --smoke    # the CPU smoke paths of the two new scripts (no files)
#
# Time boxes (seconds) can be changed: TRAIN_S (default 170), DECODE_S (220), FLASH_S (70).
# A benchmark that runs out of its box is reported and the next one runs; the exit status is
# non-zero if any failed. PYTHON picks the interpreter (default .venv/bin/python, else python3).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}

if [ "${1:-}" = "--smoke" ]; then
    set -e
    "$PYTHON" benchmarks/train_gpu.py --smoke
    "$PYTHON" benchmarks/decode_gpu.py --smoke
    exit 0
fi

if ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "benchmarks/gpu.sh needs a CUDA GPU and this machine has none" \
        "(bash benchmarks/gpu.sh --smoke runs the CPU smoke paths)" >&2
    exit 2
fi

nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader 2>/dev/null || true
failed=0
run() {  # run NAME SECONDS COMMAND...
    local name=$1 limit=$2
    shift 2
    echo "=== $name (at most ${limit} s): $*"
    local start=$SECONDS
    timeout --signal=INT --kill-after=10 "$limit" "$@"
    local status=$?
    echo "=== $name: exit $status after $((SECONDS - start)) s"
    [ "$status" -eq 0 ] || failed=1
}

run train "${TRAIN_S:-170}" "$PYTHON" benchmarks/train_gpu.py
run decode "${DECODE_S:-220}" "$PYTHON" benchmarks/decode_gpu.py --new-tokens 128 --rounds 3
run flash "${FLASH_S:-70}" "$PYTHON" benchmarks/flash_attention_gpu.py --dims 128 \
    --lengths 4096 8192 --iters 20
echo "total ${SECONDS} s; results:"
ls -l benchmarks/results/*-cuda.json 2>/dev/null
exit $failed
