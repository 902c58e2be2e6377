// The harness of the server tests (server_test.mjs, anthropic_test.mjs):
// servers started on loopback ports the kernel chooses (--port 0) and stopped
// on every path, and the pass/fail count. A server that does not exit cleanly
// (0) on SIGTERM fails the run (under ASan that includes leaks).
//
// Both test files take: MOETIER_BIN MODEL_DIR
import { spawn } from 'node:child_process';
import assert from 'node:assert/strict';

export const [bin, modelDir] = process.argv.slice(2);
if (!bin || !modelDir) {
  console.error(`usage: node ${process.argv[1]} MOETIER_BIN MODEL_DIR`);
  process.exit(2);
}
export const MODEL = 'tiny';
export const servers = new Set();

// A tool call in Kimi's markers, after reasoning: what the forced server answers.
export const FORCED = 'Thinking it over.</think>Let me check.<|tool_calls_section_begin|>' +
  '<|tool_call_begin|>functions.get_weather:0<|tool_call_argument_begin|>{"city": "Paris"}' +
  '<|tool_call_end|><|tool_calls_section_end|>';

export function startServer(args, env = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, ['serve', '-m', modelDir, '--port', '0', '--model-name', MODEL, '-t', '1', ...args],
      { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
    const srv = { child, log: '', exited: null };
    servers.add(srv);
    const timer = setTimeout(() => reject(new Error('server did not start in 60 s:\n' + srv.log)), 60000);
    child.stderr.on('data', (d) => {
      srv.log += d;
      const m = /listening on http:\/\/([\d.]+):(\d+)/.exec(srv.log);
      if (m && !srv.url) {
        srv.url = `http://${m[1]}:${m[2]}`;
        clearTimeout(timer);
        resolve(srv);
      }
    });
    srv.done = new Promise((res) => child.on('exit', (code, sig) => { srv.exited = { code, sig }; res(srv.exited); }));
    child.on('exit', () => { if (!srv.url) { clearTimeout(timer); reject(new Error('server exited:\n' + srv.log)); } });
  });
}

export async function stopServer(srv) {
  if (!srv.exited && !srv.signalled) srv.child.kill('SIGTERM');
  const kill = setTimeout(() => srv.child.kill('SIGKILL'), 30000);
  const st = await srv.done;
  clearTimeout(kill);
  servers.delete(srv);
  assert.equal(st.code, 0, `server exit ${JSON.stringify(st)}; its log:\n${srv.log.slice(-4000)}`);
}

process.on('exit', () => { for (const s of servers) s.child.kill('SIGKILL'); });

export const user = (content) => [{ role: 'user', content }];
let failures = 0, passed = 0;
export async function check(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`ok   ${name}`);
  } catch (e) {
    failures++;
    console.log(`FAIL ${name}\n     ${(e && e.stack) || e}`);
  }
}
export async function expectStatus(promise, status) {
  try {
    await promise;
  } catch (e) {
    assert.equal(e.status, status, `expected HTTP ${status}, got ${e.status}: ${e.message}`);
    return e;
  }
  assert.fail(`expected HTTP ${status}, the request succeeded`);
}

// A failure outside any check (a server that would not start).
export function fail(e) {
  failures++;
  console.log(`FAIL ${(e && e.stack) || e}`);
}

// Stops what is left, prints the count and exits with the result.
export function finish(what) {
  for (const s of [...servers]) s.child.kill('SIGKILL');
  console.log(`${what}: ${passed} passed, ${failures} failed`);
  process.exit(failures ? 1 : 0);
}
