// How long a generating request waits for its tokens while another request's
// long prompt is prefilled (`serve --parallel 3`), for each --decode-interval:
// request A streams an answer; once it has some tokens, request B sends a long
// prompt (one token asked), and 0.3 s later request C a short one. Reported per
// interval: B's time to its answer (its prefill, the cost of stepping A inside
// it), C's (prompts take chunks in turn), A's tokens while B ran, A's
// longest wait between two tokens then, and A's median wait before B came
// (its step alone: the yardstick). Special tokens are shown (a random-weight
// model writes mostly reserved ones), so each token is an event. Plain fetch.
//
//   node bench/serve_stall.mjs BIN MODEL_DIR [WORDS [INTERVALS [serve args...]]]
//   node bench/serve_stall.mjs build/moetier /models/k2-slice 1500 0,500,250 -c 8192
import { spawn } from 'node:child_process';

const [bin, dir, wordsArg = '1500', intervalsArg = '0,500', ...extra] = process.argv.slice(2);
if (!bin || !dir) {
  console.error('usage: node bench/serve_stall.mjs BIN MODEL_DIR [WORDS [INTERVALS [serve args...]]]');
  process.exit(2);
}
const words = Number(wordsArg), intervals = intervalsArg.split(',').map(Number);

function start(interval) {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, ['serve', '-m', dir, '--port', '0', '--no-think', '--parallel', '3',
      '--decode-interval', String(interval), ...extra], { stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    child.stderr.on('data', (d) => {
      log += d;
      const m = /listening on (http:\/\/[\d.]+:\d+)/.exec(log);
      if (m) resolve({ child, url: m[1], log: () => log });
    });
    child.on('exit', () => reject(new Error('the server exited:\n' + log)));
  });
}

// A's answer as a stream: each token's arrival time into `times`.
async function streamTimes(url, body, times, signal) {
  const res = await fetch(url + '/v1/chat/completions', {
    method: 'POST', headers: { 'content-type': 'application/json' }, signal,
    body: JSON.stringify({ ...body, stream: true }),
  });
  if (!res.ok)
    throw new Error(`the streamed request got ${res.status}: ${await res.text()}`);
  const reader = res.body.getReader();
  const dec = new TextDecoder();
  let buf = '';
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buf += dec.decode(value, { stream: true });
      let at;
      while ((at = buf.indexOf('\n\n')) >= 0) {
        const ev = buf.slice(0, at);
        buf = buf.slice(at + 2);
        const d = ev.startsWith('data: {') ? JSON.parse(ev.slice(6)).choices?.[0]?.delta : null;
        if (d?.content || d?.reasoning_content)
          times.push(performance.now());
      }
    }
  } catch (e) {
    if (e.name !== 'AbortError') throw e;
  }
}

const median = (a) => { const s = [...a].sort((x, y) => x - y); return s[Math.floor(s.length / 2)]; };
const long = Array.from({ length: words }, (_, i) => `w${i}`).join(' ');
console.log(`| --decode-interval | B's prompt | B answered in | C answered in | A's tokens meanwhile | A's longest wait | A's step alone (median) |`);
console.log(`|---|---|---|---|---|---|---|`);
for (const interval of intervals) {
  const srv = await start(interval);
  const times = [], ctl = new AbortController();
  const a = streamTimes(srv.url, { messages: [{ role: 'user', content: 'Talk forever.' }], max_tokens: 2000,
    ignore_eos: true, skip_special_tokens: false, temperature: 0 }, times, ctl.signal);
  let failed = null;
  a.catch((e) => { failed = e; });
  while (times.length < 8 && !failed)
    await new Promise((r) => setTimeout(r, 20));
  if (failed) {
    srv.child.kill('SIGTERM');
    throw failed;
  }
  const ask = async (content) => (await fetch(srv.url + '/v1/chat/completions', {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ messages: [{ role: 'user', content }], max_tokens: 1 }),
  })).json();
  const t0 = performance.now();
  const asked = ask(`Summarize: ${long}`);
  // C: a short prompt just behind B's, in a third slot
  await new Promise((r) => setTimeout(r, 300));
  const tc = performance.now();
  await ask('Hi.');
  const tcDone = performance.now();
  const b = await asked;
  const t1 = performance.now();
  ctl.abort();
  await a;
  const before = times.filter((t) => t < t0), during = times.filter((t) => t >= t0 && t <= t1);
  const gaps = (ts) => ts.slice(1).map((t, i) => t - ts[i]);
  const edges = [t0, ...during, t1];
  const alone = median(gaps(before));
  console.log(`| ${interval} ms | ${b.usage.prompt_tokens} tokens | ${((t1 - t0) / 1000).toFixed(2)} s | ` +
    `${((tcDone - tc) / 1000).toFixed(2)} s | ${during.length} | ` +
    `${(Math.max(...gaps(edges)) / 1000).toFixed(2)} s | ${(alone / 1000).toFixed(3)} s |`);
  srv.child.kill('SIGTERM');
  await new Promise((r) => srv.child.on('exit', r));
}
