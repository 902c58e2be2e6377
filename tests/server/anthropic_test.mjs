// Integration tests of `moetier serve`'s Anthropic Messages API
// (POST /v1/messages, /v1/messages/count_tokens), driven by the official
// `@anthropic-ai/sdk` client, and checked against the OpenAI routes of the
// same server: a conversation said in either API is the same prompt and,
// greedy, the same answer.
//
// usage: node anthropic_test.mjs MOETIER_BIN MODEL_DIR
import assert from 'node:assert/strict';
import Anthropic from '@anthropic-ai/sdk';
import { MODEL, FORCED, startServer, stopServer, check, expectStatus, fail, finish } from './harness.mjs';

const KEY = 'sesame';
const claude = (srv, apiKey = KEY) => new Anthropic({ baseURL: srv.url, apiKey, maxRetries: 0, timeout: 120000 });
const post = (srv, path, body) => fetch(srv.url + path, {
  method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` },
  body: JSON.stringify(body),
}).then(async (r) => ({ status: r.status, body: await r.json() }));
const textOf = (m) => m.content.filter((b) => b.type === 'text').map((b) => b.text).join('');

const tools = [{ name: 'get_weather', description: 'The weather in a city',
  input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } }];
const openaiTools = tools.map((t) => ({ type: 'function',
  function: { name: t.name, description: t.description, parameters: t.input_schema } }));

// A conversation with a system turn, a tool call and its result, in both APIs.
const conversation = {
  system: [{ type: 'text', text: 'You are terse.' }, { type: 'text', text: ' Use tools.' }],
  messages: [
    { role: 'user', content: 'Weather in Paris?' },
    { role: 'system', content: [{ type: 'text', text: 'Tools: get_weather.' }] },   // between turns, as Claude Code sends
    { role: 'assistant', content: [{ type: 'thinking', thinking: 'Ask the tool.', signature: '' },
      { type: 'text', text: 'Let me check.' },
      { type: 'tool_use', id: 'functions.get_weather:0', name: 'get_weather', input: { city: 'Paris' } }] },
    { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'functions.get_weather:0',
      content: [{ type: 'text', text: '18 C, sunny' }] }, { type: 'text', text: 'And tomorrow?' }] },
  ],
};
const openaiConversation = [
  { role: 'system', content: 'You are terse. Use tools.' },
  { role: 'user', content: 'Weather in Paris?' },
  { role: 'system', content: 'Tools: get_weather.' },
  { role: 'assistant', content: 'Let me check.', reasoning_content: 'Ask the tool.',
    tool_calls: [{ id: 'functions.get_weather:0', type: 'function',
      function: { name: 'get_weather', arguments: '{"city": "Paris"}' } }] },
  { role: 'tool', tool_call_id: 'functions.get_weather:0', content: '18 C, sunny' },
  { role: 'user', content: 'And tomorrow?' },
];

async function plainServer() {
  const srv = await startServer(['--api-key', KEY]);
  const ai = claude(srv);
  const greedy = { model: MODEL, max_tokens: 12, temperature: 0, thinking: { type: 'disabled' } };
  await check('anthropic: a conversation with tool use is the OpenAI chat\'s prompt and greedy answer', async () => {
    const m = await ai.messages.create({ ...greedy, ...conversation, tools });
    const o = await post(srv, '/v1/chat/completions', { model: MODEL, max_tokens: 12, temperature: 0,
      thinking: false, messages: openaiConversation, tools: openaiTools });
    assert.equal(o.status, 200, JSON.stringify(o.body));
    assert.equal(m.type, 'message');
    assert.match(m.id, /^msg_/);
    assert.equal(m.role, 'assistant');
    assert.equal(m.stop_reason, 'max_tokens');
    assert.equal(m.usage.output_tokens, 12);
    assert.equal(textOf(m), o.body.choices[0].message.content);
    assert.equal(m.usage.input_tokens + m.usage.cache_read_input_tokens, o.body.usage.prompt_tokens);
    const n = await ai.messages.countTokens({ model: MODEL, ...conversation, tools, thinking: { type: 'disabled' } });
    assert.equal(n.input_tokens, o.body.usage.prompt_tokens);
    // the beta route (/v1/messages?beta=true), with the fields Claude Code sends
    const b = await ai.beta.messages.create({ ...greedy, ...conversation, tools, metadata: { user_id: 'u' },
      context_management: { edits: [{ type: 'clear_thinking_20251015', keep: 'all' }] },
      output_config: { effort: 'high' }, betas: ['interleaved-thinking-2025-05-14'] });
    assert.equal(textOf(b), textOf(m));
  });
  let plain;
  await check('anthropic: streamed, the events in order, the same message', async () => {
    const ask = { ...greedy, messages: [{ role: 'user', content: 'Tell me a story.' }] };
    plain = await ai.messages.create(ask);
    const events = [];
    const st = ai.messages.stream(ask);
    st.on('streamEvent', (e) => events.push(e));
    const m = await st.finalMessage();
    assert.deepEqual(m.content, plain.content);
    assert.equal(m.stop_reason, plain.stop_reason);
    assert.equal(m.usage.output_tokens, plain.usage.output_tokens);
    assert.equal(events[0].type, 'message_start');
    assert.equal(events.at(-1).type, 'message_stop');
    assert.equal(events.at(-2).type, 'message_delta');
    const starts = events.filter((e) => e.type === 'content_block_start').map((e) => e.index);
    const stops = events.filter((e) => e.type === 'content_block_stop').map((e) => e.index);
    assert.deepEqual(starts, m.content.map((_, i) => i));
    assert.deepEqual(stops, starts);
    // message_delta's usage is the whole count: its prompt tokens overwrite message_start's
    assert.equal(m.usage.input_tokens + m.usage.cache_read_input_tokens,
      plain.usage.input_tokens + plain.usage.cache_read_input_tokens);
    assert.equal(m.usage.cache_read_input_tokens, events.at(-2).usage.cache_read_input_tokens);
  });
  await check('anthropic: max_tokens 0 computes the prompt into the cache and answers nothing', async () => {
    const ask = { ...greedy, messages: [{ role: 'user', content: 'A long question to keep for later.' }] };
    const warm = await ai.messages.create({ ...ask, max_tokens: 0 });
    assert.deepEqual(warm.content, []);
    assert.equal(warm.stop_reason, 'max_tokens');
    assert.equal(warm.usage.output_tokens, 0);
    const streamed = await ai.messages.stream({ ...ask, max_tokens: 0 }).finalMessage();
    assert.deepEqual(streamed.content, []);
    const next = await ai.messages.create(ask);
    assert.ok(next.usage.cache_read_input_tokens > 0, JSON.stringify(next.usage));
    assert.equal(next.usage.output_tokens, 12);
  });
  await check('anthropic: stop_sequences end the text and are named in stop_sequence', async () => {
    const t = textOf(plain);
    const at = [...t].findIndex((c, i) => i >= 2 && /^[A-Za-z ]{2}$/.test(t.slice(i, i + 2)));
    assert.ok(at > 0, `no two ASCII characters to stop at in ${JSON.stringify(t)}`);
    const stop = t.slice(at, at + 2);
    const ask = { ...greedy, messages: [{ role: 'user', content: 'Tell me a story.' }], stop_sequences: ['\u00a7', stop] };
    const m = await ai.messages.create(ask);
    assert.equal(textOf(m), t.slice(0, t.indexOf(stop)));
    assert.equal(m.stop_reason, 'stop_sequence');
    assert.equal(m.stop_sequence, stop);
    const s = await ai.messages.stream(ask).finalMessage();
    assert.equal(s.stop_reason, 'stop_sequence');
    assert.equal(s.stop_sequence, stop);
    assert.equal(textOf(s), textOf(m));
  });
  await check('anthropic: a last assistant message is the start the answer continues', async () => {
    const start = 'The answer is';
    const user = [{ role: 'user', content: 'What is MoE?' }];
    const m = await ai.messages.create({ model: MODEL, max_tokens: 8, temperature: 0,
      messages: [...user, { role: 'assistant', content: start }] });
    assert.equal(m.content.length, 1, JSON.stringify(m.content));   // no thinking before a given start
    // the same prompt sent as text: the chat rendered without thinking, then the start
    const ids = await post(srv, '/tokenize', { messages: user, thinking: false });
    const text = await post(srv, '/detokenize', { tokens: ids.body.tokens });
    const c = await post(srv, '/v1/completions', { model: MODEL, prompt: text.body.content + start,
      max_tokens: 8, temperature: 0 });
    assert.equal(textOf(m), c.body.choices[0].text);
    const e = await expectStatus(ai.messages.create({ model: MODEL, max_tokens: 8,
      thinking: { type: 'enabled', budget_tokens: 4 }, messages: [...user, { role: 'assistant', content: start }] }), 400);
    assert.match(e.error.error.message, /thinking/);
  });
  await check('anthropic: thinking.budget_tokens ends the reasoning after that many tokens', async () => {
    const ask = { model: MODEL, temperature: 0, messages: [{ role: 'user', content: 'Think hard.' }] };
    const free = await ai.messages.create({ ...ask, max_tokens: 16, thinking: { type: 'enabled' } });
    assert.deepEqual(free.content.map((b) => b.type), ['thinking'], 'the reasoning ended by itself: this check proves nothing');
    const first3 = await ai.messages.create({ ...ask, max_tokens: 3, thinking: { type: 'enabled' } });
    const m = await ai.messages.create({ ...ask, max_tokens: 16, thinking: { type: 'enabled', budget_tokens: 3 } });
    assert.deepEqual(m.content.map((b) => b.type), ['thinking', 'text'], JSON.stringify(m.content));
    assert.equal(m.content[0].thinking, first3.content[0].thinking);
    assert.ok(!m.content[1].text.includes('</think>'), m.content[1].text);
    assert.equal(m.usage.output_tokens, 16);
    // the budget and the one token that ends reasoning, not "</think>" spelt out
    assert.equal(m.usage.output_tokens_details.thinking_tokens, 4, JSON.stringify(m.usage));
  });
  await check('anthropic: output_config.format holds the answer to its schema, after a thinking budget too', async () => {
    const format = { type: 'json_schema', schema: { type: 'object', properties: { a: { enum: ['x', 'y'] } },
      required: ['a'], additionalProperties: false } };
    for (const thinking of [{ type: 'disabled' }, { type: 'enabled', budget_tokens: 4 }]) {
      const m = await ai.messages.create({ model: MODEL, max_tokens: 200, temperature: 0, thinking,
        output_config: { format }, messages: [{ role: 'user', content: 'JSON please' }] });
      assert.equal(m.stop_reason, 'end_turn', JSON.stringify(m));
      assert.ok(['x', 'y'].includes(JSON.parse(textOf(m)).a), textOf(m));
      assert.equal(m.content[0].type, thinking.type === 'enabled' ? 'thinking' : 'text');
      assert.equal(m.usage.output_tokens_details.thinking_tokens > 0, thinking.type === 'enabled');
    }
  });
  await check('anthropic: bad requests are refused in Anthropic\'s error shape, naming the field', async () => {
    const one = [{ role: 'user', content: 'hi' }];
    const cases = [
      [{ model: MODEL, messages: one }, 400, /max_tokens/],
      [{ model: MODEL, max_tokens: 4, messages: [{ role: 'user', content: [{ type: 'image',
        source: { type: 'base64', media_type: 'image/png', data: 'AA==' } }] }] }, 400, /messages\[0\]\.content\[0\].*image/],
      [{ model: MODEL, max_tokens: 4, messages: one, tools: [{ type: 'web_search_20250305', name: 'web_search' }] },
        400, /server tool/],
      [{ model: MODEL, max_tokens: 4, messages: one, tool_choice: { type: 'any' } }, 400, /no 'tools'/],
      [{ model: MODEL, max_tokens: 4, messages: [{ role: 'tool', content: 'x' }] }, 400, /messages\[0\]\.role/],
      [{ model: 'claude-x', max_tokens: 4, messages: one }, 404, /serves 'tiny'/],
      // (checked as the chat request it becomes, named as sent)
      [{ model: MODEL, max_tokens: 4, messages: one, output_config: { format: { type: 'json_schema',
        schema: { type: 'object', properties: { x: { type: 'string', pattern: '(' } } } } } }, 400,
        /^output_config\.format\.schema: #\/properties\/x: (?!.*response_format)/],
      [{ model: MODEL, max_tokens: 4, messages: [{ role: 'user', content: 'word '.repeat(5000) }] }, 400,
        /^prompt is too long: \d+ tokens > \d+ maximum/],
    ];
    for (const [body, status, msg] of cases) {
      const e = await expectStatus(ai.messages.create(body), status);
      assert.equal(e.error.type, 'error');
      assert.equal(e.error.error.type, status === 404 ? 'not_found_error' : 'invalid_request_error');
      assert.match(e.error.error.message, msg);
    }
    const e = await expectStatus(claude(srv, 'wrong').messages.create({ model: MODEL, max_tokens: 4, messages: one }), 401);
    assert.equal(e.error.error.type, 'authentication_error');
    const g = await fetch(srv.url + '/v1/messages', { headers: { 'x-api-key': KEY } });
    assert.equal(g.status, 405);
    assert.equal((await g.json()).error.type, 'invalid_request_error');
  });
  await stopServer(srv);
}

// The forced answer: reasoning, text and a tool call in Kimi's markers.
async function forcedServer() {
  const srv = await startServer(['--api-key', KEY], { MOETIER_SERVE_FORCE_TEXT: FORCED });
  const ai = claude(srv);
  const ask = { model: MODEL, max_tokens: 64, tools, messages: [{ role: 'user', content: 'Weather in Paris?' }] };
  const want = [{ type: 'thinking', thinking: 'Thinking it over.', signature: '' },
    { type: 'text', text: 'Let me check.' },
    { type: 'tool_use', id: 'functions.get_weather:0', name: 'get_weather', input: { city: 'Paris' } }];
  await check('anthropic: a tool call is a tool_use block after the thinking and text', async () => {
    const m = await ai.messages.create(ask);
    assert.deepEqual(m.content, want);
    assert.equal(m.stop_reason, 'tool_use');
    const s = await ai.messages.stream(ask).finalMessage();
    assert.deepEqual(s.content, want);
    assert.equal(s.stop_reason, 'tool_use');
  });
  await check('anthropic: the answer sent back with its tool_result is taken', async () => {
    const m = await ai.messages.create({ ...ask, messages: [...ask.messages, { role: 'assistant', content: want },
      { role: 'user', content: [{ type: 'tool_result', tool_use_id: 'functions.get_weather:0', content: '18 C' }] }] });
    assert.equal(m.stop_reason, 'tool_use');
  });
  await stopServer(srv);
}

// Two calls in one answer: parallel_tool_calls false (OpenAI) and
// disable_parallel_tool_use (Anthropic) end it once the first is made.
async function twoCallServer() {
  const call = (i, city) => `<|tool_call_begin|>functions.get_weather:${i}<|tool_call_argument_begin|>` +
    `{"city": "${city}"}<|tool_call_end|>`;
  const srv = await startServer(['--api-key', KEY, '--no-think', '--alias', '*'], { MOETIER_SERVE_FORCE_TEXT:
    `Both.<|tool_calls_section_begin|>${call(0, 'Paris')}${call(1, 'Rome')}<|tool_calls_section_end|>` });
  await check('parallel_tool_calls false / disable_parallel_tool_use end the answer at its first call', async () => {
    const ask = { model: MODEL, max_tokens: 64, messages: [{ role: 'user', content: 'Weather?' }] };
    const both = await post(srv, '/v1/chat/completions', { ...ask, tools: openaiTools });
    assert.equal(both.body.choices[0].message.tool_calls.length, 2, JSON.stringify(both.body));
    const one = await post(srv, '/v1/chat/completions', { ...ask, tools: openaiTools, parallel_tool_calls: false });
    const c = one.body.choices[0];
    assert.equal(c.finish_reason, 'tool_calls');
    assert.deepEqual(c.message.tool_calls.map((t) => JSON.parse(t.function.arguments).city), ['Paris']);
    assert.ok(one.body.usage.completion_tokens < both.body.usage.completion_tokens, 'the answer went on');
    // (named by a model id of the client's own: --alias '*' answers any)
    const a = await claude(srv).messages.create({ ...ask, model: 'claude-sonnet-x', tools,
      tool_choice: { type: 'auto', disable_parallel_tool_use: true } });
    assert.deepEqual(a.content.filter((b) => b.type === 'tool_use').map((b) => b.input.city), ['Paris']);
    assert.equal(a.stop_reason, 'tool_use');
    const s = await claude(srv).messages.stream({ ...ask, tools, tool_choice: { type: 'any', disable_parallel_tool_use: true } }).finalMessage();
    assert.deepEqual(s.content.filter((b) => b.type === 'tool_use').map((b) => b.input.city), ['Paris']);
  });
  await stopServer(srv);
}

// A stream waiting on its prefill is kept alive between the prompt's chunks:
// here after every chunk of 4 tokens (--keep-alive 0; 10 s by default).
// (Greedy: a sampled end token would end an answer before its max_tokens.)
async function keepAliveServer() {
  const srv = await startServer(['--api-key', KEY, '--chunk', '4', '--no-think', '--alias', 'claude-x',
    '--keep-alive', '0']);
  const long = 'one two three four five six seven eight nine ten '.repeat(4);
  await check('a stream waiting on a long prefill gets pings (Anthropic) and comments (OpenAI)', async () => {
    const a = await fetch(srv.url + '/v1/messages', { method: 'POST', headers: { 'x-api-key': KEY },
      body: JSON.stringify({ model: MODEL, max_tokens: 3, temperature: 0, stream: true, messages: [{ role: 'user', content: long }] }) });
    const events = [...(await a.text()).matchAll(/^event: (\w+)$/gm)].map((x) => x[1]);
    assert.equal(events[0], 'message_start');
    const pings = events.slice(0, events.indexOf('content_block_start')).filter((e) => e === 'ping').length;
    assert.ok(pings >= 5, `${pings} pings before the answer: ${events}`);
    const m = await claude(srv).messages.stream({ model: MODEL, max_tokens: 3, temperature: 0,
      messages: [{ role: 'user', content: long + 'again' }] }).finalMessage();
    assert.equal(m.usage.output_tokens, 3);
    const o = await fetch(srv.url + '/v1/chat/completions', { method: 'POST', headers: { authorization: `Bearer ${KEY}` },
      body: JSON.stringify({ model: MODEL, max_tokens: 3, temperature: 0, stream: true,
        messages: [{ role: 'user', content: 'more ' + long }] }) });
    const text = await o.text();
    assert.ok((text.match(/^: keep-alive$/gm) ?? []).length >= 5, text);
    assert.equal(text.trimEnd().split('\n').at(-1), 'data: [DONE]');
  });
  await check('--alias: requests may name the model by another id; others are unknown; the models in either API\'s shape', async () => {
    const ids = (await (await fetch(srv.url + '/v1/models', { headers: { 'x-api-key': KEY } })).json()).data.map((m) => m.id);
    assert.deepEqual(ids, [MODEL, 'claude-x']);
    // Anthropic's SDK (anthropic-version) gets its shape, and pages through it
    const listed = [];
    for await (const mo of claude(srv).models.list()) listed.push(mo);
    assert.deepEqual(listed.map((mo) => [mo.type, mo.id, mo.display_name]), [['model', MODEL, MODEL], ['model', 'claude-x', 'claude-x']]);
    assert.equal((await claude(srv).models.retrieve('claude-x')).type, 'model');
    const missing = await expectStatus(claude(srv).models.retrieve('claude-y'), 404);
    assert.equal(missing.error.error.type, 'not_found_error', JSON.stringify(missing.error));
    const m = await claude(srv).messages.create({ model: 'claude-x', max_tokens: 2, temperature: 0,
      messages: [{ role: 'user', content: 'hi' }] });
    assert.equal(m.usage.output_tokens, 2);
    await expectStatus(claude(srv).messages.create({ model: 'claude-y', max_tokens: 2,
      messages: [{ role: 'user', content: 'hi' }] }), 404);
    const e = await startServer(['--alias', '']).then(async (x) => { await stopServer(x); return null; }, (x) => x);
    assert.ok(e && /--alias takes 1 to 255 bytes/.test(String(e)), String(e));
  });
  await stopServer(srv);
}

try {
  await plainServer();
  await forcedServer();
  await twoCallServer();
  await keepAliveServer();
} catch (e) {
  fail(e);
}
finish('anthropic tests');
