// Integration tests of `moetier serve`'s Responses API (POST /v1/responses),
// driven by the official `openai` client's responses.create and
// responses.stream, and checked against the chat route of the same server: a
// conversation said in either API is the same prompt and, greedy, the same
// answer.
//
// usage: node responses_test.mjs MOETIER_BIN MODEL_DIR
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { MODEL, startServer, stopServer, check, expectStatus, fail, finish } from './harness.mjs';

const KEY = 'sesame';
const client = (srv) => new OpenAI({ baseURL: srv.url + '/v1', apiKey: KEY, maxRetries: 0, timeout: 120000 });
const post = (srv, path, body) => fetch(srv.url + path, {
  method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` },
  body: JSON.stringify(body),
}).then(async (r) => ({ status: r.status, body: await r.json() }));
// Output items without what differs between two responses of the same text
// (their ids) and what the SDK's stream helper adds (parsed, parsed_arguments).
const items = (out) => JSON.parse(JSON.stringify(out, (k, v) => (['id', 'parsed', 'parsed_arguments'].includes(k) ? undefined : v)));
const params = { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] };
const tools = [{ type: 'function', name: 'get_weather', description: 'The weather in a city', parameters: params, strict: false },
  { type: 'namespace', name: 'wx', description: 'Weather tools', tools: [{ type: 'function', name: 'forecast', parameters: params }] },
  { type: 'web_search', external_web_access: false }];
const chatTools = [{ type: 'function', function: { name: 'get_weather', description: 'The weather in a city', parameters: params } },
  { type: 'function', function: { name: 'wx.forecast', parameters: params } }];

// A conversation with a developer message, reasoning, a call and its output, in both APIs.
const input = [
  { type: 'message', role: 'developer', content: [{ type: 'input_text', text: 'Use tools.' }] },
  { role: 'user', content: 'Weather in Paris?' },
  { type: 'reasoning', id: 'rs_1', summary: [], content: [{ type: 'reasoning_text', text: 'Ask the tool.' }] },
  { type: 'function_call', call_id: 'functions.wx.forecast:0', name: 'forecast', namespace: 'wx', arguments: '{"city": "Paris"}' },
  { type: 'function_call_output', call_id: 'functions.wx.forecast:0', output: '18 C, sunny' },
  { role: 'user', content: [{ type: 'input_text', text: 'And tomorrow?' }] },
];
const messages = [
  { role: 'system', content: 'You are terse.' },
  { role: 'system', content: 'Use tools.' },
  { role: 'user', content: 'Weather in Paris?' },
  { role: 'assistant', content: '', reasoning_content: 'Ask the tool.', tool_calls: [{ id: 'functions.wx.forecast:0',
    type: 'function', function: { name: 'wx.forecast', arguments: '{"city": "Paris"}' } }] },
  { role: 'tool', tool_call_id: 'functions.wx.forecast:0', content: '18 C, sunny' },
  { role: 'user', content: 'And tomorrow?' },
];

async function plainServer() {
  const srv = await startServer(['--api-key', KEY]);
  const ai = client(srv);
  const greedy = { model: MODEL, max_output_tokens: 12, temperature: 0, reasoning: { effort: 'none' } };
  await check('responses: a conversation with a namespaced call is the chat route\'s prompt and greedy answer', async () => {
    const r = await ai.responses.create({ ...greedy, instructions: 'You are terse.', input, tools, store: false,
      include: ['reasoning.encrypted_content'], prompt_cache_key: 'k', parallel_tool_calls: true });
    const c = await post(srv, '/v1/chat/completions', { model: MODEL, max_tokens: 12, temperature: 0, thinking: false,
      messages, tools: chatTools });
    assert.equal(c.status, 200, JSON.stringify(c.body));
    assert.equal(r.object, 'response');
    assert.match(r.id, /^resp_/);
    assert.equal(r.output_text, c.body.choices[0].message.content);
    assert.equal(r.usage.input_tokens, c.body.usage.prompt_tokens);
    assert.equal(r.usage.output_tokens, c.body.usage.completion_tokens);
    assert.equal(r.status, c.body.choices[0].finish_reason === 'length' ? 'incomplete' : 'completed');
    const n = await ai.responses.inputTokens.count({ model: MODEL, instructions: 'You are terse.', input, tools,
      reasoning: { effort: 'none' } });
    assert.deepEqual(n, { object: 'response.input_tokens', input_tokens: c.body.usage.prompt_tokens });
    // the chat route's reasoning_effort switches thinking as the Responses API's does
    const e = await post(srv, '/v1/chat/completions', { model: MODEL, max_tokens: 12, temperature: 0,
      reasoning_effort: 'none', messages, tools: chatTools });
    assert.equal(e.body.choices[0].message.content, c.body.choices[0].message.content);
  });
  await check('responses: streamed, numbered events that build the same response', async () => {
    const ask = { ...greedy, input: 'Tell me a story.' };
    const plain = await ai.responses.create(ask);
    const events = [];
    const st = ai.responses.stream(ask);
    st.on('event', (e) => events.push(e));
    const r = await st.finalResponse();
    assert.deepEqual(items(r.output), items(plain.output));
    assert.equal(r.output_text, plain.output_text);
    assert.deepEqual(events.map((e) => e.sequence_number), events.map((_, i) => i));
    assert.deepEqual(events.slice(0, 2).map((e) => e.type), ['response.created', 'response.in_progress']);
    assert.equal(events.at(-1).type, plain.status === 'incomplete' ? 'response.incomplete' : 'response.completed');
    assert.equal(r.usage.input_tokens, plain.usage.input_tokens);
  });
  await check('responses: thinking on, the reasoning is an item of its own and counted', async () => {
    const r = await ai.responses.create({ model: MODEL, max_output_tokens: 6, temperature: 0, input: 'Think.',
      reasoning: { effort: 'high' } });
    assert.equal(r.output[0].type, 'reasoning');
    assert.equal(r.output[0].content[0].type, 'reasoning_text');
    assert.equal(r.status, 'incomplete');
    assert.equal(r.incomplete_details.reason, 'max_output_tokens');
    const n = r.usage.output_tokens_details.reasoning_tokens;
    assert.ok(n > 0 && n <= r.usage.output_tokens, JSON.stringify(r.usage));
    if (r.output.length === 1)      // nothing but reasoning: every token of it
      assert.equal(n, r.usage.output_tokens);
    // the chat route counts them the same
    const c = await post(srv, '/v1/chat/completions', { model: MODEL, max_tokens: 6, temperature: 0, thinking: true,
      messages: [{ role: 'user', content: 'Think.' }] });
    assert.equal(c.body.usage.completion_tokens_details.reasoning_tokens, n, JSON.stringify(c.body.usage));
    // a summary asked for (as Codex asks): the same reasoning as the item's
    // summary, streamed as a summary's events
    const req = { model: MODEL, max_output_tokens: 6, temperature: 0, input: 'Think.',
      reasoning: { effort: 'high', summary: 'auto' } };
    const sr = await ai.responses.create(req);
    assert.deepEqual(sr.output[0].summary, [{ type: 'summary_text', text: r.output[0].content[0].text }]);
    assert.deepEqual(sr.output[0].content, []);
    let deltas = '', done = null;
    for await (const ev of await ai.responses.create({ ...req, stream: true })) {
      if (ev.type === 'response.reasoning_summary_text.delta') deltas += ev.delta;
      if (ev.type === 'response.reasoning_text.delta') assert.fail('reasoning_text streamed beside the summary');
      if (ev.type === 'response.completed' || ev.type === 'response.incomplete') done = ev.response;
    }
    assert.equal(deltas, r.output[0].content[0].text);
    assert.deepEqual(done.output[0].summary, sr.output[0].summary);
  });
  await check('responses: what needs stored responses, and other bad requests, are refused naming the field', async () => {
    const cases = [
      [{ model: MODEL, input: 'x', previous_response_id: 'resp_1' }, 400, 'previous_response_id'],
      [{ model: MODEL, input: [{ type: 'item_reference', id: 'x' }] }, 400, 'input'],
      [{ model: MODEL, input: [{ role: 'user', content: [{ type: 'input_image', image_url: 'data:' }] }] }, 400, 'input'],
      [{ model: MODEL, input: 'x', tools: [{ type: 'custom', name: 'patch' }] }, 400, 'tools'],
      [{ model: 'gpt-x', input: 'x' }, 404, 'model'],
      // (checked as the chat request it becomes, named as sent)
      [{ model: MODEL, input: 'x', text: { format: { type: 'json_schema', name: 'a', schema: { type: 'object',
        properties: { x: { type: 'string', pattern: '(' } } } } } }, 400, 'text.format'],
    ];
    for (const [body, status, param] of cases) {
      const e = await expectStatus(ai.responses.create(body), status);
      assert.equal(e.param, param, e.message);
      assert.ok(!/response_format/.test(e.message), e.message);
    }
    const g = await fetch(srv.url + '/v1/responses/resp_1', { headers: { authorization: `Bearer ${KEY}` } });
    assert.equal(g.status, 404);
    assert.match((await g.json()).error.message, /keeps no responses/);
  });
  await stopServer(srv);
}

// The forced answer: reasoning, text and two calls in Kimi's markers, the
// second in a namespace.
async function forcedServer() {
  const call = (i, name, city) => `<|tool_call_begin|>functions.${name}:${i}<|tool_call_argument_begin|>` +
    `{"city": "${city}"}<|tool_call_end|>`;
  const srv = await startServer(['--api-key', KEY], { MOETIER_SERVE_FORCE_TEXT: 'Thinking it over.</think>Let me check.' +
    `<|tool_calls_section_begin|>${call(0, 'get_weather', 'Paris')}${call(1, 'wx.forecast', 'Rome')}<|tool_calls_section_end|>` });
  const ai = client(srv);
  const ask = { model: MODEL, max_output_tokens: 200, tools, input: 'Weather?' };
  await check('responses: tool calls are function_call items (a namespaced one with its namespace)', async () => {
    const r = await ai.responses.create(ask);
    assert.deepEqual(r.output.map((o) => o.type), ['reasoning', 'message', 'function_call', 'function_call']);
    assert.equal(r.output[0].content[0].text, 'Thinking it over.');
    assert.equal(r.output_text, 'Let me check.');
    const [a, b] = r.output.slice(2);
    assert.deepEqual([a.call_id, a.name, a.namespace, JSON.parse(a.arguments).city],
      ['functions.get_weather:0', 'get_weather', undefined, 'Paris']);
    assert.deepEqual([b.call_id, b.name, b.namespace, JSON.parse(b.arguments).city],
      ['functions.wx.forecast:1', 'forecast', 'wx', 'Rome']);
    assert.equal(r.status, 'completed');
    const s = await ai.responses.stream(ask).finalResponse();
    assert.deepEqual(items(s.output), items(r.output));
    // sent back with the calls' outputs, as Codex sends them
    const next = await ai.responses.create({ ...ask, input: [{ role: 'user', content: 'Weather?' }, ...r.output,
      { type: 'function_call_output', call_id: a.call_id, output: '18 C' },
      { type: 'function_call_output', call_id: b.call_id, output: '20 C' }] });
    assert.equal(next.status, 'completed');
    const one = await ai.responses.create({ ...ask, parallel_tool_calls: false });
    assert.deepEqual(one.output.map((o) => o.type), ['reasoning', 'message', 'function_call']);
  });
  await stopServer(srv);
}

// The three APIs' requests stepped together in one server's slots: each
// answer is the one it gets alone.
async function mixedServer() {
  const srv = await startServer(['--api-key', KEY, '--parallel', '3', '--no-think']);
  await check('--parallel 3: a Responses, a Messages and a chat stream at once each answer as alone', async () => {
    const ask = (words) => `Tell me about ${words}.`;
    const responses = (q) => client(srv).responses.stream({ model: MODEL, input: q, max_output_tokens: 16,
      temperature: 0 }).finalResponse().then((r) => r.output_text);
    const messages = (q) => fetch(srv.url + '/v1/messages', { method: 'POST', headers: { 'x-api-key': KEY },
      body: JSON.stringify({ model: MODEL, max_tokens: 16, temperature: 0, stream: true,
        messages: [{ role: 'user', content: q }] }) }).then((r) => r.text()).then((t) =>
      [...t.matchAll(/"text_delta","text":("(?:[^"\\]|\\.)*")/g)].map((x) => JSON.parse(x[1])).join(''));
    const chat = (q) => post(srv, '/v1/chat/completions', { model: MODEL, max_tokens: 16, temperature: 0,
      messages: [{ role: 'user', content: q }] }).then((r) => r.body.choices[0].message.content);
    const qs = [ask('rivers'), ask('mountains'), ask('the sea')];
    const alone = [await responses(qs[0]), await messages(qs[1]), await chat(qs[2])];
    const together = await Promise.all([responses(qs[0]), messages(qs[1]), chat(qs[2])]);
    assert.deepEqual(together, alone);
    assert.ok(alone.every((t) => t.length > 0), JSON.stringify(alone));
  });
  await stopServer(srv);
}

try {
  await plainServer();
  await forcedServer();
  await mixedServer();
} catch (e) {
  fail(e);
}
finish('responses tests');
