#!/usr/bin/env bash
# The CUDA backend's checks and numbers in one run on a machine with a GPU
# (docs/gpu.md): build, the GPU tests (operations with a sync after every
# kernel, golden, tier and VRAM-cache invariance), `moetier bench gpu`, and
# decode of a k2-slice model on the CPU and on the GPU with the VRAM cache
# swept. Every log goes to $OUT (default bench/results/gpu-<time>); the summary
# is printed at the end. Each step has its own time limit so one hang does not
# cost the rest.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-bench/results/gpu-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$out" build/tmp
export MOETIER_TESTDATA=${MOETIER_TESTDATA:-$PWD/../shared/testdata}
export MOETIER_BIN=$PWD/build/moetier MOETIER_TMP=$PWD/build/tmp
jobs=$(nproc)
step() {    # step NAME SECONDS COMMAND...: runs it, logs to $out/NAME.log, notes the status
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" > "$out/$name.log" 2>&1
    local rc=$?
    echo "$name: rc $rc, $((SECONDS - t0)) s" | tee -a "$out/summary.txt"
    return $rc
}
{ nvidia-smi; nvcc --version; lscpu | head -20; free -g; } > "$out/machine.txt" 2>&1
step build 600 make -j"$jobs" build/moetier build/tests/unit_tests || { tail -40 "$out/build.log"; exit 1; }
step test-gpu-ops 300 env MOETIER_CUDA_SYNC=1 build/tests/unit_tests --filter 'gpu/*' --verbose -j4
step test-golden-gpu 600 build/tests/unit_tests --filter 'golden/*_gpu' --verbose -j4
step test-vram-invariance 600 build/tests/unit_tests --filter 'tiers/invariance_gpu*' -j4
step test-tier-invariance-gpu 900 build/tests/unit_tests --filter 'tiers/invariance_testdata_gpu*' -j3
step bench-gpu-copy 120 build/moetier bench gpu --json
step bench-gpu-overlap 300 build/moetier bench gpu --overlap --json
step bench-gpu-overlap-4-4 300 build/moetier bench gpu --overlap --experts 4,4 --json
# decode: a k2-slice (real K2 shapes: 1 dense + 1 MoE layer of 384 INT4 experts)
slice=build/tmp/k2-slice-int4
step synth-slice 600 build/moetier synth --preset k2-slice --layers 2 --format int4 -o "$slice" --force
ids=$(seq -s, 1 64)
step decode-cpu 300 build/moetier run -m "$slice" --ids "$ids" -n 33 --greedy --ignore-eos --stats
for gb in 8 10 14 24; do
    step "decode-gpu-vram-$gb" 300 build/moetier run -m "$slice" --backend cuda --vram-gb "$gb" \
        --ids "$ids" -n 33 --greedy --ignore-eos --stats
done
# the same with every miss copied (no CPU side), then a cost-model run whose
# experts come from a DRAM tier registered with the GPU (asynchronous copies)
step decode-gpu-vram-10-nocpu 300 build/moetier run -m "$slice" --backend cuda --vram-gb 10 \
    --cpu-tokens 0 --ids "$ids" -n 33 --greedy --ignore-eos --stats
step convert-slice 600 build/moetier convert -m "$slice" --force
step decode-gpu-vram-10-dram 300 build/moetier run -m "$slice" --backend cuda --vram-gb 10 \
    --dram-gb 100 --ids "$ids" -n 33 --greedy --ignore-eos --stats
# a DRAM tier of about half the experts (evicts, reads from NVMe; a layer's
# reserved experts still go to the GPU in one batch)
step decode-gpu-vram-10-dram-4 300 build/moetier run -m "$slice" --backend cuda --vram-gb 10 \
    --dram-gb 4 --ids "$ids" -n 33 --greedy --ignore-eos --stats
echo "== summary ($out)"
cat "$out/summary.txt"
grep -h -E "Synthesis|prefill_logits|decode_logits|FAIL" "$out"/test-*.log | sort | uniq -c
cat "$out/bench-gpu-copy.log" "$out"/bench-gpu-overlap*.log
grep -H -E "^prefill:|VRAM expert cache|GPU plan|expert cache:|hybrid cost model|registered|backend calls" \
    "$out"/decode-*.log
