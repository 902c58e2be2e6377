#!/usr/bin/env bash
# The CUDA backend's checks and numbers in one run on a machine with a GPU
# (docs/gpu.md): build, the GPU tests (operations with a sync after every
# kernel, golden, a token's bits whatever its step holds, tier and VRAM-cache
# invariance), `moetier bench gpu` (copies,
# the linear kernel against HBM, decode attention over long contexts, prefill
# attention in both forms, the hybrid overlap, steps of several rows), and decode of a k2-slice
# model on the CPU and on the GPU with the VRAM cache swept (bench model). Every step's log
# goes to bench/results/gpu-<time>/; the summary is printed at the end. Each
# step has its own time limit so one hang does not cost the rest. With OUT set
# (the device tool's folder of files that come back, at most 8 of them) the
# logs are also packed there, on any exit, as gpu-<time>.tgz beside a copy of
# summary.txt.
#
# Usage: [OUT=dir] [BUDGET=seconds] bench/gpu_session.sh [GROUP ...]
#   GROUP: ops, golden, bitwise, bench, decode, invariance (default: all, in that order:
#   correctness and the numbers first; the invariance tests take longest).
#   With .device/bundle.tar.xz (bench/gpu_bundle.sh, made on the development
#   machine and carried: the device machine has no C libraries to build with)
#   the bundle's binaries run; without it, make builds.
#   BUDGET (default 540) bounds the whole run: each step's limit is cut to the
#   time left and steps that no longer fit are skipped, so one call fits the
#   device tool's 600-second limit; a second call with the groups left
#   (e.g. `BUDGET=200 ... invariance`, within the 15 device minutes) finishes
#   on the same warm machine.
set -uo pipefail
cd "$(dirname "$0")/.."
name=gpu-$(date +%Y%m%d-%H%M%S)
out=bench/results/$name
budget=${BUDGET:-540}
groups=${*:-ops golden bitwise bench decode invariance}
mkdir -p "$out" build/tmp
if [[ -n ${OUT:-} ]]; then
    trap 'tar -C bench/results -czf "$OUT/$name.tgz" "$name"; cp "$out/summary.txt" "$OUT/" 2>/dev/null' EXIT
fi
jobs=$(nproc)
want() { [[ " $groups " == *" $1 "* ]]; }
step() {    # step NAME SECONDS COMMAND...: runs it, logs to $out/NAME.log, notes the status
    local name=$1 limit=$2
    shift 2
    local left=$((budget - SECONDS - 10))
    if ((left < 15)); then
        echo "$name: skipped, out of time (BUDGET=$budget)" | tee -a "$out/summary.txt"
        return 124
    fi
    ((limit > left)) && limit=$left
    local t0=$SECONDS
    timeout "$limit" "$@" > "$out/$name.log" 2>&1
    local rc=$? skipped note=""
    skipped=$(grep -c "needs a CUDA device" "$out/$name.log")
    ((skipped > 0)) && note=", $skipped tests skipped without a device"
    echo "$name: rc $rc, $((SECONDS - t0)) s (limit $limit s)$note" | tee -a "$out/summary.txt"
    return $rc
}
{ nvidia-smi; nvcc --version; lscpu | head -20; free -g; ldd --version | head -1; } > "$out/machine.txt" 2>&1
if [[ -f .device/bundle.tar.xz ]]; then
    # built here by bench/gpu_bundle.sh: binaries, their libraries, the vectors
    b=/tmp/moetier-bundle
    rm -rf "$b" && mkdir -p "$b"
    step unpack 120 tar -C "$b" -xJf .device/bundle.tar.xz || exit 1
    export LD_LIBRARY_PATH=$b/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    bin=$b/bin/moetier tests=$b/bin/unit_tests seqs=$b/bin/bench_decode_seqs
    [[ -d $b/testdata ]] && export MOETIER_TESTDATA=${MOETIER_TESTDATA:-$b/testdata}
    # the machine's own libstdc++ and libgcc_s first (the bundle's may want a newer glibc)
    ldd "$bin" "$tests" > "$out/ldd.txt" 2>&1
    if grep -q -E "lib(stdc\+\+|gcc_s).* not found" "$out/ldd.txt" && [[ -d $b/lib-cxx ]]; then
        export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:$b/lib-cxx
        ldd "$bin" "$tests" > "$out/ldd.txt" 2>&1
    fi
    grep -q "not found" "$out/ldd.txt" && { grep "not found" "$out/ldd.txt"; exit 1; }
else
    step build 400 make -j"$jobs" build/moetier build/tests/unit_tests build/bench/bench_decode_seqs ||
        { tail -40 "$out/build.log"; exit 1; }
    bin=$PWD/build/moetier tests=$PWD/build/tests/unit_tests seqs=$PWD/build/bench/bench_decode_seqs
fi
export MOETIER_TESTDATA=${MOETIER_TESTDATA:-$PWD/../shared/testdata}
export MOETIER_BIN=$bin MOETIER_TMP=$PWD/build/tmp
# the GPU tests skip without a usable device (and would pass): stop here
# instead, saying why (an old driver for the CUDA runtime, a device not lent)
"$bin" inspect -m "$MOETIER_TESTDATA/k2-tiny-bf16" > "$out/preflight.log" 2>&1
grep -q "computes with --backend cuda" "$out/preflight.log" || {
    echo "preflight: no usable GPU for this build:" | tee -a "$out/summary.txt"
    { grep "^GPU:" "$out/preflight.log" || tail -5 "$out/preflight.log"; } | tee -a "$out/summary.txt"
    exit 1
}
if want ops; then
    step test-gpu-ops 150 env MOETIER_CUDA_SYNC=1 "$tests" --filter 'gpu/*' --verbose -j"$jobs"
fi
if want golden; then
    step test-golden-gpu 400 "$tests" --filter 'golden/*_gpu' --verbose -j"$jobs"
fi
if want bitwise; then
    # conversations stepped together, guessed tokens, restored caches: each
    # row with the bits of its token decoded alone
    step test-bitwise-gpu 300 "$tests" --filter '@(engine_seqs|draft|prompt_cache|prompt_file|cache_type|profile)/*_gpu' \
        --verbose -j"$jobs"
fi
if want bench; then
    step bench-gpu-copy 60 "$bin" bench gpu --json
    step bench-gpu-linear 90 "$bin" bench gpu --linear --json
    step bench-gpu-attention 60 "$bin" bench gpu --attention --json
    step bench-gpu-attention-bf16 60 "$bin" bench gpu --attention --json --cache-type bf16
    step bench-gpu-attention-q8 60 "$bin" bench gpu --attention --json --cache-type q8_0
    step bench-gpu-prefill-attention 90 "$bin" bench gpu --prefill-attention --json
    step bench-gpu-overlap 60 "$bin" bench gpu --overlap --json
    step bench-gpu-overlap-4-4 60 "$bin" bench gpu --overlap --experts 4,4 --json
    # decode steps of several conversations, and of 2 and 4 rows each (a token
    # and its guesses), against one row each: what --draft-lookup's tuner weighs
    step bench-decode-seqs-gpu 180 env MOETIER_BACKEND=cuda "$seqs" "$PWD/build/tmp"
fi
if want decode; then
    # a k2-slice (real K2 shapes: 1 dense + 1 MoE layer of 384 INT4 experts)
    slice=build/tmp/k2-slice-int4
    [[ -f $slice.done ]] ||
        { step synth-slice 300 "$bin" synth --preset k2-slice --layers 2 --format int4 \
              -o "$slice" --force && touch "$slice.done"; }
    # the store lives beside the slice, named only by the runs that want it: a
    # second call on a warm machine must not find it under the slice and put
    # the "no store" runs on a DRAM tier
    store=$slice-store
    rm -rf "$slice/moetier-store"
    ids=$(seq -s, 1 64)
    run_slice() { step "$1" 120 "$bin" run -m "$slice" --ids "$ids" -n 33 --greedy --ignore-eos --stats "${@:2}"; }
    run_slice decode-cpu
    run_slice decode-gpu-vram-10 --backend cuda --vram-gb 10
    # where the GPU's time goes, by part of the model (each operation waited for)
    run_slice profile-gpu-vram-10 --backend cuda --vram-gb 10 --profile
    # the VRAM cache swept: prefill and decode speed against the decode bound,
    # each size a setting of its own (a warm-up, then 2 timed repetitions)
    step bench-model-vram-sweep 300 "$bin" bench model -m "$slice" --backend cuda -p 64 -n 32 -r 2 \
        --vram-gb 8,10,14,24 --json
    # every miss copied (no CPU side), then experts from a DRAM tier registered
    # with the GPU (asynchronous copies), then one of about half the experts
    # (evicts, reads from NVMe; a layer's reserved experts still go in one batch)
    run_slice decode-gpu-vram-10-nocpu --backend cuda --vram-gb 10 --cpu-tokens 0
    step convert-slice 300 "$bin" convert -m "$slice" -o "$store"   # resumes, or nothing to do
    run_slice decode-gpu-vram-10-dram --backend cuda --vram-gb 10 --store "$store" --dram-gb 100
    run_slice decode-gpu-vram-10-dram-4 --backend cuda --vram-gb 10 --store "$store" --dram-gb 4
    # prefill of 2,048 tokens in steps of 256, 1,024 and 2,048 (the plan's
    # default on an 80 GB card): how much larger steps save (each step copies or
    # computes on the CPU about every expert once); each budget is the slice's
    # weights, KV cache and that step's activations plus 72 expert slots (19 %,
    # `moetier inspect`), so only the step length differs
    long_ids=$(seq -s, 1 2048)
    for chunk_gb in 256:8.85 1024:9.8 2048:11.06; do
        chunk=${chunk_gb%%:*}
        step "prefill-gpu-chunk-$chunk" 120 "$bin" run -m "$slice" --ids "$long_ids" -n 2 --greedy \
            --ignore-eos --stats --backend cuda --vram-gb "${chunk_gb##*:}" --chunk "$chunk" -c 4096
    done
fi
if want invariance; then
    step test-vram-invariance 300 "$tests" --filter 'tiers/invariance_gpu*' -j"$jobs"
    step test-tier-invariance-gpu 400 "$tests" --filter 'tiers/invariance_testdata_gpu*' -j"$jobs"
fi
echo "== summary ($out)"
cat "$out/summary.txt"
grep -h -E "Synthesis|prefill_logits|decode_logits|FAIL" "$out"/test-*.log 2>/dev/null | sort | uniq -c
cat "$out"/bench-gpu-*.log 2>/dev/null
grep -H -E "^prefill:|VRAM expert cache|resident weights|GPU plan|expert cache:|hybrid cost model|decode bound|register|backend calls" \
    "$out"/decode-*.log "$out"/prefill-*.log 2>/dev/null
grep -h '"bench": "model"' "$out"/bench-model-*.log 2>/dev/null
grep -h -A10 "^profile of" "$out"/profile-*.log 2>/dev/null
