#!/usr/bin/env bash
# Race check: the threaded paths driven through a ThreadSanitizer build of the
# command line (Criterion's runner does not start under TSan): the CPU kernels'
# thread pool, the store's io_uring and pread readers with injected faults, the
# router lookahead's early reads, the DRAM tier's policies, a run stopped by
# SIGINT, chat, and the server with concurrent, streamed and cut requests.
# Called by `make test-race` with MOETIER_BIN (a -fsanitize=thread build) and
# MOETIER_TMP set; fails on the first report. Every server started here is
# stopped on exit.
set -euo pipefail
bin="${MOETIER_BIN:?MOETIER_BIN is not set}"
tmp="${MOETIER_TMP:-/tmp}/race-tests"
rm -rf "$tmp"
mkdir -p "$tmp"
export TSAN_OPTIONS="halt_on_error=1 exitcode=66 second_deadlock_stack=1 ${TSAN_OPTIONS:-}"
# TSan's shadow memory needs the classic address layout: kernels with more
# random mmap bits fail its start ("unexpected memory mapping") unless ASLR is
# off for the process
if setarch "$(uname -m)" -R true 2>/dev/null; then
  real_bin="$bin"
  bin="$tmp/moetier-no-aslr"
  printf '#!/bin/sh\nexec setarch "$(uname -m)" -R "%s" "$@"\n' "$real_bin" > "$bin"
  chmod +x "$bin"
fi
model="$tmp/tiny"
"$bin" synth --preset k2-tiny --format int4 --seed 5 -o "$model" >/dev/null
"$bin" convert -m "$model" >/dev/null 2>&1

pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

fail() { echo "FAIL race: $1"; [ -f "${2:-}" ] && tail -60 "$2"; exit 1; }
# a run's stderr must hold no report, whatever its exit status was meant to be
clean() { ! grep -q "ThreadSanitizer" "$1" || fail "$2" "$1"; }

n=0
race_run() {   # race_run NAME [ENV=V...] -- ARGS...: a run that must succeed without a report
  local name="$1"; shift
  local envs=()
  while [ "$1" != "--" ]; do envs+=("$1"); shift; done
  shift
  local log="$tmp/$name.log"
  env "${envs[@]}" "$bin" run -m "$model" -t 2 --seed 1 --ignore-eos "$@" >/dev/null 2>"$log" \
    || fail "$name exited with $?" "$log"
  clean "$log" "$name"
  n=$((n + 1))
}

# the store's 96 experts held 24 at a time: every step reads, ahead and on demand
tier=(--dram-gb 0.0014 -p "a race check of the tiers" -n 24 --stats)
race_run pool -- -p "the thread pool alone" -n 16
race_run uring_lookahead1 -- "${tier[@]}" --io uring --lookahead 1
race_run uring_lookahead2_lfu -- "${tier[@]}" --io uring --lookahead 2 --policy lfu
race_run pread_lookahead2 -- "${tier[@]}" --io pread --lookahead 2 --policy lru-plain
race_run uring_eio MOETIER_IO_FAULT=eio=7,eio_max=3 -- "${tier[@]}" --io uring --lookahead 2
race_run pread_eio_short MOETIER_IO_FAULT=eio=5,eio_max=3,short=4 -- "${tier[@]}" --io pread
race_run uring_short_refused MOETIER_IO_FAULT=short=3,refuse=5,einval=6 -- "${tier[@]}" --io uring

# SIGINT mid-decode: the run stops at a token boundary, its readers joined
log="$tmp/sigint.log"
"$bin" run -m "$model" -t 2 --ignore-eos -n 100000 --dram-gb 0.0014 --lookahead 2 \
  -p "stopped by SIGINT" >/dev/null 2>"$log" &
pid=$!
pids+=("$pid")
# once it decodes (the handler is in by then): a signal earlier would only kill it
for _ in $(seq 600); do grep -q "CPU backend" "$log" && break; sleep 0.1; done
sleep 1
kill -INT "$pid"
status=0
wait "$pid" || status=$?
clean "$log" sigint
[ "$status" = 130 ] && grep -q "SIGINT: stopped after" "$log" ||
  fail "sigint: status $status, not a stop at a token boundary" "$log"
n=$((n + 1))

# chat: two turns and a reset on standard input
log="$tmp/chat.log"
printf 'hello\nand again\n/reset\nonce more\n' |
  "$bin" chat -m "$model" -t 2 -n 12 --seed 1 --dram-gb 0.0014 >/dev/null 2>"$log" \
  || fail "chat exited with $?" "$log"
clean "$log" chat
n=$((n + 1))

# the server: concurrent requests (streamed and not) in 3 slots at once, one
# cut by its client, /metrics read meanwhile (with --profile's counts, which
# the engine thread copies there), then SIGTERM with one still streaming
log="$tmp/serve.log"
"$bin" serve -m "$model" --port 0 -t 2 --no-think --dram-gb 0.0014 --parallel 3 --profile \
  2>"$log" &
pid=$!
pids+=("$pid")
for _ in $(seq 300); do grep -q "listening on" "$log" && break; sleep 0.1; done
url="$(grep -o 'http://[0-9.]*:[0-9]*' "$log" | head -1)"
[ -n "$url" ] || fail "the server did not start" "$log"
req() { curl -s --max-time 120 "$url/v1/chat/completions" -H 'content-type: application/json' -d "$1"; }
clients=()
for i in 1 2 3; do
  req '{"messages":[{"role":"user","content":"request '$i'"}],"max_tokens":8,"stream":true}' \
    >"$tmp/stream$i.out" &
  clients+=($!)
  req '{"messages":[{"role":"user","content":"plain '$i'"}],"max_tokens":6}' >"$tmp/plain$i.out" &
  clients+=($!)
done
timeout 2 curl -sN "$url/v1/completions" -d '{"prompt":"cut","max_tokens":100000,"stream":true}' \
  >/dev/null || true
for _ in 1 2 3; do curl -s --max-time 30 "$url/metrics" >>"$tmp/metrics.out" || true; done
for c in "${clients[@]}"; do wait "$c" || fail "a request failed (curl status $?)" "$log"; done
for i in 1 2 3; do
  grep -q '^data: \[DONE\]' "$tmp/stream$i.out" || fail "stream $i did not finish" "$tmp/stream$i.out"
  grep -q '"finish_reason"' "$tmp/plain$i.out" || fail "request $i did not finish" "$tmp/plain$i.out"
done
grep -q 'moetier_profile_seconds_total{phase="decode",part="lm_head"}' "$tmp/metrics.out" ||
  fail "no profile in /metrics" "$tmp/metrics.out"
curl -sN --max-time 120 "$url/v1/completions" -d '{"prompt":"term","max_tokens":100000,"stream":true}' \
  >/dev/null &
clients=($!)
sleep 2
kill -TERM "$pid"
wait "$pid" || fail "the server exited with $? on SIGTERM" "$log"
wait "${clients[0]}" || true
clean "$log" serve
n=$((n + 1))
echo "ok   race: $n runs under ThreadSanitizer without a report"
