// Integration tests of `moetier serve`, driven by the official `openai` client
// and by plain HTTP (fetch), on servers of its own (harness.mjs).
//
// usage: node server_test.mjs MOETIER_BIN MODEL_DIR
import { spawnSync } from 'node:child_process';
import assert from 'node:assert/strict';
import { cpSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request as httpRequest } from 'node:http';
import OpenAI from 'openai';
import { bin, modelDir, MODEL, servers, FORCED, user, startServer, stopServer, check, expectStatus, fail,
  finish } from './harness.mjs';

const client = (srv, apiKey = 'none') => new OpenAI({ baseURL: srv.url + '/v1', apiKey, maxRetries: 0, timeout: 120000 });
async function collect(stream) {
  const out = { role: null, content: '', reasoning: '', calls: [], finish: null, usage: null, chunks: 0 };
  for await (const ch of stream) {
    out.chunks++;
    if (ch.usage) out.usage = ch.usage;
    for (const c of ch.choices) {
      const d = c.delta ?? {};
      if (d.role) out.role = d.role;
      out.content += d.content ?? c.text ?? '';
      out.reasoning += d.reasoning_content ?? '';
      for (const t of d.tool_calls ?? []) out.calls[t.index] = t;
      if (c.finish_reason) out.finish = c.finish_reason;
    }
  }
  return out;
}

// The token id of a text that is one token.
function tokenId(text) {
  const r = spawnSync(bin, ['tokenize', '-m', modelDir, '--text', text], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  const ids = r.stdout.trim().split(',');
  assert.equal(ids.length, 1, `'${text}' is not one token: ${r.stdout}`);
  return ids[0];
}

// The logprobs of streamed events joined (completions' lists, chat's content).
function joinedLogprobs(chunks) {
  const out = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [], content: [] };
  for (const ch of chunks)
    for (const c of ch.choices) {
      const l = c.logprobs;
      if (!l) continue;
      for (const k of Object.keys(out)) out[k].push(...(l[k] ?? []));
    }
  return out;
}
async function chunksOf(stream) {
  const all = [];
  for await (const ch of stream) all.push(ch);
  return all;
}

// logprobs, logit_bias, penalties, echo, JSON mode, n and the token routes
async function apiFeatureChecks(srv, ai) {
  const base = { model: MODEL, prompt: 'one two', temperature: 0 };
  await check('logprobs, completions: each token, its log-probability, the alternatives with it, offsets; streamed the same', async () => {
    const r = await ai.completions.create({ ...base, max_tokens: 8, logprobs: 2 });
    const c = r.choices[0], l = c.logprobs;
    assert.equal(l.tokens.length, r.usage.completion_tokens);
    assert.equal(l.tokens.join(''), c.text);
    let offset = 0;
    for (let i = 0; i < l.tokens.length; i++) {
      const alts = l.top_logprobs[i], best = Math.max(...Object.values(alts));
      assert.ok(Object.keys(alts).length >= 2 && Object.keys(alts).length <= 3, JSON.stringify(alts));
      assert.equal(alts[l.tokens[i]], l.token_logprobs[i], 'the chosen token is among its alternatives');
      assert.equal(l.token_logprobs[i], best, 'greedy: the chosen token is the most likely');
      assert.ok(l.token_logprobs[i] < 0);
      assert.equal(l.text_offset[i], offset);
      offset += [...l.tokens[i]].length;
    }
    const streamed = joinedLogprobs(await chunksOf(await ai.completions.create({ ...base, max_tokens: 8, logprobs: 2, stream: true })));
    for (const k of ['tokens', 'token_logprobs', 'top_logprobs', 'text_offset'])
      assert.deepEqual(streamed[k], l[k], k);
    // sampled answers with bytes that are no text (each a U+FFFD in it): each
    // token whole in the text stands at its offset, counted in characters (a
    // special token not sent takes no room: the next stands at its offset)
    let broken = 0;
    for (let seed = 1; seed <= 40 && broken < 3; seed++) {
      const s = await ai.completions.create({ ...base, max_tokens: 12, temperature: 1, seed, logprobs: 0 });
      const chars = [...s.choices[0].text], sl = s.choices[0].logprobs, at = sl.text_offset;
      if (!chars.includes('\ufffd')) continue;
      broken++;
      for (let i = 0; i < sl.tokens.length; i++) {
        const t = [...sl.tokens[i]];
        if (t.includes('\ufffd') || (at[i + 1] ?? chars.length) === at[i]) continue;
        assert.equal(chars.slice(at[i], at[i] + t.length).join(''), sl.tokens[i],
          `seed ${seed}, token ${i}: ${JSON.stringify(sl)} ${JSON.stringify(s.choices[0].text)}`);
      }
    }
    assert.ok(broken >= 3, `${broken} answers held a byte that is no text: the check proves little`);
  });
  await check('logprobs, chat: tokens with bytes and top_logprobs, best first; streamed the same', async () => {
    const req = { model: MODEL, messages: user('Hello there'), max_tokens: 6, temperature: 0, logprobs: true, top_logprobs: 3 };
    const r = await ai.chat.completions.create(req);
    const content = r.choices[0].logprobs.content;
    assert.equal(content.length, r.usage.completion_tokens);
    // special tokens (names, not text) are listed but not sent
    assert.equal(Buffer.from(content.flatMap((t) => t.bytes)).toString().replace(/<\|[a-z_0-9]+\|>/g, ''),
      r.choices[0].message.content);
    for (const t of content) {
      assert.equal(t.top_logprobs.length, 3);
      assert.equal(t.top_logprobs[0].token, t.token);
      assert.equal(t.top_logprobs[0].logprob, t.logprob);
      for (let k = 1; k < 3; k++) assert.ok(t.top_logprobs[k].logprob <= t.top_logprobs[k - 1].logprob);
    }
    // the second request finds its prompt in the KV cache, which computes the
    // prompt's last positions in other chunks: the same up to rounding
    const streamed = joinedLogprobs(await chunksOf(await ai.chat.completions.create({ ...req, stream: true })));
    const near = (a, b) => assert.ok(Math.abs(a.logprob - b.logprob) < 1e-4 && a.token === b.token &&
      JSON.stringify(a.bytes) === JSON.stringify(b.bytes), `${JSON.stringify(a)} vs ${JSON.stringify(b)}`);
    assert.equal(streamed.content.length, content.length);
    content.forEach((t, i) => {
      near(streamed.content[i], t);
      t.top_logprobs.forEach((a, k) => near(streamed.content[i].top_logprobs[k], a));
    });
    const plain = await ai.chat.completions.create({ ...req, logprobs: false, top_logprobs: undefined });
    assert.equal(plain.choices[0].logprobs, null);
  });
  await check('logit_bias: +100 makes a token every token; -100 rules one out, whose log-probability stays the model\'s', async () => {
    const g = (await ai.completions.create({ ...base, max_tokens: 4, logprobs: 5 })).choices[0].logprobs;
    const winter = tokenId(' winter');
    const forced = await ai.completions.create({ ...base, max_tokens: 4, logit_bias: { [winter]: 100 } });
    assert.equal(forced.choices[0].text, ' winter'.repeat(4));
    const first = tokenId(g.tokens[0]);
    const banned = (await ai.completions.create({ ...base, max_tokens: 1, logprobs: 5, logit_bias: { [first]: -100 } }))
      .choices[0].logprobs;
    assert.notEqual(banned.tokens[0], g.tokens[0]);
    assert.deepEqual(banned.top_logprobs[0], g.top_logprobs[0], 'the alternatives are the model\'s, before the bias');
    const e = await expectStatus(ai.completions.create({ ...base, logit_bias: { 99999999: 1 } }), 400);
    assert.equal(e.param, 'logit_bias');
  });
  await check('a batch of prompts (completions): each answered as alone, choices numbered prompt by prompt, usage summed; token-id prompts scored; a bad prompt or streaming refused', async () => {
    const prompts = ['one two', 'The quick brown fox'];
    const req = { model: MODEL, max_tokens: 4, n: 2, temperature: 0.9, seed: 5 };
    const alone = [];
    for (const prompt of prompts) alone.push(await ai.completions.create({ ...req, prompt }));
    const r = await ai.completions.create({ ...req, prompt: prompts });
    assert.equal(r.choices.length, 4, JSON.stringify(r));
    r.choices.forEach((c, i) => assert.equal(c.index, i));
    for (let k = 0; k < 2; k++)
      for (let c = 0; c < 2; c++)
        assert.equal(r.choices[2 * k + c].text, alone[k].choices[c].text, `prompt ${k}, choice ${c}`);
    assert.equal(r.usage.prompt_tokens, alone[0].usage.prompt_tokens + alone[1].usage.prompt_tokens);
    assert.equal(r.usage.completion_tokens, alone[0].usage.completion_tokens + alone[1].usage.completion_tokens);
    // lm-evaluation-harness's loglikelihood requests: token ids, echoed and scored
    const ids = prompts.map((t) => spawnSync(bin, ['tokenize', '-m', modelDir, '--text', t], { encoding: 'utf8' })
      .stdout.trim().split(',').map(Number));
    const scored = await ai.completions.create({ model: MODEL, prompt: ids, max_tokens: 0, echo: true, logprobs: 1 });
    assert.equal(scored.choices.length, 2);
    scored.choices.forEach((c, i) => {
      assert.equal(c.text, prompts[i]);
      assert.equal(c.logprobs.tokens.length, ids[i].length);
    });
    const e = await expectStatus(ai.completions.create({ model: MODEL, prompt: ['a', [99999999]] }), 400);
    assert.match(e.message, /prompt 1 of the batch/);
    await expectStatus(ai.completions.create({ model: MODEL, prompt: prompts, stream: true }), 400);
  });
  await check('echo: the prompt back first with its tokens\' logprobs (the first null), as `moetier perplexity` scores them; max_tokens 0 scores only', async () => {
    const prompt = 'The quick brown fox jumps over the lazy dog';
    const r = await ai.completions.create({ model: MODEL, prompt, max_tokens: 0, echo: true, logprobs: 1 });
    const c = r.choices[0], l = c.logprobs;
    assert.equal(c.text, prompt);
    assert.equal(c.finish_reason, 'length');
    assert.equal(r.usage.completion_tokens, 0);
    assert.equal(l.tokens.length, r.usage.prompt_tokens);
    assert.equal(l.tokens.join(''), prompt);
    assert.equal(l.token_logprobs[0], null);
    assert.equal(l.top_logprobs[0], null);
    const ids = spawnSync(bin, ['tokenize', '-m', modelDir, '--text', prompt], { encoding: 'utf8' }).stdout.trim();
    const ppl = spawnSync(bin, ['perplexity', '-m', modelDir, '--ids', ids, '-c', String(l.tokens.length), '--json', '-t', '1'],
      { encoding: 'utf8' });
    assert.equal(ppl.status, 0, ppl.stderr);
    const p = JSON.parse(ppl.stdout), scored = l.token_logprobs.slice(-p.tokens_scored);
    const mean = -scored.reduce((a, b) => a + b, 0) / scored.length;
    assert.ok(Math.abs(mean - p.mean_nll) < 1e-4 * p.mean_nll, `echo ${mean}, perplexity ${p.mean_nll}`);
    const plain = await ai.completions.create({ ...base, prompt, max_tokens: 4 });
    const o = await collect(await ai.completions.create({ ...base, prompt, max_tokens: 4, echo: true, stream: true }));
    assert.equal(o.content, prompt + plain.choices[0].text);
    // a prompt ending inside a character its answer's first token finishes:
    // one character, streamed or not
    const vocabLines = readFileSync(join(modelDir, 'tiktoken.model'), 'utf8').split('\n');
    const byteId = (b) => Number(vocabLines.find((l) => l && Buffer.from(l.split(' ')[0], 'base64')
      .equals(Buffer.from([b]))).split(' ')[1]);
    const split = { ...base, prompt: [byteId(0x61), byteId(0xc3)], max_tokens: 1, echo: true,
      logit_bias: { [byteId(0xa9)]: 100 } };
    assert.equal((await ai.completions.create(split)).choices[0].text, 'a\u00e9');
    assert.equal((await collect(await ai.completions.create({ ...split, stream: true }))).content, 'a\u00e9');
    await expectStatus(ai.completions.create({ ...base, max_tokens: 0 }), 400);
    // the prompt as token ids (lm-evaluation-harness sends them): the same answer and scores
    const asIds = await ai.completions.create({ model: MODEL, prompt: [ids.split(',').map(Number)], max_tokens: 0,
      echo: true, logprobs: 1 });
    assert.equal(asIds.choices[0].text, prompt);
    assert.deepEqual(asIds.choices[0].logprobs.tokens, l.tokens);
    asIds.choices[0].logprobs.token_logprobs.forEach((x, i) =>
      assert.ok(x === l.token_logprobs[i] || Math.abs(x - l.token_logprobs[i]) < 1e-4, `token ${i}: ${x} vs ${l.token_logprobs[i]}`));
    const e = await expectStatus(ai.completions.create({ model: MODEL, prompt: [1, 99999999] }), 400);
    assert.equal(e.param, 'prompt');
  });
  await check('vLLM\'s prompt_logprobs: each prompt token\'s log-probability and rank, as the model\'s logits give them', async () => {
    const text = 'the quick brown fox jumps over the lazy dog';
    const ids = spawnSync(bin, ['tokenize', '-m', modelDir, '--text', text], { encoding: 'utf8' }).stdout.trim();
    const prompt = ids.split(',').map(Number);
    const r = await ai.completions.create({ model: MODEL, prompt, max_tokens: 1, temperature: 0, prompt_logprobs: 3 });
    const pl = r.choices[0].prompt_logprobs;
    assert.equal(pl.length, prompt.length);
    assert.equal(pl[0], null, 'nothing scores the first token');
    // the reference: the log-softmax of `moetier logits` over the same ids
    const dir = mkdtempSync(join(process.env.MOETIER_TMP || tmpdir(), 'prompt-logprobs-'));
    try {
      const out = join(dir, 'logits.f32');
      const run = spawnSync(bin, ['logits', '-m', modelDir, '--ids', ids, '-o', out, '-t', '1'], { encoding: 'utf8' });
      assert.equal(run.status, 0, run.stderr);
      const buf = readFileSync(out), all = new Float32Array(buf.buffer, buf.byteOffset, buf.length / 4);
      const V = all.length / prompt.length;
      for (let t = 1; t < prompt.length; t++) {
        const row = all.subarray((t - 1) * V, t * V);
        let max = -Infinity, sum = 0;
        for (const x of row) max = Math.max(max, x);
        for (const x of row) sum += Math.exp(x - max);
        const lp = (id) => row[id] - max - Math.log(sum);
        const entry = pl[t], own = entry[String(prompt[t])];
        assert.ok(own, `position ${t}: the prompt token is there`);
        assert.ok(Math.abs(own.logprob - lp(prompt[t])) < 1e-4, `position ${t}: ${own.logprob} vs ${lp(prompt[t])}`);
        assert.equal(own.rank, row.filter((x) => x >= row[prompt[t]]).length, `position ${t}: rank`);
        const best = [...row.keys()].sort((a, b) => row[b] - row[a] || a - b).slice(0, 3);
        best.forEach((id, k) => {
          assert.ok(entry[String(id)], `position ${t}: alternative ${k} (token ${id})`);
          if (id !== prompt[t]) assert.equal(entry[String(id)].rank, k + 1);
        });
        assert.equal(Object.keys(entry).length, best.includes(prompt[t]) ? 3 : 4);
        const word = (await (await fetch(srv.url + '/detokenize', { method: 'POST',
          body: JSON.stringify({ tokens: [prompt[t]] }) })).json()).content;
        assert.equal(own.decoded_token, word);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    const chat = await ai.chat.completions.create({ model: MODEL, messages: user(text), max_tokens: 1, prompt_logprobs: 0 });
    assert.equal(chat.prompt_logprobs.length, chat.usage.prompt_tokens, 'chat\'s beside the choices');
    assert.ok(chat.prompt_logprobs.slice(1).every((e) => Object.keys(e).length === 1), '0 alternatives: the token alone');
    for (const body of [{ stream: true }, { n: 2 }, { prompt_logprobs: 21 }, { prompt_logprobs: 1.5 }]) {
      const e = await expectStatus(ai.completions.create({ ...base, prompt_logprobs: 1, ...body }), 400);
      assert.equal(e.param, 'prompt_logprobs', JSON.stringify(body));
    }
  });
  await check('response_format json_object: the answer is one JSON object, ended once complete; unenforced schema keywords refused', async () => {
    const [open, close, quote, colon, comma] = ['{', '}', '"', ':', ','].map(tokenId);
    const chat = { model: MODEL, messages: user('Give me JSON'), response_format: { type: 'json_object' } };
    const empty = await ai.chat.completions.create({ ...chat, max_tokens: 20, temperature: 0,
      logit_bias: { [open]: 50, [close]: 50 } });
    assert.equal(empty.choices[0].message.content, '{}');
    assert.equal(empty.choices[0].finish_reason, 'stop', 'a complete object leaves only end tokens');
    // biased towards structure, sampled: each answer a whole object
    for (let seed = 1; seed <= 6; seed++) {
      const r = await ai.chat.completions.create({ ...chat, max_tokens: 80, temperature: 1, seed,
        logit_bias: { [quote]: 8, [colon]: 10, [close]: 5, [comma]: 3 } });
      const c = r.choices[0];
      assert.equal(c.finish_reason, 'stop', `seed ${seed}: ${JSON.stringify(c.message.content)}`);
      const v = JSON.parse(c.message.content);
      assert.ok(v && typeof v === 'object' && !Array.isArray(v), c.message.content);
    }
    // unbiased: cut by max_tokens, still the start of an object; streamed the same as not
    const o = await collect(await ai.chat.completions.create({ ...chat, max_tokens: 30, temperature: 1, seed: 9, stream: true }));
    const plain = await ai.chat.completions.create({ ...chat, max_tokens: 30, temperature: 1, seed: 9 });
    assert.equal(o.content, plain.choices[0].message.content);
    assert.match(o.content, /^[ \t\r\n]*\{/);
    const cmpl = await ai.completions.create({ ...base, max_tokens: 20, response_format: { type: 'json_object' },
      logit_bias: { [open]: 50, [close]: 50 } });
    assert.equal(cmpl.choices[0].text, '{}');
    let e = await expectStatus(ai.chat.completions.create({ ...chat, response_format: { type: 'json_schema',
      json_schema: { name: 'x', schema: { type: 'string', format: 'uri' } } } }), 400);
    assert.equal(e.param, 'response_format');
    assert.match(e.message, /format 'uri' is not held/);
  });
  await check('n: choices made in turn from the prompt, choice i as seed + i alone; streamed by index the same', async () => {
    const req = { model: MODEL, messages: user('Hi'), max_tokens: 5, temperature: 1, seed: 4, logprobs: true };
    const r = await ai.chat.completions.create({ ...req, n: 3 });
    assert.deepEqual(r.choices.map((c) => c.index), [0, 1, 2]);
    assert.equal(r.usage.completion_tokens, r.choices.reduce((a, c) => a + c.logprobs.content.length, 0));
    for (let i = 0; i < 3; i++) {
      const alone = await ai.chat.completions.create({ ...req, seed: 4 + i });
      assert.equal(r.choices[i].message.content, alone.choices[0].message.content, `choice ${i}`);
      assert.equal(r.choices[i].finish_reason, alone.choices[0].finish_reason);
    }
    assert.ok(new Set(r.choices.map((c) => c.message.content)).size > 1, 'three samples, one text');
    const per = ['', '', ''], finish = [];
    for await (const ch of await ai.chat.completions.create({ ...req, n: 3, stream: true }))
      for (const c of ch.choices) {
        per[c.index] += c.delta?.content ?? '';
        if (c.finish_reason) finish[c.index] = c.finish_reason;
      }
    assert.deepEqual(per, r.choices.map((c) => c.message.content));
    assert.deepEqual(finish, r.choices.map((c) => c.finish_reason));
    const greedy = await ai.completions.create({ ...base, max_tokens: 4, n: 2 });
    assert.equal(greedy.choices[0].text, greedy.choices[1].text, 'temperature 0: the same choice twice');
  });
  await check('/tokenize and /detokenize: the CLI\'s ids, pieces, a chat\'s prompt_tokens, text back; bad ids 400', async () => {
    const post = async (route, body) => {
      const r = await fetch(srv.url + route, { method: 'POST', body: JSON.stringify(body) });
      return { status: r.status, body: await r.json() };
    };
    const text = 'The quick brown fox \u00e9<|im_end|>';
    const cli = spawnSync(bin, ['tokenize', '-m', modelDir, '--special', '--text', text], { encoding: 'utf8' })
      .stdout.trim().split(',').map(Number);
    for (const field of ['content', 'prompt']) {
      const t = await post('/tokenize', { [field]: text });
      assert.equal(t.status, 200);
      assert.deepEqual(t.body.tokens, cli, field);
      assert.equal(t.body.count, cli.length);
    }
    const p = (await post('/tokenize', { content: text, with_pieces: true })).body.tokens;
    assert.deepEqual(p.map((x) => x.id), cli);
    assert.equal(Buffer.concat(p.map((x) => Buffer.from(typeof x.piece === 'string' ? x.piece : x.piece))).toString(), text);
    const msgs = user('How many tokens is this?');
    const m = (await post('/tokenize', { model: MODEL, messages: msgs })).body;
    const r = await ai.chat.completions.create({ model: MODEL, messages: msgs, max_tokens: 1 });
    assert.equal(m.count, r.usage.prompt_tokens);
    const d = await post('/detokenize', { tokens: cli });
    assert.equal(d.status, 200);
    assert.equal(d.body.content, text);
    assert.equal(d.body.prompt, text);
    assert.equal((await post('/detokenize', { tokens: [1, -3] })).status, 400);
    assert.equal((await post('/tokenize', { nothing: 1 })).status, 400);
    assert.equal((await fetch(srv.url + '/tokenize')).status, 405);
  });
  await check('response_format json_schema: answers the schema takes (required keys, enum, typed items)', async () => {
    const schema = { type: 'object', additionalProperties: false, required: ['ok', 'color'], properties: {
      ok: { type: 'boolean' }, color: { enum: ['red', 'green'] }, flags: { type: 'array', items: { type: 'boolean' }, maxItems: 3 } } };
    let stops = 0;
    for (let seed = 1; seed <= 6; seed++) {
      const r = await ai.chat.completions.create({ model: MODEL, messages: user('JSON please'), max_tokens: 150,
        temperature: 1, seed, response_format: { type: 'json_schema', json_schema: { name: 'answer', schema } } });
      const c = r.choices[0];
      if (c.finish_reason !== 'stop') continue;
      stops++;
      const v = JSON.parse(c.message.content);
      assert.deepEqual(Object.keys(v).filter((k) => !['ok', 'color', 'flags'].includes(k)), [], c.message.content);
      assert.equal(typeof v.ok, 'boolean', c.message.content);
      assert.ok(['red', 'green'].includes(v.color), c.message.content);
      if ('flags' in v) assert.ok(Array.isArray(v.flags) && v.flags.length <= 3 && v.flags.every((f) => typeof f === 'boolean'));
    }
    assert.ok(stops >= 3, `only ${stops} of 6 answers were whole within 150 tokens`);
  });
  await check('response_format json_schema with lengths and bounds: whole answers keep them, the bounds exact', async () => {
    const schema = { type: 'object', properties: { code: { type: 'string', minLength: 2, maxLength: 4 },
      n: { type: 'integer', minimum: 3, exclusiveMaximum: 13 }, score: { type: 'number', exclusiveMinimum: 0, maximum: 0.3 } },
    required: ['code', 'n', 'score'], additionalProperties: false };
    let stops = 0;
    for (let seed = 1; seed <= 6; seed++) {
      const r = await ai.chat.completions.create({ model: MODEL, messages: user('JSON please'), max_tokens: 150,
        temperature: 1, seed, response_format: { type: 'json_schema', json_schema: { name: 'rated', schema } } });
      const c = r.choices[0];
      if (c.finish_reason !== 'stop') continue;
      stops++;
      const v = JSON.parse(c.message.content);
      assert.ok([...v.code].length >= 2 && [...v.code].length <= 4, c.message.content);
      assert.ok(Number.isInteger(v.n) && v.n >= 3 && v.n < 13, c.message.content);
      const score = c.message.content.match(/"score"\s*:\s*([-0-9.]+)/)[1];
      assert.ok(!/[eE]/.test(score) && Number(score) > 0 && Number(score) <= 0.3, c.message.content);
    }
    assert.ok(stops >= 3, `only ${stops} of 6 answers were whole within 150 tokens`);
    const e = await expectStatus(ai.chat.completions.create({ model: MODEL, messages: user('x'),
      response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'integer', minimum: 2, maximum: 1 } } } }), 400);
    assert.match(e.message, /no integer is within/);
  });
  await check('vLLM\'s guided_choice, guided_regex, guided_grammar and structured_outputs, llama.cpp\'s json_schema and grammar hold the whole answer; a bad grammar or two ways refused', async () => {
    const choices = ['Positive', 'Negative', 'Neutral \u2713'];
    for (let seed = 1; seed <= 4; seed++) {
      const c = (await ai.chat.completions.create({ model: MODEL, messages: user('Sentiment?'), max_tokens: 20,
        temperature: 1, seed, guided_choice: choices })).choices[0];
      assert.ok(choices.includes(c.message.content), JSON.stringify(c.message.content));
      assert.equal(c.finish_reason, 'stop');
    }
    const re = /^(yes|no), because [a-z ]{1,12}\.$/;
    for (let seed = 1; seed <= 3; seed++) {
      const c = (await ai.chat.completions.create({ model: MODEL, messages: user('Well?'), max_tokens: 60,
        temperature: 1, seed, guided_regex: '(yes|no), because [a-z ]{1,12}\\.' })).choices[0];
      assert.match(c.message.content, re);
      assert.equal(c.finish_reason, 'stop');
    }
    const s = await collect(await ai.completions.create({ ...base, max_tokens: 20, temperature: 1, seed: 3, stream: true,
      structured_outputs: { choice: ['alpha', 'beta'] } }));
    assert.ok(['alpha', 'beta'].includes(s.content), s.content);
    // a GBNF grammar (llama.cpp's): the random model's answers are whole texts of it, ended there
    const grammar = 'root ::= item (", " item){1,3} "."\nitem ::= [a-z]{2,8}';
    const listed = /^[a-z]{2,8}(, [a-z]{2,8}){1,3}\.$/;
    for (let seed = 1; seed <= 3; seed++) {
      const c = (await ai.chat.completions.create({ model: MODEL, messages: user('A list?'), max_tokens: 80,
        temperature: 1, seed, guided_grammar: grammar })).choices[0];
      assert.match(c.message.content, listed);
      assert.equal(c.finish_reason, 'stop');
      const l = await (await fetch(srv.url + '/completion', { method: 'POST', body: JSON.stringify({ prompt: 'A list:',
        n_predict: 80, temperature: 1, seed, grammar }) })).json();
      assert.match(l.content, listed, JSON.stringify(l));
    }
    const g = await collect(await ai.completions.create({ ...base, max_tokens: 60, temperature: 1, seed: 3, stream: true,
      structured_outputs: { grammar } }));
    assert.match(g.content, listed);
    // llama.cpp's json_schema field: a schema; an empty grammar beside it is none
    const j = (await ai.chat.completions.create({ model: MODEL, messages: user('x'), max_tokens: 40, temperature: 1, seed: 2,
      json_schema: { type: 'object', properties: { a: { enum: [1, 2] } }, required: ['a'], additionalProperties: false },
      grammar: '' })).choices[0];
    if (j.finish_reason === 'stop') assert.ok([1, 2].includes(JSON.parse(j.message.content).a), j.message.content);
    else assert.match(j.message.content, /^\s*\{/);
    // vLLM's guided_json as the schema's JSON text, and structured_outputs' json_object
    for (const held of [{ guided_json: JSON.stringify({ enum: ['on', 'off'] }) }, { structured_outputs: { json_object: true } }]) {
      const c = (await ai.chat.completions.create({ model: MODEL, messages: user('x'), max_tokens: 40, temperature: 1,
        seed: 4, ...held })).choices[0];
      if (held.guided_json) assert.ok(['"on"', '"off"'].includes(c.message.content), c.message.content);
      else if (c.finish_reason === 'stop') assert.equal(typeof JSON.parse(c.message.content), 'object');
      else assert.match(c.message.content, /^\s*\{/);
    }
    for (const [body, param, why] of [[{ guided_choice: ['a'], response_format: { type: 'json_object' } }, 'guided_choice', /cannot both/],
      [{ guided_grammar: 'root ::= ("a"' }, 'guided_grammar', /grammar line 1: a group is not closed/],
      [{ grammar: 'root ::= "a"\n  | item' }, 'grammar', /grammar line 2: rule 'item' is used but not defined/],
      [{ structured_outputs: { grammar: 'root ::= root "a" | "b"' } }, 'structured_outputs', /left-recursive/],
      [{ guided_grammar: 'root ::= "a"', guided_regex: 'a' }, 'guided_grammar', /at most/],
      [{ guided_regex: '(a)\\1' }, 'guided_regex', /backreference/],
      [{ guided_regex: '[ab]{2,65535}' }, 'guided_regex', /a repeat of more than 1000/],
      [{ structured_outputs: { structural_tag: '{}' } }, 'structured_outputs', /structural_tag is not supported/],
      [{ guided_json: 'not json' }, 'guided_json', /its JSON text/],
      [{ grammar: 'root ::= (("a"{0,100}){0,100}){0,100}' }, 'grammar', /too ambiguous/],
      [{ guided_regex: 'a', structured_outputs: { choice: ['b'] } }, 'structured_outputs', /at most/]]) {
      const e = await expectStatus(ai.chat.completions.create({ model: MODEL, messages: user('x'), ...body }), 400);
      assert.equal(e.param, param);
      assert.match(e.message, why);
    }
  });
  await check('vLLM\'s stop_token_ids, min_tokens, ignore_eos, skip_special_tokens and include_stop_str_in_output; use_beam_search refused', async () => {
    const id = async (text) => (await (await fetch(srv.url + '/tokenize', { method: 'POST',
      body: JSON.stringify({ content: text }) })).json()).tokens;
    const [end] = await id('<|im_end|>'), [word] = await id(' two');
    const ended = { ...base, max_tokens: 12, logit_bias: { [end]: 100 } };
    let r = (await ai.completions.create(ended));
    assert.equal(r.usage.completion_tokens, 0, 'the biased end token ends the answer at once');
    r = await ai.completions.create({ ...ended, min_tokens: 5 });
    assert.equal(r.usage.completion_tokens, 5);
    assert.equal(r.choices[0].finish_reason, 'stop');
    r = await ai.completions.create({ ...ended, ignore_eos: true, max_tokens: 6 });
    assert.equal(r.usage.completion_tokens, 6);
    assert.equal(r.choices[0].finish_reason, 'length');
    r = await ai.completions.create({ ...base, max_tokens: 12, logit_bias: { [word]: 100 }, stop_token_ids: [word] });
    assert.equal(r.usage.completion_tokens, 1);
    assert.equal(r.choices[0].text, ' two');
    assert.equal(r.choices[0].finish_reason, 'stop');
    r = await ai.completions.create({ ...base, max_tokens: 12, logit_bias: { [word]: 100 }, stop_token_ids: [word], min_tokens: 3 });
    assert.equal(r.usage.completion_tokens, 4, 'stop_token_ids wait for min_tokens too');
    const middle = Number(spawnSync(bin, ['tokenize', '-m', modelDir, '--special', '--text', '<|im_middle|>'],
      { encoding: 'utf8' }).stdout.trim());
    const special = { ...base, max_tokens: 2, logit_bias: { [middle]: 100 } };
    assert.equal((await ai.completions.create(special)).choices[0].text, '', 'special tokens are dropped');
    r = await ai.completions.create({ ...special, skip_special_tokens: false });
    assert.equal(r.choices[0].text, '<|im_middle|><|im_middle|>', 'unless skip_special_tokens is false');
    const held = { ...base, max_tokens: 12, logit_bias: { [word]: 100 }, stop: [' two'], min_tokens: 3 };
    r = await ai.completions.create(held);
    assert.equal(r.choices[0].text, ' two two', 'a stop string ending before the answer has min_tokens tokens does not stop');
    assert.equal(r.usage.completion_tokens, 3, 'one ending in the last of them does (vLLM\'s)');
    assert.equal(r.choices[0].finish_reason, 'stop');
    let streamed = '';
    for await (const ev of await ai.completions.create({ ...held, stream: true }))
      streamed += ev.choices[0]?.text ?? '';
    assert.equal(streamed, ' two two');
    // include_stop_str_in_output: the stop string that ended the answer stays in its text, streamed too
    r = await ai.completions.create({ ...held, include_stop_str_in_output: true });
    assert.equal(r.choices[0].text, ' two two two');
    assert.equal(r.choices[0].finish_reason, 'stop');
    streamed = '';
    for await (const ev of await ai.completions.create({ ...held, stream: true, include_stop_str_in_output: true }))
      streamed += ev.choices[0]?.text ?? '';
    assert.equal(streamed, ' two two two');
    const chat = await ai.chat.completions.create({ model: MODEL, messages: user('Hello'), max_tokens: 12,
      logit_bias: { [word]: 100 }, stop: [' two two'], include_stop_str_in_output: true });
    assert.equal(chat.choices[0].message.content, ' two two', 'chat: the answer is its stop string');
    for (const [body, param] of [[{ use_beam_search: true }, 'use_beam_search'], [{ include_stop_str_in_output: 1 }, 'include_stop_str_in_output'],
      [{ min_tokens: 9, max_tokens: 4 }, 'min_tokens'],
      [{ ignore_eos: true, guided_choice: ['a'] }, 'ignore_eos'], [{ stop_token_ids: [1e9] }, 'stop_token_ids'],
      [{ stop_token_ids: [10000000] }, 'stop_token_ids']]) {
      const e = await expectStatus(ai.completions.create({ ...base, ...body }), 400);
      assert.equal(e.param, param, JSON.stringify(body));
    }
    await ai.completions.create({ ...base, max_tokens: 2, use_beam_search: false, include_stop_str_in_output: false });
  });
  await check('vLLM\'s truncate_prompt_tokens keeps the prompt\'s last tokens', async () => {
    const ids = (await (await fetch(srv.url + '/tokenize', { method: 'POST',
      body: JSON.stringify({ content: 'one two three four five six seven' }) })).json()).tokens;
    const kept = ids.slice(-3);
    const text = (await (await fetch(srv.url + '/detokenize', { method: 'POST',
      body: JSON.stringify({ tokens: kept }) })).json()).content;
    let r = await ai.completions.create({ ...base, prompt: ids, truncate_prompt_tokens: 3, echo: true, max_tokens: 1 });
    assert.equal(r.usage.prompt_tokens, 3);
    assert.ok(r.choices[0].text.startsWith(text), 'the prompt echoed is what was kept');
    r = await ai.completions.create({ ...base, prompt: 'one two three four five six seven', truncate_prompt_tokens: 3,
      echo: true, max_tokens: 1 });
    assert.ok(r.choices[0].text.startsWith(text), 'a text prompt too');
    const same = await ai.completions.create({ ...base, prompt: kept, max_tokens: 4 });
    r = await ai.completions.create({ ...base, prompt: ids, truncate_prompt_tokens: 3, max_tokens: 4 });
    assert.equal(r.choices[0].text, same.choices[0].text, 'the answer is that of the kept tokens alone');
    const long = { ...base, prompt: 'word '.repeat(5000), max_tokens: 1 };
    const e = await expectStatus(ai.completions.create(long), 400);
    const limit = Number(/takes at most (\d+)/.exec(e.message)[1]);
    r = await ai.completions.create({ ...long, truncate_prompt_tokens: -1 });
    assert.equal(r.usage.prompt_tokens, limit, 'to what the server takes');
    r = await ai.chat.completions.create({ model: MODEL, messages: user('word '.repeat(5000)), max_tokens: 1,
      truncate_prompt_tokens: 40 });
    assert.equal(r.usage.prompt_tokens, 40, 'chat\'s rendered prompt too');
    for (const v of [0, 1.5, limit + 1]) {
      const e = await expectStatus(ai.completions.create({ ...base, truncate_prompt_tokens: v }), 400);
      assert.equal(e.param, 'truncate_prompt_tokens', String(v));
    }
  });
  await check('llama.cpp\'s POST /infill and a completion\'s suffix: refused for a model without fill-in-the-middle tokens (Kimi\'s)', async () => {
    const r = await fetch(srv.url + '/infill', { method: 'POST', body: JSON.stringify({ input_prefix: 'a', input_suffix: 'b' }) });
    assert.equal(r.status, 400);
    const e = (await r.json()).error;
    assert.equal(e.code, 'fim_not_supported');
    assert.match(e.message, /fill-in-the-middle/);
    assert.equal((await fetch(srv.url + '/infill')).status, 405);
    const v1 = await fetch(srv.url + '/v1/completions', { method: 'POST', body: JSON.stringify({ prompt: 'a', suffix: 'b' }) });
    assert.equal(v1.status, 400);
    assert.deepEqual([(await v1.json()).error.param], ['suffix'], 'completions with a suffix: the same refusal');
  });
  await check('llama.cpp\'s POST /completion: its fields and its answer\'s shape, the same tokens as /v1/completions', async () => {
    const native = async (body) => {
      const r = await fetch(srv.url + '/completion', { method: 'POST', body: JSON.stringify(body) });
      return { status: r.status, text: await r.text() };
    };
    const prompt = 'one two three';
    const oai = await ai.completions.create({ model: MODEL, prompt, max_tokens: 6, temperature: 0, logprobs: 2 });
    let r = await native({ prompt, n_predict: 6, temperature: 0, n_probs: 2, return_tokens: true, cache_prompt: true });
    assert.equal(r.status, 200, r.text);
    let o = JSON.parse(r.text);
    assert.equal(o.content, oai.choices[0].text);
    assert.equal(o.stop, true);
    assert.equal(o.tokens_predicted, oai.usage.completion_tokens);
    assert.equal(o.tokens_evaluated, oai.usage.prompt_tokens);
    assert.equal(o.stop_type, o.tokens_predicted === 6 ? 'limit' : 'eos');
    assert.equal(o.prompt, prompt);
    const back = (await (await fetch(srv.url + '/detokenize', { method: 'POST', body: JSON.stringify({ tokens: o.tokens }) })).json()).content;
    assert.equal(back, o.content, 'return_tokens: the answer\'s ids');
    assert.equal(o.completion_probabilities.length, o.tokens_predicted);
    o.completion_probabilities.forEach((p, i) => {
      assert.equal(p.id, o.tokens[i]);
      assert.ok(Math.abs(p.logprob - oai.choices[0].logprobs.token_logprobs[i]) < 1e-5, `token ${i}`);
      assert.equal(p.top_logprobs.length, 2);
    });
    for (const k of ['prompt_n', 'prompt_ms', 'prompt_per_second', 'predicted_n', 'predicted_ms', 'predicted_per_second'])
      assert.equal(typeof o.timings[k], 'number', k);
    assert.equal(o.timings.predicted_n, o.tokens_predicted);
    // streamed: the same text in pieces, then the result; no [DONE]
    r = await native({ prompt, n_predict: 6, temperature: 0, stream: true });
    const events = r.text.split('\n\n').filter((e) => e.startsWith('data: ')).map((e) => JSON.parse(e.slice(6)));
    assert.ok(!r.text.includes('[DONE]'));
    const last = events.pop();
    assert.equal(last.stop, true);
    assert.ok(events.every((e) => e.stop === false));
    assert.ok(events.every((e) => e.id_slot === last.id_slot && e.id_slot >= 0), 'each piece names its slot');
    assert.equal(events.map((e) => e.content).join(''), oai.choices[0].text);
    assert.equal(last.tokens_predicted, o.tokens_predicted);
    // a stop string, llama.cpp's logit_bias pairs, -1 for n_predict and seed
    const [word] = (await (await fetch(srv.url + '/tokenize', { method: 'POST', body: JSON.stringify({ content: ' two' }) })).json()).tokens;
    o = JSON.parse((await native({ prompt, n_predict: -1, seed: -1, logit_bias: [[word, 100]], stop: [' two two'] })).text);
    assert.equal(o.stop_type, 'word');
    assert.equal(o.stopping_word, ' two two');
    assert.equal(o.content, '');
    o = JSON.parse((await native({ prompt, n_predict: 4, temperature: 0, logit_bias: { [word]: false } })).text);
    assert.ok(!o.content.includes(' two'), 'a bias false bans the token');
    // a list of prompts (text or token ids): llama.cpp's answer, an array of each one's result in order
    const ids = (await (await fetch(srv.url + '/tokenize', { method: 'POST', body: JSON.stringify({ content: 'three four' }) })).json()).tokens;
    const many = JSON.parse((await native({ prompt: [prompt, ids], n_predict: 3, temperature: 0, return_tokens: true })).text);
    assert.ok(Array.isArray(many) && many.length === 2, JSON.stringify(many));
    assert.deepEqual(many.map((x) => x.index), [0, 1]);
    for (const [k, p] of [[0, prompt], [1, 'three four']]) {
      const alone = JSON.parse((await native({ prompt: p, n_predict: 3, temperature: 0, return_tokens: true })).text);
      assert.deepEqual(many[k].tokens, alone.tokens, `prompt ${k} answers as it does alone`);
      assert.equal(many[k].content, alone.content);
      assert.equal(many[k].prompt, p);
    }
    // DRY: after a b c a b c a b, c would repeat "a b c" further; biased to be the greedy choice, DRY
    // takes it away, unless c is a sequence breaker (then never penalised); XTC and top-n-sigma are taken
    const abc = (await (await fetch(srv.url + '/tokenize', { method: 'POST', body: JSON.stringify({ content: ' one two three' }) })).json()).tokens;
    assert.ok(abc.length >= 3 && new Set(abc.slice(0, 3)).size === 3, JSON.stringify(abc));
    const [a, b, c] = abc;
    const cText = (await (await fetch(srv.url + '/detokenize', { method: 'POST', body: JSON.stringify({ tokens: [c] }) })).json()).content;
    const dry = { prompt: [a, b, c, a, b, c, a, b], n_predict: 1, temperature: 0, return_tokens: true, logit_bias: [[c, 40]] };
    const first = async (extra) => JSON.parse((await native({ ...dry, ...extra })).text).tokens[0];
    assert.equal(await first({}), c, 'the bias makes c the greedy choice');
    assert.notEqual(await first({ dry_multiplier: 1000, dry_base: 1.75, dry_allowed_length: 2 }), c, 'DRY penalises c');
    assert.equal(await first({ dry_multiplier: 1000, dry_allowed_length: 6 }), c, 'the repeat, a b c a b, is 5 long: allowed at 6');
    assert.equal(await first({ dry_multiplier: 1000, dry_sequence_breakers: [cText] }), c, 'c is a breaker');
    assert.equal(await first({ dry_multiplier: 1000, dry_penalty_last_n: 3 }), c, 'a window of 3 holds no earlier c');
    assert.notEqual(await first({ dry_multiplier: 1000, dry_penalty_last_n: 1e9 }), c, 'a window past the context is the context');
    const viaOai = await ai.completions.create({ model: MODEL, prompt: dry.prompt, max_tokens: 1, temperature: 0,
      logit_bias: { [c]: 40 }, dry_multiplier: 1000, logprobs: 1 });
    assert.notEqual(viaOai.choices[0].text, cText, 'the OpenAI route takes DRY too');
    assert.equal((await native({ prompt, n_predict: 3, xtc_probability: 1, xtc_threshold: 0.05, top_n_sigma: 1.5 })).status, 200);
    // post_sampling_probs: each token's probability among what the sampler kept (top_k 3: three
    // that sum to 1, the drawn one among them); greedy, the token alone with 1
    o = JSON.parse((await native({ prompt, n_predict: 4, seed: 9, temperature: 1, top_k: 3, n_probs: 5,
      post_sampling_probs: true })).text);
    assert.equal(o.completion_probabilities.length, 4);
    for (const t of o.completion_probabilities) {
      assert.ok(!('logprob' in t) && t.top_probs.length === 3, JSON.stringify(t));
      assert.ok(Math.abs(t.top_probs.reduce((a, x) => a + x.prob, 0) - 1) < 1e-5, JSON.stringify(t));
      assert.ok(Math.abs(t.top_probs.find((x) => x.id === t.id).prob - t.prob) < 1e-6, JSON.stringify(t));
    }
    o = JSON.parse((await native({ prompt, n_predict: 2, temperature: 0, n_probs: 3, post_sampling_probs: true })).text);
    for (const t of o.completion_probabilities)
      assert.ok(t.prob === 1 && t.top_probs.length === 1 && t.top_probs[0].id === t.id, JSON.stringify(t));
    for (const extra of [{ mirostat: 2, mirostat_tau: 3 }, { mirostat: 1 }, { typical_p: 0.5 }, { dynatemp_range: 0.5, dynatemp_exponent: 2 }]) {
      r = await native({ prompt, n_predict: 4, seed: 5, ...extra });
      assert.equal(r.status, 200, JSON.stringify(extra) + r.text);
      assert.equal(JSON.parse(r.text).tokens_predicted > 0, true);
    }
    for (const [body, param] of [[{ prompt, mirostat: 3 }, 'mirostat'], [{ prompt, n_predict: 1.5 }, 'n_predict'],
      [{ prompt: ['a', 7] }, 'prompt'], [{ prompt: ['a', 'b'], stream: true }, 'stream'], [{ prompt, logit_bias: [['two', 1]] }, 'logit_bias'], [{ prompt, grammar: 'root ::= a' }, 'grammar'],
      [{ prompt, typical_p: 2 }, 'typical_p'], [{}, 'prompt'], [{ prompt, dry_base: 0.5 }, 'dry_base'],
      [{ prompt, xtc_probability: 2 }, 'xtc_probability'], [{ prompt, dry_sequence_breakers: [] }, 'dry_sequence_breakers'],
      [{ prompt, dry_sequence_breakers: [1] }, 'dry_sequence_breakers'], [{ prompt, dry_allowed_length: 1.5 }, 'dry_allowed_length']]) {
      r = await native(body);
      assert.equal(r.status, 400, JSON.stringify(body));
      assert.equal(JSON.parse(r.text).error.param, param, JSON.stringify(body));
    }
    assert.equal((await native({ prompt, n_predict: 2, typical_p: 1, mirostat: 0, repeat_last_n: -1, post_sampling_probs: false })).status, 200);
    // n_predict 0: the prompt computed (llama.cpp's cache warming), nothing generated
    r = await native({ prompt: prompt + ' warm', n_predict: 0 });
    assert.equal(r.status, 200, r.text);
    const warm = JSON.parse(r.text);
    assert.equal(warm.content, '');
    assert.equal(warm.tokens_predicted, 0);
    assert.ok(warm.tokens_evaluated > 0, r.text);
    r = await native({ prompt: ['a', [1, 2]], n_predict: 0 });   // a list's prompts too
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(JSON.parse(r.text).map((x) => x.tokens_predicted), [0, 0]);
  });
  await check('a marker token that means nothing where it comes (a section\'s or a call\'s end outside a section) is not sent, as other special tokens are not', async () => {
    const added = JSON.parse(readFileSync(join(modelDir, 'tokenizer_config.json'), 'utf8')).added_tokens_decoder;
    const idOf = (name) => Number(Object.keys(added).find((k) => added[k].content === name));
    for (const name of ['<|tool_calls_section_end|>', '<|tool_call_end|>']) {
      const req = { model: MODEL, messages: user('hi'), max_tokens: 3, logit_bias: { [idOf(name)]: 100 } };
      const r = await ai.chat.completions.create(req);
      assert.equal(r.usage.completion_tokens, 3);
      assert.equal(r.choices[0].message.content ?? '', '', name);
      assert.equal((await collect(await ai.chat.completions.create({ ...req, stream: true }))).content, '', name);
      const kept = await ai.chat.completions.create({ ...req, skip_special_tokens: false });
      assert.equal(kept.choices[0].message.content, name.repeat(3), 'skip_special_tokens false keeps them');
    }
  });
  await check('tool_choice naming a function or "required": the answer is that call, its arguments the parameters take', async () => {
    const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object',
      properties: { city: { enum: ['Paris', 'Rome'] }, days: { type: 'integer', minimum: 1 } },
      required: ['city'], additionalProperties: false } } },
    { type: 'function', function: { name: 'get_time', parameters: { type: 'object',
      properties: { utc: { type: 'boolean' } }, required: ['utc'], additionalProperties: false } } }];
    const req = { model: MODEL, messages: user('What is the weather?'), max_tokens: 200, temperature: 1, tools };
    for (let seed = 1; seed <= 3; seed++) {
      const r = await ai.chat.completions.create({ ...req, seed, tool_choice: { type: 'function', function: { name: 'get_weather' } } });
      const c = r.choices[0];
      assert.equal(c.finish_reason, 'tool_calls', JSON.stringify(c));
      assert.equal(c.message.tool_calls.length, 1);
      const call = c.message.tool_calls[0];
      assert.equal(call.function.name, 'get_weather');
      assert.equal(call.id, 'functions.get_weather:0');
      const args = JSON.parse(call.function.arguments);
      assert.ok(['Paris', 'Rome'].includes(args.city), call.function.arguments);
      assert.ok(Object.keys(args).every((k) => ['city', 'days'].includes(k)), call.function.arguments);
      if ('days' in args) assert.ok(Number.isInteger(args.days), call.function.arguments);
    }
    const any = await ai.chat.completions.create({ ...req, seed: 9, tool_choice: 'required' });
    assert.equal(any.choices[0].finish_reason, 'tool_calls', JSON.stringify(any.choices[0]));
    for (const call of any.choices[0].message.tool_calls) {
      assert.ok(['get_weather', 'get_time'].includes(call.function.name));
      JSON.parse(call.function.arguments);
    }
    const e = await expectStatus(ai.chat.completions.create({ ...req, tool_choice: { type: 'function', function: { name: 'nope' } } }), 400);
    assert.equal(e.param, 'tool_choice');
  });
  await check('presence and frequency penalties only ever demote tokens the answer already holds', async () => {
    const greedy = (await ai.completions.create({ ...base, max_tokens: 40, logprobs: 0 })).choices[0].logprobs.tokens;
    assert.ok(new Set(greedy).size < greedy.length, 'the greedy answer repeats no token: nothing to check');
    for (const pen of [{ presence_penalty: 2 }, { frequency_penalty: 2 }]) {
      const t = (await ai.completions.create({ ...base, max_tokens: 40, logprobs: 0, ...pen })).choices[0].logprobs.tokens;
      const k = t.findIndex((x, i) => x !== greedy[i]);
      assert.ok(k > 0, `${JSON.stringify(pen)}: the same answer as without it`);
      assert.ok(greedy.slice(0, k).includes(greedy[k]),
        `${JSON.stringify(pen)}: token ${k} changed, but the greedy one (${greedy[k]}) was new`);
    }
  });
}

async function plainServer() {
  const srv = await startServer(['--no-think', '--max-body', '65536', '--dry-sequence-breaker', ';', '--xtc-threshold', '0.2']);
  const ai = client(srv);
  await check('GET /v1/models lists the model; GET /v1/models/{id} is that model', async () => {
    const list = await ai.models.list();
    assert.deepEqual(list.data.map((m) => m.id), [MODEL]);
    const one = await ai.models.retrieve(MODEL);
    assert.equal(one.object, 'model');
    assert.equal(one.id, MODEL);
    await expectStatus(ai.models.retrieve('gpt-nope'), 404);
    assert.equal((await fetch(srv.url + '/v1/models/' + MODEL, { method: 'DELETE' })).status, 405);
    const slots = await (await fetch(srv.url + '/slots')).json();
    assert.equal(list.data[0].max_model_len, slots[0].n_ctx, 'vLLM\'s max_model_len: the positions a request may fill');
    assert.equal(one.max_model_len, slots[0].n_ctx);
    const props = await (await fetch(srv.url + '/props')).json();     // llama.cpp's
    assert.equal(props.default_generation_settings.n_ctx, slots[0].n_ctx);
    assert.equal(props.total_slots, 1);
    assert.equal(props.model_path, MODEL);
    assert.match(props.chat_template, /^kimi-k2\.5/);
    assert.equal(typeof props.default_generation_settings.params.temperature, 'number');
    const params = props.default_generation_settings.params;
    assert.deepEqual(params.dry_sequence_breakers, [';'], 'serve --dry-sequence-breaker');
    assert.equal(params.xtc_threshold, 0.2, 'settings read as they were given, not as floats\' digits');
    assert.equal(params.mirostat, 0);
    assert.equal(params.dry_penalty_last_n, -1);
    assert.equal(props.modalities.vision, false);
  });
  await check('each request ends with a line in the log: its id, tokens, times and finish', async () => {
    const r = await ai.chat.completions.create({ model: MODEL, messages: user('Log me'), max_tokens: 3, temperature: 0 });
    const line = new RegExp(`moetier serve: ${r.id}: prompt ${r.usage.prompt_tokens} tokens \\(\\d+ cached\\) in [\\d.]+ s, ` +
                            `${r.usage.completion_tokens} generated in [\\d.]+ s \\([\\d.]+ tokens/s\\), ${r.choices[0].finish_reason}\\n`);
    for (let k = 0; k < 50 && !line.test(srv.log); k++) await new Promise((res) => setTimeout(res, 20));
    assert.match(srv.log, line);
  });
  await check('the API without "/v1" (a base URL lacking it), llama.cpp\'s /v1/health and /apply-template', async () => {
    const bare = new OpenAI({ baseURL: srv.url, apiKey: 'none', maxRetries: 0, timeout: 120000 });
    assert.deepEqual((await bare.models.list()).data.map((m) => m.id), [MODEL]);
    const req = { model: MODEL, messages: user('Hello there'), max_tokens: 3, temperature: 0 };
    const a = await bare.chat.completions.create(req), b = await ai.chat.completions.create(req);
    assert.equal(a.choices[0].message.content, b.choices[0].message.content);
    assert.equal((await bare.completions.create({ model: MODEL, prompt: 'one two', max_tokens: 2 })).object, 'text_completion');
    assert.equal((await (await fetch(srv.url + '/v1/health')).json()).status, 'ok');
    assert.equal((await fetch(srv.url + '/chatty/completions', { method: 'POST', body: '{}' })).status, 404);
    const t = await fetch(srv.url + '/apply-template', { method: 'POST', body: JSON.stringify({ messages: req.messages }) });
    assert.equal(t.status, 200);
    const { prompt } = await t.json();
    assert.ok(prompt.includes('Hello there'), prompt);
    const ids = (await (await fetch(srv.url + '/tokenize', { method: 'POST',
      body: JSON.stringify({ content: prompt }) })).json()).tokens;
    const scored = await ai.completions.create({ model: MODEL, prompt: ids, max_tokens: 3, temperature: 0 });
    assert.equal(scored.usage.prompt_tokens, b.usage.prompt_tokens, 'the chat\'s prompt, token for token');
    assert.equal(scored.choices[0].text, b.choices[0].message.content);
    const bad = await fetch(srv.url + '/apply-template', { method: 'POST', body: JSON.stringify({ messages: 'x' }) });
    assert.equal(bad.status, 400);
    assert.equal((await bad.json()).error.param, 'messages');
    assert.equal((await fetch(srv.url + '/apply-template')).status, 405);
  });
  await check('chat, not streamed: content, length, usage', async () => {
    const r = await ai.chat.completions.create({ model: MODEL, messages: user('Hello there'), max_tokens: 6, seed: 7 });
    assert.equal(r.object, 'chat.completion');
    assert.equal(r.choices[0].message.role, 'assistant');
    assert.equal(typeof r.choices[0].message.content, 'string');
    assert.equal(r.choices[0].finish_reason, 'length');
    assert.equal(r.usage.completion_tokens, 6);
    assert.ok(r.usage.prompt_tokens > 3);
    assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + 6);
  });
  await check('a follow-up turn reuses the KV cache of the conversation', async () => {
    const first = await ai.chat.completions.create({ model: MODEL, messages: user('Tell me a story'), max_tokens: 4 });
    const msgs = [...user('Tell me a story'), { role: 'assistant', content: first.choices[0].message.content },
      ...user('And then?')];
    const r = await ai.chat.completions.create({ model: MODEL, messages: msgs, max_tokens: 2 });
    assert.ok(r.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens - 1,
      JSON.stringify(r.usage));
  });
  await check('chat, streamed: role first, finish_reason, usage, [DONE]', async () => {
    // a fixed seed: sampled with a fresh one, an end token within 5 tokens happens now and then
    const s = await ai.chat.completions.create({ model: MODEL, messages: user('Hi'), max_tokens: 5, seed: 7, stream: true,
      stream_options: { include_usage: true } });
    const o = await collect(s);
    assert.equal(o.role, 'assistant');
    assert.equal(o.finish, 'length');
    assert.equal(o.usage.completion_tokens, 5);
    assert.ok(o.chunks >= 3);
  });
  await check('completions, streamed and not', async () => {
    const r = await ai.completions.create({ model: MODEL, prompt: 'The quick brown', max_tokens: 4, temperature: 0 });
    assert.equal(r.object, 'text_completion');
    assert.equal(r.choices[0].finish_reason, 'length');
    assert.equal(r.usage.completion_tokens, 4);
    const o = await collect(await ai.completions.create({ model: MODEL, prompt: 'The quick brown', max_tokens: 4,
      temperature: 0, stream: true }));
    assert.equal(o.finish, 'length');
  });
  await check('bad fields: 400 naming the field', async () => {
    let e = await expectStatus(ai.chat.completions.create({ model: MODEL, messages: user('x'), temperature: 5 }), 400);
    assert.equal(e.param, 'temperature');
    e = await expectStatus(ai.chat.completions.create({ model: MODEL, messages: [] }), 400);
    assert.equal(e.param, 'messages');
    e = await expectStatus(ai.chat.completions.create({ model: MODEL, messages: user('x'), max_tokens: 0 }), 400);
    assert.equal(e.param, 'max_tokens');
    await expectStatus(ai.completions.create({ model: MODEL, prompt: 42 }), 400);
  });
  await check('unknown model: 404 model_not_found', async () => {
    const e = await expectStatus(ai.chat.completions.create({ model: 'gpt-nope', messages: user('x') }), 404);
    assert.equal(e.code, 'model_not_found');
  });
  await check('plain HTTP: malformed JSON 400, unknown route 404, wrong method 405, big body 413', async () => {
    const post = (path, body) => fetch(srv.url + path, { method: 'POST', body, headers: { 'content-type': 'application/json' } });
    let r = await post('/v1/chat/completions', '{"messages": [');
    assert.equal(r.status, 400);
    assert.equal((await r.json()).error.type, 'invalid_request_error');
    r = await fetch(srv.url + '/v1/nothing');
    assert.equal(r.status, 404);
    r = await fetch(srv.url + '/v1/chat/completions');
    assert.equal(r.status, 405);
    assert.equal(r.headers.get('allow'), 'POST');   // (RFC 9110: a 405 names what the route takes)
    assert.match((await r.json()).error.message, /use POST \/v1\/chat\/completions/);
    r = await fetch(srv.url + '/health', { method: 'DELETE' });
    assert.equal(r.status, 405);
    assert.equal(r.headers.get('allow'), 'GET, HEAD');
    r = await fetch(srv.url + '/health', { method: 'HEAD' });
    assert.equal(r.status, 200);
    assert.equal(await r.text(), '');
    r = await post('/v1/chat/completions', JSON.stringify({ messages: user('x'.repeat(70000)) }));
    assert.equal(r.status, 413);
    r = await fetch(srv.url + '/health');
    assert.deepEqual(await r.json(), { status: 'ok', slots_idle: 1, slots_processing: 0 });
  });
  await check('conversations in turn: each next turn comes back from the prompt cache, answering as if prefilled again', async () => {
    const story = (topic) => `Write at length about ${topic}: where it comes from, how it is made, who uses it, ` +
      'what it costs, how it has changed over the last hundred years and what might come of it next.';
    const turns = async (ai2) => {
      const out = [];
      const a = user(story('paper')), b = user(story('glass'));
      const first = await ai2.chat.completions.create({ model: MODEL, messages: a, max_tokens: 3, temperature: 0 });
      await ai2.chat.completions.create({ model: MODEL, messages: b, max_tokens: 3, temperature: 0 });
      const next = [...a, { role: 'assistant', content: first.choices[0].message.content }, ...user('And then?')];
      const r = await ai2.chat.completions.create({ model: MODEL, messages: next, max_tokens: 4, temperature: 0 });
      out.push(first.choices[0].message.content, r.choices[0].message.content);
      return { out, first: first.usage, next: r.usage };
    };
    const restoredNow = async () =>
      Number(/moetier_prompt_tokens_restored_total (\d+)/.exec(await (await fetch(srv.url + '/metrics')).text())[1]);
    const before = await restoredNow();
    const on = await turns(ai);
    assert.ok(on.next.prompt_tokens_details.cached_tokens >= on.first.prompt_tokens - 1, JSON.stringify(on));
    const t = await (await fetch(srv.url + '/metrics')).text();
    const restored = (await restoredNow()) - before;
    assert.ok(restored >= on.first.prompt_tokens - 20, `${restored} tokens restored:\n${t}`);
    assert.ok(Number(/moetier_prompt_cache_entries (\d+)/.exec(t)[1]) >= 1, t);
    const offSrv = await startServer(['--no-think', '--prompt-cache-gb', '0']);
    try {
      assert.ok(!/prompt cache:/.test(offSrv.log), offSrv.log);
      const off = await turns(client(offSrv));
      assert.ok(off.next.prompt_tokens_details.cached_tokens < 20, JSON.stringify(off));
      assert.deepEqual(on.out, off.out, 'answers differ with the prompt cache on and off');
    } finally {
      await stopServer(offSrv);
    }
  });
  await check('GET /metrics: Prometheus text with tokens, TTFT, queue depth', async () => {
    const t = await (await fetch(srv.url + '/metrics')).text();
    for (const name of ['moetier_completion_tokens_total', 'moetier_time_to_first_token_seconds_count',
      'moetier_queue_depth 0', 'moetier_requests_total{status="400"}', 'moetier_decode_tokens_per_second'])
      assert.ok(t.includes(name), name + ' missing from:\n' + t);
    // the latency histograms: every request answered is in each (+Inf), its
    // time to first token within the request's time
    const count = (name) => Number(new RegExp(`^${name}_count (\\d+)$`, 'm').exec(t)[1]);
    const sum = (name) => Number(new RegExp(`^${name}_sum (\\S+)$`, 'm').exec(t)[1]);
    const e2e = count('moetier_e2e_request_latency_seconds');
    assert.ok(e2e >= 3 && count('moetier_request_queue_time_seconds') === e2e, t);
    assert.ok(count('moetier_time_to_first_token_seconds') <= e2e, t);
    assert.ok(new RegExp(`^moetier_e2e_request_latency_seconds_bucket\\{le="\\+Inf"\\} ${e2e}$`, 'm').test(t), t);
    assert.ok(sum('moetier_time_to_first_token_seconds') <= sum('moetier_e2e_request_latency_seconds'), t);
    const m = /moetier_completion_tokens_total (\d+)/.exec(t);
    assert.ok(Number(m[1]) >= 21);
    const one = /moetier_decode_step_seconds\{rows="1"\} ([0-9.]+)/.exec(t);
    assert.ok(one && Number(one[1]) > 0 && Number(one[1]) < 60, 'no time of a one-row decode step:\n' + t);
  });
  await apiFeatureChecks(srv, ai);
  await stopServer(srv);
}

async function forcedServer() {
  const srv = await startServer([], { MOETIER_SERVE_FORCE_TEXT: FORCED });
  const ai = client(srv);
  const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object',
    properties: { city: { type: 'string' } } } } }];
  await check('tool call, not streamed: tool_calls, reasoning, finish_reason tool_calls', async () => {
    const r = await ai.chat.completions.create({ model: MODEL, messages: user('Weather in Paris?'), tools });
    const m = r.choices[0].message;
    assert.equal(r.choices[0].finish_reason, 'tool_calls');
    assert.equal(m.content, 'Let me check.');
    assert.equal(m.reasoning_content, 'Thinking it over.');
    assert.equal(m.tool_calls.length, 1);
    assert.equal(m.tool_calls[0].id, 'functions.get_weather:0');
    assert.equal(m.tool_calls[0].type, 'function');
    assert.equal(m.tool_calls[0].function.name, 'get_weather');
    assert.deepEqual(JSON.parse(m.tool_calls[0].function.arguments), { city: 'Paris' });
  });
  await check('tool call, streamed: the same content and call, no marker leaks', async () => {
    const o = await collect(await ai.chat.completions.create({ model: MODEL, messages: user('Weather?'), tools, stream: true }));
    assert.equal(o.finish, 'tool_calls');
    assert.equal(o.content, 'Let me check.');
    assert.equal(o.reasoning, 'Thinking it over.');
    assert.equal(o.calls.length, 1);
    assert.equal(o.calls[0].function.name, 'get_weather');
    assert.equal(o.calls[0].function.arguments, '{"city": "Paris"}');
  });
  await check('the tool result goes back in as a tool message', async () => {
    const r = await ai.chat.completions.create({ model: MODEL, tools, messages: [...user('Weather?'),
      { role: 'assistant', content: null, tool_calls: [{ id: 'functions.get_weather:0', type: 'function',
        function: { name: 'get_weather', arguments: '{"city": "Paris"}' } }] },
      { role: 'tool', tool_call_id: 'functions.get_weather:0', content: '18 C, sunny' }] });
    assert.equal(r.choices[0].finish_reason, 'tool_calls');
  });
  await check('stop strings cut the text and are not sent', async () => {
    const r = await ai.chat.completions.create({ model: MODEL, messages: user('x'), stop: ['check'] });
    assert.equal(r.choices[0].finish_reason, 'stop');
    assert.equal(r.choices[0].message.content, 'Let me ');
    const o = await collect(await ai.chat.completions.create({ model: MODEL, messages: user('x'), stop: ' check', stream: true }));
    assert.equal(o.content, 'Let me');
    assert.equal(o.finish, 'stop');
  });
  await check('stop strings match no reasoning or tool-call marker, nor span one', async () => {
    for (const stop of [['>'], ['think>'], ['<|tool_call'], ['.Let']]) {
      const r = await ai.chat.completions.create({ model: MODEL, messages: user('x'), tools, stop });
      const m = r.choices[0].message;
      assert.equal(m.reasoning_content, 'Thinking it over.', JSON.stringify(stop));
      assert.equal(m.content, 'Let me check.', JSON.stringify(stop));
      assert.equal(r.choices[0].finish_reason, 'tool_calls', JSON.stringify(stop));
      assert.equal(m.tool_calls.length, 1, JSON.stringify(stop));
    }
  });
  await check('load: 16 concurrent streams, 5 abort early; every finished one is right', async () => {
    const runs = [];
    for (let i = 0; i < 16; i++) {
      runs.push((async () => {
        const ctl = new AbortController();
        const s = await ai.chat.completions.create({ model: MODEL, messages: user(`Client ${i % 4}`), tools,
          stream: true }, { signal: ctl.signal });
        if (i % 3 === 1) {
          let n = 0;
          try {
            for await (const _ of s) if (++n === 2) ctl.abort();
          } catch (e) { /* the abort */ }
          return 'aborted';
        }
        const o = await collect(s);
        assert.equal(o.content, 'Let me check.');
        assert.equal(o.calls[0].function.arguments, '{"city": "Paris"}');
        assert.equal(o.finish, 'tool_calls');
        return 'ok';
      })());
    }
    const res = await Promise.all(runs);
    assert.equal(res.filter((r) => r === 'ok').length, 11);
    const h = await fetch(srv.url + '/health');
    assert.equal(h.status, 200);
    const r = await ai.chat.completions.create({ model: MODEL, messages: user('after the load'), tools });
    assert.equal(r.choices[0].finish_reason, 'tool_calls');
    const t = await (await fetch(srv.url + '/metrics')).text();
    assert.ok(/moetier_queue_depth 0/.test(t), t);
  });
  await stopServer(srv);
}

// Thinking on: the answer starts with the forced reasoning "Plan it.</think>",
// then a JSON schema or a forced call holds what follows it.
async function reasoningServer() {
  const srv = await startServer([], { MOETIER_SERVE_FORCE_PREFIX: 'Plan it.</think>' });
  const ai = client(srv);
  await check('thinking on: the reasoning runs free, then response_format holds the answer after </think>', async () => {
    const [open, close, quote, colon] = ['{', '}', '"', ':'].map(tokenId);
    const chat = { model: MODEL, messages: user('Give me JSON'), response_format: { type: 'json_object' } };
    const r = await ai.chat.completions.create({ ...chat, max_tokens: 30, temperature: 0,
      logit_bias: { [open]: 50, [close]: 50 } });
    assert.equal(r.choices[0].message.reasoning_content, 'Plan it.');
    assert.equal(r.choices[0].message.content, '{}');
    assert.equal(r.choices[0].finish_reason, 'stop');
    for (let seed = 1; seed <= 4; seed++) {
      const s = await ai.chat.completions.create({ model: MODEL, messages: user('JSON please'), max_tokens: 80,
        temperature: 1, seed, logit_bias: { [quote]: 8, [colon]: 10, [close]: 5 },
        response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'object',
          properties: { a: { enum: ['x', 'y'] } }, required: ['a'], additionalProperties: false } } } });
      const c = s.choices[0];
      assert.equal(c.message.reasoning_content, 'Plan it.');
      assert.equal(c.finish_reason, 'stop', `seed ${seed}: ${JSON.stringify(c.message.content)}`);
      assert.ok(['x', 'y'].includes(JSON.parse(c.message.content).a), c.message.content);
    }
  });
  await check('thinking on: the reasoning runs free, then guided_choice holds the answer after </think>', async () => {
    for (let seed = 1; seed <= 3; seed++) {
      const c = (await ai.chat.completions.create({ model: MODEL, messages: user('Pick'), max_tokens: 30,
        temperature: 1, seed, guided_choice: ['red', 'green'] })).choices[0];
      assert.equal(c.message.reasoning_content, 'Plan it.');
      assert.ok(['red', 'green'].includes(c.message.content), JSON.stringify(c.message.content));
    }
  });
  await check('thinking on: a named tool_choice is the call after the reasoning', async () => {
    const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object',
      properties: { city: { enum: ['Paris', 'Rome'] } }, required: ['city'], additionalProperties: false } } }];
    const r = await ai.chat.completions.create({ model: MODEL, messages: user('Weather?'), max_tokens: 200,
      temperature: 1, seed: 2, tools, tool_choice: { type: 'function', function: { name: 'get_weather' } } });
    const c = r.choices[0];
    assert.equal(c.finish_reason, 'tool_calls', JSON.stringify(c));
    assert.equal(c.message.reasoning_content, 'Plan it.');
    assert.equal(c.message.tool_calls[0].function.name, 'get_weather');
    assert.ok(['Paris', 'Rome'].includes(JSON.parse(c.message.tool_calls[0].function.arguments).city));
  });
  await stopServer(srv);
}

// tool_choice auto: every answer is forced to begin a call ("Plan it", then
// the section's first marker; with thinking on "Plan it" is the reasoning,
// which the section ends). What the random-weight model writes after it is
// held to Kimi's call format and the parameters, unless --free-tool-calls.
async function autoCallServers() {
  const env = { MOETIER_SERVE_FORCE_PREFIX: 'Plan it<|tool_calls_section_begin|>' };
  const held = await startServer([], env), free = await startServer(['--free-tool-calls'], env);
  const tools = [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object',
    properties: { city: { enum: ['Paris', 'Rome'] }, days: { type: 'integer' } }, required: ['city'],
    additionalProperties: false } } },
  { type: 'function', function: { name: 'get_time', parameters: { type: 'object',
    properties: { utc: { type: 'boolean' } }, required: ['utc'], additionalProperties: false } } }];
  // one call earlier in the conversation: Kimi numbers this answer's calls from 1
  const messages = [...user('Weather in Paris?'),
    { role: 'assistant', content: '', tool_calls: [{ id: 'functions.get_weather:0', type: 'function',
      function: { name: 'get_weather', arguments: '{"city": "Paris"}' } }] },
    { role: 'tool', tool_call_id: 'functions.get_weather:0', content: 'sunny' }, ...user('And Rome?')];
  const req = (seed, thinking) => ({ model: MODEL, messages, tools, max_tokens: 240, temperature: 1, seed, thinking });
  const valid = (call, k) => {
    assert.match(call.id, new RegExp(`^functions\\.${call.function.name}:${k}$`));
    const args = JSON.parse(call.function.arguments);
    if (call.function.name === 'get_time') return assert.equal(typeof args.utc, 'boolean', call.function.arguments);
    assert.equal(call.function.name, 'get_weather');
    assert.ok(['Paris', 'Rome'].includes(args.city), call.function.arguments);
    assert.ok(Object.keys(args).every((key) => key === 'city' || key === 'days'), call.function.arguments);
  };
  await check('tool_choice auto: a call the model begins is held to the format and the parameters, numbered after the conversation\'s', async () => {
    for (let seed = 1; seed <= 4; seed++) {
      const c = (await client(held).chat.completions.create(req(seed, false))).choices[0];
      assert.equal(c.finish_reason, 'tool_calls', `seed ${seed}: ${JSON.stringify(c)}`);
      assert.equal(c.message.content, 'Plan it');
      c.message.tool_calls.forEach((call, i) => valid(call, i + 1));
    }
  });
  await check('tool_choice auto, thinking on: a section ends the reasoning; its calls are held and streamed', async () => {
    const r = await client(held).chat.completions.create(req(5, true));
    const c = r.choices[0];
    assert.equal(c.finish_reason, 'tool_calls', JSON.stringify(c));
    assert.equal(c.message.reasoning_content, 'Plan it');
    const plan = await (await fetch(held.url + '/tokenize', { method: 'POST', body: JSON.stringify({ content: 'Plan it' }) })).json();
    assert.equal(r.usage.completion_tokens_details.reasoning_tokens, plan.count, 'the section is not reasoning');
    c.message.tool_calls.forEach((call, i) => valid(call, i + 1));
    const s = await collect(await client(held).chat.completions.create({ ...req(5, true), stream: true }));
    assert.equal(s.reasoning, 'Plan it');
    assert.deepEqual(s.calls.map((t) => [t.id, t.function.arguments]), c.message.tool_calls.map((t) => [t.id, t.function.arguments]));
  });
  await check('--free-tool-calls: the same answers are what the model writes, not calls the tools take', async () => {
    let whole = 0;
    for (let seed = 1; seed <= 4; seed++) {
      const c = (await client(free).chat.completions.create(req(seed, false))).choices[0];
      try {
        c.message.tool_calls.forEach((call, i) => valid(call, i + 1));
        whole += c.finish_reason === 'tool_calls' && c.message.tool_calls.length > 0;
      } catch { /* not a call the tools take */ }
    }
    assert.equal(whole, 0, 'a random-weight model wrote a whole valid call by itself');
  });
  await stopServer(held);
  await stopServer(free);
}

// llama.cpp's limits for code completion, on a forced answer: 40 words, then
// lines indented by 4, 8, a tab, 2 and 0
const CODE_WORDS = 'word '.repeat(40);
const CODE = CODE_WORDS + '\n    def f(x):\n        if x:\n\treturn 1\n  y = 2\nprint(f(1))\n';
async function codeServer() {
  const srv = await startServer(['--no-think'], { MOETIER_SERVE_FORCE_PREFIX: CODE });
  const native = async (body) => {
    const r = await fetch(srv.url + '/completion', { method: 'POST', body: JSON.stringify(body) });
    const text = await r.text();
    assert.equal(r.status, 200, text);
    return JSON.parse(text);
  };
  await check('n_indent: a line indented less ends the answer before its text (llama.cpp\'s rule)', async () => {
    const cases = [[4, CODE.slice(0, CODE.indexOf('\treturn') + 1)],
                   [2, CODE.slice(0, CODE.indexOf('\treturn') + 1)],
                   [1, CODE.slice(0, CODE.indexOf('print'))]];
    for (const [n_indent, want] of cases) {
      const o = await native({ prompt: 'code:', n_predict: 200, n_indent, ignore_eos: true });
      assert.equal(o.content, want, `n_indent ${n_indent}`);
      assert.equal(o.stop_type, 'limit');
      // streamed, the same text; and the OpenAI route takes it too
      const r = await fetch(srv.url + '/completion', { method: 'POST',
        body: JSON.stringify({ prompt: 'code:', n_predict: 200, n_indent, ignore_eos: true, stream: true }) });
      const events = (await r.text()).split('\n').filter((l) => l.startsWith('data: ')).map((l) => JSON.parse(l.slice(6)));
      assert.equal(events.map((e) => e.content).join(''), want);
      const v1 = await (await fetch(srv.url + '/v1/completions', { method: 'POST',
        body: JSON.stringify({ prompt: 'code:', max_tokens: 200, n_indent, ignore_eos: true }) })).json();
      assert.equal(v1.choices[0].text, want);
      assert.equal(v1.choices[0].finish_reason, 'length');
    }
    const o = await native({ prompt: 'code:', n_predict: 30, ignore_eos: true });
    assert.ok(CODE.startsWith(o.content) && o.tokens_predicted === 30, 'without n_indent the forced text runs on');
  });
  await check('t_max_predict_ms: the answer ends at the time limit only once it holds a line break', async () => {
    const o = await native({ prompt: 'code:', n_predict: 2000, t_max_predict_ms: 1, ignore_eos: true });
    assert.equal(o.stop_type, 'limit');
    assert.ok(o.content.startsWith(CODE_WORDS), 'the 40 words before the line break are not cut (' +
      JSON.stringify(o.content) + ')');
    // (more than 1 ms passed before the line break: the token holding it ends the answer)
    assert.ok(o.content.includes('\n') && o.content.length < CODE_WORDS.length + 20, JSON.stringify(o.content));
    const slow = await native({ prompt: 'code:', n_predict: 60, t_max_predict_ms: 600000, ignore_eos: true });
    assert.equal(slow.tokens_predicted, 60, 'a limit not reached leaves n_predict');
  });
  await stopServer(srv);
}

async function guardedServer() {
  const srv = await startServer(['--api-key', 'sesame', '--max-queue', '1', '--no-think'],
    { MOETIER_SERVE_FORCE_TEXT: 'word '.repeat(400) });
  await check('--api-key: 401 without or with a wrong key, 200 with it; /health stays open', async () => {
    await expectStatus(client(srv, 'wrong').models.list(), 401);
    const r = await fetch(srv.url + '/v1/models');
    assert.equal(r.status, 401);
    assert.equal((await fetch(srv.url + '/health')).status, 200);
    const list = await client(srv, 'sesame').models.list();
    assert.equal(list.data[0].id, MODEL);
    const r2 = await fetch(srv.url + '/v1/models', { headers: { authorization: 'bearer sesame' } });
    assert.equal(r2.status, 200, 'the scheme name is case-insensitive');
  });
  await check('another web page\'s requests and a name rebound to this machine are refused; --allowed-origin pages get CORS', async () => {
    // (node:http, so that Host and Origin are what the test says)
    const raw = (srv2, method, path, headers, body) => new Promise((resolve, reject) => {
      const u = new URL(srv2.url);
      const q = httpRequest({ host: u.hostname, port: u.port, method, path, headers }, (res) => {
        let text = '';
        res.on('data', (d) => { text += d; });
        res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, text }));
      });
      q.on('error', reject);
      q.end(body);
    });
    const body = JSON.stringify({ model: MODEL, messages: user('hi'), max_tokens: 1 });
    const auth = { authorization: 'Bearer sesame', 'content-type': 'text/plain' };
    const host = new URL(srv.url).host;
    let r = await raw(srv, 'POST', '/v1/chat/completions', { ...auth, origin: 'http://evil.example' }, body);
    assert.equal(r.status, 403, r.text);
    assert.match(JSON.parse(r.text).error.message, /--allowed-origin/);
    r = await raw(srv, 'POST', '/v1/chat/completions', { ...auth, host: 'rebind.example:' + new URL(srv.url).port,
      origin: 'http://rebind.example:' + new URL(srv.url).port }, body);
    assert.equal(r.status, 403, r.text);
    assert.match(JSON.parse(r.text).error.message, /--allowed-host/);
    r = await raw(srv, 'POST', '/v1/chat/completions', { ...auth, origin: 'http://' + host }, body);
    assert.equal(r.status, 200, 'the server\'s own page: ' + r.text);
    assert.equal(r.headers['access-control-allow-origin'], undefined);
    const open = await startServer(['--allowed-origin', 'http://app.example']);
    try {
      // (the SDKs' own headers too: x-stainless-*, Anthropic's browser switch)
      const asked = 'authorization,content-type,x-stainless-lang,anthropic-dangerous-direct-browser-access';
      r = await raw(open, 'OPTIONS', '/v1/chat/completions', { origin: 'http://app.example',
        'access-control-request-method': 'POST', 'access-control-request-headers': asked });
      assert.equal(r.status, 204, r.text);
      assert.equal(r.headers['access-control-allow-origin'], 'http://app.example');
      assert.equal(r.headers['access-control-allow-headers'], asked);
      r = await raw(open, 'POST', '/v1/chat/completions', { 'content-type': 'application/json',
        origin: 'http://app.example' }, body);
      assert.equal(r.status, 200, r.text);
      assert.equal(r.headers['access-control-allow-origin'], 'http://app.example');
      r = await raw(open, 'POST', '/v1/chat/completions', { 'content-type': 'application/json',
        origin: 'http://other.example' }, body);
      assert.equal(r.status, 403, r.text);
    } finally {
      await stopServer(open);
    }
  });
  await check('--api-key-file: any key it lists, and --api-key\'s, is taken; others are not', async () => {
    const dir = mkdtempSync(join(process.env.MOETIER_TMP || tmpdir(), 'keys-'));
    const file = join(dir, 'keys.txt');
    writeFileSync(file, '# team\nalpha-1\n  beta-22  \n');
    const keyed = await startServer(['--api-key', 'sesame', '--api-key-file', file]);
    try {
      for (const key of ['alpha-1', 'beta-22', 'sesame'])
        assert.equal((await client(keyed, key).models.list()).data[0].id, MODEL, key);
      await expectStatus(client(keyed, 'gamma').models.list(), 401);
      await expectStatus(client(keyed, '# team').models.list(), 401);
    } finally {
      await stopServer(keyed);
    }
    writeFileSync(file, '# none\n');
    const refused = spawnSync(bin, ['serve', '-m', modelDir, '--api-key-file', file], { encoding: 'utf8' });
    assert.equal(refused.status, 2, refused.stderr);
    assert.match(refused.stderr, /keys\.txt: no key in it/);
    rmSync(dir, { recursive: true, force: true });
  });
  await check('a full queue answers 503; a client that leaves frees its slot', async () => {
    const ai = client(srv, 'sesame');
    const ctl = new AbortController();
    const s = await ai.chat.completions.create({ model: MODEL, messages: user('long'), stream: true, max_tokens: 400 },
      { signal: ctl.signal });
    const it = s[Symbol.asyncIterator]();
    await it.next();
    await expectStatus(ai.chat.completions.create({ model: MODEL, messages: user('x'), max_tokens: 2 }), 503);
    ctl.abort();
    try { await it.next(); } catch (e) { /* the abort */ }
    // the slot frees at the engine's next token
    let r = null;
    for (let k = 0; k < 100 && !r; k++) {
      try {
        r = await ai.chat.completions.create({ model: MODEL, messages: user('x'), max_tokens: 2 });
      } catch (e) {
        if (e.status !== 503) throw e;
        await new Promise((res) => setTimeout(res, 100));
      }
    }
    assert.ok(r, 'the slot was not freed');
    const text = r.choices[0].message.content;
    assert.ok(text.length > 0 && 'word '.repeat(400).startsWith(text), text);
    const t = await (await fetch(srv.url + '/metrics', { headers: { authorization: 'Bearer sesame' } })).text();
    assert.ok(/moetier_requests_cancelled_total [1-9]/.test(t), t);
  });
  await stopServer(srv);
}

// Long prefills (one token per step: seconds of work) that end early. A client that
// leaves stops its prefill within a chunk, and the chunks done stay cached. SIGTERM:
// the running stream ends with an error event, the queued request gets a 503, the
// server exits 0.
async function stoppingServer() {
  const srv = await startServer(['--chunk', '1', '-c', '8192']);
  await check('a client that leaves mid-prefill stops it; the chunks done stay cached', async () => {
    const words = Array.from({ length: 1800 }, (_, i) => `d${i}`);
    const post = (prompt, stream, signal) => fetch(srv.url + '/v1/completions', { method: 'POST', signal,
      headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt, max_tokens: 1, stream }) });
    const cancelled = async () =>
      Number(/moetier_requests_cancelled_total (\d+)/.exec(await (await fetch(srv.url + '/metrics')).text())[1]);
    const before = await cancelled();
    const ctl = new AbortController();
    const left = await post(words.join(' '), true, ctl.signal);   // headers come as the prefill starts
    assert.equal(left.status, 200);
    await new Promise((res) => setTimeout(res, 50));
    ctl.abort();
    let now = before;
    for (let k = 0; k < 600 && now === before; k++) {
      await new Promise((res) => setTimeout(res, 50));
      now = await cancelled();
    }
    assert.equal(now, before + 1, 'the request that left was not counted as cancelled');
    // The first half of the same prompt: a prefill that ran to the end would give it
    // all its tokens but the last from the cache; one stopped within ~0.1 s, a few
    // hundred of its ~3,500.
    const half = await (await post(words.slice(0, 900).join(' '), false)).json();
    const n = half.usage.prompt_tokens, cached = half.usage.prompt_tokens_details.cached_tokens;
    assert.ok(cached > 0 && cached < n / 2, `${cached} of ${n} prompt tokens came from the cache`);
  });
  await check('a client that leaves a batch stops all its prompts', async () => {
    const prompt = (k) => Array.from({ length: 1200 }, (_, i) => `b${k}x${i}`).join(' ');
    const cancelled = async () =>
      Number(/moetier_requests_cancelled_total (\d+)/.exec(await (await fetch(srv.url + '/metrics')).text())[1]);
    const before = await cancelled();
    const ctl = new AbortController();
    const left = fetch(srv.url + '/v1/completions', { method: 'POST', signal: ctl.signal,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ prompt: [prompt(0), prompt(1), prompt(2)], max_tokens: 1 }) }).catch(() => null);
    await new Promise((res) => setTimeout(res, 300));
    ctl.abort();
    await left;
    let now = before;
    for (let k = 0; k < 600 && now < before + 3; k++) {
      await new Promise((res) => setTimeout(res, 50));
      now = await cancelled();
    }
    assert.equal(now, before + 3, 'the batch\'s three prompts were not all cancelled');
  });
  await check('SIGTERM mid-prefill: the stream gets an error event, the queue a 503, exit 0', async () => {
    const prompt = Array.from({ length: 1500 }, (_, i) => `w${i}`).join(' ');
    const post = (stream) => fetch(srv.url + '/v1/completions', { method: 'POST',
      headers: { 'content-type': 'application/json' }, body: JSON.stringify({ prompt, max_tokens: 1, stream }) });
    const running = await post(true);
    assert.equal(running.status, 200);
    const queued = post(false);
    let depth = '';
    for (let k = 0; k < 200 && depth !== '2'; k++) {
      depth = /moetier_queue_depth (\d+)/.exec(await (await fetch(srv.url + '/metrics')).text())[1];
      if (depth !== '2') await new Promise((res) => setTimeout(res, 20));
    }
    assert.equal(depth, '2', 'the second request was not queued');
    srv.child.kill('SIGTERM');
    srv.signalled = true;   // a second SIGTERM would end it at once
    const events = await running.text();
    assert.ok(events.includes('"the server is shutting down"'), events);
    assert.ok(!events.includes('[DONE]'), events);
    const q = await queued;
    assert.equal(q.status, 503);
    assert.equal((await q.json()).error.message, 'the server is shutting down');
    const st = await srv.done;
    servers.delete(srv);
    assert.equal(st.code, 0, `server exit ${JSON.stringify(st)}; its log:\n${srv.log.slice(-4000)}`);
    assert.ok(srv.log.includes('SIGTERM, stopping'), srv.log);
  });
  if (servers.has(srv)) await stopServer(srv);
}

// One request prefilling for seconds (a token per step), one queued, --max-queue 2:
// the queue is full. Requests are checked before they queue, so a bad one gets its
// 400 at once rather than a 503 or a wait; a queued client that leaves frees its
// place at once, not when the engine reaches it.
// return_progress (llama.cpp's): a streamed answer hears how far its prompt
// is after each chunk; the answer is the one given without it.
async function progressServer() {
  await check('return_progress: prompt_progress after each prompt chunk (chat, completions, /completion), the answer unchanged', async () => {
    // (--batch-invariant: the same prompt again, found in the cache, answers with the same bits)
    const srv = await startServer(['--no-think', '--batch-invariant', '--chunk', '64', '-c', '4096']);
    try {
      const words = Array.from({ length: 300 }, (_, i) => `w${i}`).join(' ');
      const raw = async (path, body) => {
        const res = await fetch(srv.url + path, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
        assert.equal(res.status, 200, await res.clone().text());
        return (await res.text()).split('\n\n').filter((e) => e.startsWith('data: {')).map((e) => JSON.parse(e.slice(6)));
      };
      const steady = (events, total) => {
        const p = events.filter((e) => e.prompt_progress).map((e) => e.prompt_progress);
        assert.ok(p.length >= Math.floor(total / 64), `${p.length} progress events for ${total} tokens`);
        for (let k = 0; k < p.length; k++) {
          assert.equal(p[k].total, total);
          assert.ok(p[k].processed > (k ? p[k - 1].processed : p[k].cache) && p[k].time_ms >= (k ? p[k - 1].time_ms : 0), JSON.stringify(p));
        }
        assert.equal(p.at(-1).processed, total);
        assert.ok(events.findIndex((e) => e.prompt_progress) < events.findIndex((e) => !e.prompt_progress && (e.content || e.choices?.[0]?.delta?.content || e.choices?.[0]?.text)));
        return p;
      };
      const chat = { messages: user(`Summarize: ${words}`), max_tokens: 5, temperature: 0, stream: true, stream_options: { include_usage: true } };
      const told = await raw('/v1/chat/completions', { ...chat, return_progress: true });
      const plain = await raw('/v1/chat/completions', chat);
      assert.ok(!plain.some((e) => e.prompt_progress), 'progress sent unasked');
      const total = told.at(-1).usage.prompt_tokens, cached = told.at(-1).usage.prompt_tokens_details.cached_tokens;
      const p = steady(told, total);
      assert.equal(p[0].cache, cached, 'the cache count is the prompt the server reused');
      const text = (evs) => evs.filter((e) => !e.prompt_progress).map((e) => (e.choices[0]?.delta?.content ?? '') + (e.choices[0]?.delta?.reasoning_content ?? '')).join('');
      assert.equal(text(told), text(plain));
      assert.equal(told.filter((e) => e.choices[0]?.delta?.role === 'assistant').length, 1, 'one role, on the first event');
      assert.equal(told[0].choices[0].delta.role, 'assistant');
      // a new prompt (nothing cached) through completions, then llama.cpp's route
      const comp = await raw('/v1/completions', { prompt: `${words} again`, max_tokens: 3, temperature: 0, stream: true, return_progress: true });
      steady(comp, (await (await fetch(srv.url + '/tokenize', { method: 'POST', body: JSON.stringify({ content: `${words} again` }) })).json()).tokens.length);
      const native = await raw('/completion', { prompt: `Once more: ${words}`, n_predict: 3, temperature: 0, stream: true, return_progress: true });
      steady(native, native.at(-1).tokens_evaluated);
      // not streamed: nothing changes; a value not a boolean: refused naming it
      const whole = await client(srv).chat.completions.create({ ...chat, stream: false, stream_options: undefined, return_progress: true });
      assert.equal(whole.object, 'chat.completion');
      const bad = await fetch(srv.url + '/v1/chat/completions', { method: 'POST', headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ ...chat, return_progress: 'yes' }) });
      assert.equal(bad.status, 400);
      assert.match((await bad.json()).error.message, /return_progress/);
    } finally {
      await stopServer(srv);
    }
  });
}

async function queueServer() {
  const srv = await startServer(['--chunk', '1', '-c', '8192', '--max-queue', '2']);
  await check('a full queue: a bad request gets its 400; a queued client that leaves frees its place at once', async () => {
    const post = (path, body, signal) => fetch(srv.url + path, { method: 'POST', signal,
      headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const depth = async () => /moetier_queue_depth (\d+)/.exec(await (await fetch(srv.url + '/metrics')).text())[1];
    const ctlRun = new AbortController(), ctlQueued = new AbortController();
    const words = Array.from({ length: 1800 }, (_, i) => `d${i}`).join(' ');
    const running = await post('/v1/completions', { prompt: words, max_tokens: 1, stream: true }, ctlRun.signal);
    assert.equal(running.status, 200);
    let runningDone = false;
    running.text().then(() => { runningDone = true; }, () => { runningDone = true; });
    const queued = post('/v1/completions', { prompt: 'hi', max_tokens: 1 }, ctlQueued.signal).catch(() => null);
    let d = '';
    for (let k = 0; k < 200 && d !== '2'; k++) {
      d = await depth();
      if (d !== '2') await new Promise((res) => setTimeout(res, 20));
    }
    assert.equal(d, '2', 'the second request was not queued');
    let r = await post('/v1/chat/completions', { messages: [{ role: 'user', content: 123 }] });
    assert.equal(r.status, 400, 'a malformed message is the request\'s fault, not the queue\'s');
    r = await post('/v1/completions', { prompt: 'a\u0000b', max_tokens: 1 });
    assert.equal(r.status, 400);
    assert.ok((await r.json()).error.message.includes('NUL'), 'a NUL must be refused, not cut the prompt');
    r = await post('/v1/completions', { prompt: 'x', max_tokens: 1 });
    assert.equal(r.status, 503, 'a good request finds the queue full');
    ctlQueued.abort();
    await queued;
    for (let k = 0; k < 100 && d !== '1'; k++) {
      await new Promise((res) => setTimeout(res, 20));
      d = await depth();
    }
    assert.equal(d, '1', 'the place of the client that left was not freed');
    assert.ok(!runningDone, 'the running request ended first: this check could not tell');
    r = await post('/v1/completions', { prompt: 'x', max_tokens: 1 }, AbortSignal.timeout(100)).catch((e) => e);
    assert.ok(!(r instanceof Response) || r.status !== 503, 'the freed place was not given to the next request');
    ctlRun.abort();
  });
  await check('--model-name longer than 255 bytes is refused (a cut name would never match)', async () => {
    const e = await startServer(['--model-name', 'm'.repeat(300)]).then(async (s) => { await stopServer(s); return null; }, (x) => x);
    assert.ok(e && /--model-name must be 1 to 255 bytes/.test(String(e)), String(e));
  });
  await stopServer(srv);
}

// --prompt-cache-dir: a conversation cut before a stop comes back from the
// directory after a restart, answering as a server without a prompt cache
// does; files not the cache's are left alone.
async function restartedServer() {
  const dir = mkdtempSync(join(process.env.MOETIER_TMP || tmpdir(), 'prompt-cache-dir-'));
  writeFileSync(join(dir, 'notes.txt'), 'mine\n');
  const story = (topic) => `Tell me everything about ${topic}, from its history to its future, ` +
    'with examples from three continents and the numbers that matter most.';
  const a = user(story('salt')), b = user(story('rope'));
  const ask = (ai, messages, n) => ai.chat.completions.create({ model: MODEL, messages, max_tokens: n, temperature: 0 });
  const args = ['--no-think', '--prompt-cache-dir', dir];
  try {
    await check('--prompt-cache-dir: conversations written at a stop come back after a restart', async () => {
      let srv = await startServer(args);
      assert.match(srv.log, /0 conversations \(0 tokens\) read from/);
      const second = await startServer(args).then(async (x) => { await stopServer(x); return null; }, (x) => x);
      assert.ok(second && /is in use by another server of this model \(process \d+/.test(String(second)), String(second));
      const first = await ask(client(srv), a, 3);
      await ask(client(srv), b, 3);                   // a is saved when b cuts it
      await stopServer(srv);
      // written while idle or at the stop
      assert.match(srv.log, /2 conversations in .* \([12] written, 0 removed\)/, srv.log);
      assert.equal(readdirSync(dir).filter((f) => f.endsWith('.mtprompt')).length, 2);
      srv = await startServer(args);
      let next;
      try {
        assert.match(srv.log, /2 conversations \(\d+ tokens\) read from/, srv.log);
        next = [...a, { role: 'assistant', content: first.choices[0].message.content }, ...user('Go on.')];
        const r = await ask(client(srv), next, 4);
        assert.ok(r.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens - 1, JSON.stringify(r.usage));
        const off = await startServer(['--no-think', '--prompt-cache-gb', '0']);
        try {
          const o = await ask(client(off), next, 4);
          assert.equal(r.choices[0].message.content, o.choices[0].message.content, 'the restored conversation answers otherwise');
        } finally {
          await stopServer(off);
        }
      } finally {
        await stopServer(srv);
      }
      // a's longer conversation replaced its file
      assert.match(srv.log, /2 conversations in .* \(1 written, 1 removed\)/, srv.log);
      assert.ok(existsSync(join(dir, 'notes.txt')), 'a file not the cache\'s was removed');
    });
    await check('--prompt-cache-dir: a conversation saved while idle survives a crash (SIGKILL)', async () => {
      rmSync(dir, { recursive: true, force: true });
      let srv = await startServer(args);
      const c = user(story('iron')), d = user(story('wool'));
      const first = await ask(client(srv), c, 3);
      await ask(client(srv), d, 3);                   // c is saved when d cuts it, written while idle
      const files = () => readdirSync(dir).filter((f) => f.endsWith('.mtprompt'));
      for (let i = 0; i < 100 && files().length < 1; i++) await new Promise((r) => setTimeout(r, 100));
      assert.equal(files().length, 1, 'nothing written while idle');
      srv.child.kill('SIGKILL');
      await srv.done;
      servers.delete(srv);
      srv = await startServer(args);
      try {
        assert.match(srv.log, /1 conversation \(\d+ tokens\) read from/, srv.log);
        const next = [...c, { role: 'assistant', content: first.choices[0].message.content }, ...user('More.')];
        const r = await ask(client(srv), next, 2);
        assert.ok(r.usage.prompt_tokens_details.cached_tokens >= first.usage.prompt_tokens - 1, JSON.stringify(r.usage));
      } finally {
        await stopServer(srv);
      }
    });
    await check('--prompt-cache-dir with --prompt-cache-gb 0 is refused', async () => {
      const e = await startServer([...args, '--prompt-cache-gb', '0']).then(async (s) => { await stopServer(s); return null; }, (x) => x);
      assert.ok(e && /--prompt-cache-gb 0 turns off/.test(String(e)), String(e));
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// --parallel: requests run at once in slots, their tokens stepped together;
// each answer is the one the request gets alone (the CPU kernels give a row the
// same bits in a step of any size), a conversation's next turn goes back to its
// slot, and every slot's conversation is kept at a stop.
// --batch-invariant: the same request again, its prompt found in the prompt
// cache but for the last token, answers with the same log-probabilities to the
// bit (printed in full) as when the whole prompt was prefilled in one step.
async function invariantServer() {
  await check('--batch-invariant: a prompt found in the cache answers with the bits of it prefilled whole', async () => {
    const srv = await startServer(['--no-think', '--batch-invariant']);
    try {
      const ai = client(srv);
      const req = { model: MODEL, messages: user('Tell me about the history of salt in trade, with numbers and the places it went.'),
        max_tokens: 8, temperature: 0, logprobs: true, top_logprobs: 3 };
      const cold = await ai.chat.completions.create(req);
      const warm = await ai.chat.completions.create(req);
      assert.ok(cold.usage.prompt_tokens >= 20, JSON.stringify(cold.usage));
      assert.ok(warm.usage.prompt_tokens_details.cached_tokens >= cold.usage.prompt_tokens - 1, JSON.stringify(warm.usage));
      assert.deepEqual(warm.choices[0].logprobs, cold.choices[0].logprobs);
    } finally {
      await stopServer(srv);
    }
  });
  await check('--batch-invariant with --backend cuda: refused with the reason', async () => {
    const e = await startServer(['--batch-invariant', '--backend', 'cuda']).then(async (s) => { await stopServer(s); return null; }, (x) => x);
    assert.ok(e && /--batch-invariant runs on the CPU backend/.test(e.message), String(e));
  });
}

// --seed, and the other sampling options given to serve: the requests naming
// none take the server's, as llama.cpp's do.
async function seededServer() {
  await check('serve --seed and --frequency-penalty: defaults of the requests naming none; --seed -1 and /completion\'s seed -1 a fresh seed', async () => {
    let srv = await startServer(['--no-think', '--seed', '7', '--frequency-penalty', '-2']);
    try {
      const ai = client(srv);
      const req = { model: MODEL, prompt: 'one two three', max_tokens: 16, temperature: 2, ignore_eos: true };
      const text = async (extra) => (await ai.completions.create({ ...req, ...extra })).choices[0].text;
      const plain = await text({});
      assert.equal(await text({}), plain);
      assert.equal(await text({ seed: 7 }), plain);
      assert.notEqual(await text({ seed: 8 }), plain, 'another seed draws another answer');
      const native = async (seed) => (await (await fetch(srv.url + '/completion', { method: 'POST',
        body: JSON.stringify({ prompt: 'one two three', n_predict: 16, temperature: 2, ignore_eos: true, seed }) })).json()).content;
      assert.equal(await native(undefined), plain);
      assert.notEqual(await native(-1), await native(-1), 'seed -1: a fresh seed each request');
      // --frequency-penalty too (the request's 0 was taken for one it named)
      const greedy = { ...req, temperature: 0 };
      const byDefault = (await ai.completions.create(greedy)).choices[0].text;
      assert.equal((await ai.completions.create({ ...greedy, frequency_penalty: -2 })).choices[0].text, byDefault);
      assert.notEqual((await ai.completions.create({ ...greedy, frequency_penalty: 0 })).choices[0].text, byDefault);
    } finally {
      await stopServer(srv);
    }
    srv = await startServer(['--no-think', '--seed', '-1']);    // llama.cpp's "a fresh seed each request"
    try {
      const ai = client(srv);
      const req = { model: MODEL, prompt: 'one two three', max_tokens: 16, temperature: 2, ignore_eos: true };
      assert.notEqual((await ai.completions.create(req)).choices[0].text, (await ai.completions.create(req)).choices[0].text);
    } finally {
      await stopServer(srv);
    }
  });
}

// Writes a NaN into element `index` of the BF16 tensor `name` of the model in dir.
function pokeNaN(dir, name, index) {
  const path = join(dir, JSON.parse(readFileSync(join(dir, 'model.safetensors.index.json'), 'utf8')).weight_map[name]);
  const buf = readFileSync(path);
  const headerLength = Number(buf.readBigUInt64LE(0));
  const t = JSON.parse(buf.subarray(8, 8 + headerLength).toString())[name];
  assert.equal(t.dtype, 'BF16', name);
  buf.writeUInt16LE(0x7fc0, 8 + headerLength + t.data_offsets[0] + 2 * index);
  writeFileSync(path, buf);
}

// A NaN one request's token meets (here in a damaged embedding row) fails that
// request alone: another one stepped with it goes on as it would alone.
async function nanServer() {
  await check('a NaN one request meets fails that request; another stepped with it answers as alone', async () => {
    const dir = mkdtempSync(join(process.env.MOETIER_TMP || tmpdir(), 'nan-'));
    try {
      cpSync(modelDir, dir, { recursive: true });
      const b = { prompt: 'one two three four', n_predict: 120, temperature: 0, ignore_eos: true };
      const native = (srv, body) => fetch(srv.url + '/completion', { method: 'POST', body: JSON.stringify(body) });
      let srv = await startServer(['-m', dir, '--parallel', '2']);
      let alone, seen;
      try {
        alone = await (await native(srv, { ...b, return_tokens: true })).json();
        const prompt = (await (await fetch(srv.url + '/tokenize', { method: 'POST',
          body: JSON.stringify({ content: b.prompt }) })).json()).tokens;
        seen = new Set([...prompt, ...alone.tokens]);
      } finally {
        await stopServer(srv);
      }
      let X = 300;      // an ordinary token (the added ones are above 999) the other request never meets
      while (seen.has(X)) X++;
      const hidden = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')).hidden_size;
      pokeNaN(dir, 'model.embed_tokens.weight', X * hidden + 1);
      srv = await startServer(['-m', dir, '--parallel', '2']);
      try {
        const other = await native(srv, { ...b, stream: true });
        const reader = other.body.getReader(), dec = new TextDecoder();
        let text = dec.decode((await reader.read()).value, { stream: true });
        // once the other request generates, one whose first token is X
        const a = await fetch(srv.url + '/v1/completions', { method: 'POST', headers: { 'content-type': 'application/json' },
          body: JSON.stringify({ model: MODEL, prompt: 'hello', max_tokens: 3, temperature: 0, logit_bias: { [X]: 100 } }) });
        const failed = await a.json();
        assert.equal(a.status, 500, JSON.stringify(failed));
        assert.match(failed.error.message, /the logits at position \d+ are NaN/);
        // the other one generated before the failing request came and after it
        // ended: every step of the failing one stepped it too
        const slots = await (await fetch(srv.url + '/slots')).json();
        assert.ok(slots.some((x) => x.state === 'generating'), JSON.stringify(slots));
        for (let r = await reader.read(); !r.done; r = await reader.read())
          text += dec.decode(r.value, { stream: true });
        const events = text.split('\n\n').filter((e) => e.startsWith('data: ')).map((e) => JSON.parse(e.slice(6)));
        const last = events.at(-1);
        assert.equal(last.stop, true, text.slice(-500));
        assert.equal(last.tokens_predicted, 120);
        assert.equal(events.map((e) => e.content).join(''), alone.content);
      } finally {
        await stopServer(srv);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
}

// --profile: /metrics gives the engine's time and reads by phase and part of
// the model, and they grow with the requests served.
async function profiledServer() {
  await check('--profile: /metrics counts the time and bytes of each part, prefill and decode', async () => {
    const srv = await startServer(['--no-think', '--profile']);
    try {
      const ai = client(srv);
      const profile = async () => {
        const text = await (await fetch(srv.url + '/metrics')).text();
        const v = {};
        for (const m of text.matchAll(/^moetier_profile_(seconds|bytes)_total\{phase="(\w+)",part="([^"]+)"\} (\S+)$/gm))
          v[`${m[1]} ${m[2]} ${m[3]}`] = Number(m[4]);
        return v;
      };
      await ai.chat.completions.create({ model: MODEL, messages: user('Count to five.'), max_tokens: 6, temperature: 0 });
      const first = await profile();
      for (const phase of ['prefill', 'decode']) {
        assert.ok(first[`seconds ${phase} routed experts`] > 0, JSON.stringify(first));
        assert.ok(first[`bytes ${phase} lm_head`] > 0, JSON.stringify(first));
      }
      await ai.chat.completions.create({ model: MODEL, messages: user('Name three colours.'), max_tokens: 6, temperature: 0 });
      const second = await profile();
      assert.ok(second['bytes decode lm_head'] > first['bytes decode lm_head'], JSON.stringify(second));
    } finally {
      await stopServer(srv);
    }
  });
}

async function draftServer() {
  await check('--draft-lookup 3: the same answers and log-probabilities as without it (greedy, sampled, streamed, n: 2), guesses kept', async () => {
    const reqs = [
      { temperature: 0 },
      { temperature: 0.3, seed: 4 },
      { temperature: 0, stream: true },
      { temperature: 0.3, seed: 9, n: 2 },
    ].map((r) => ({ model: MODEL, prompt: 'one two three four one two three four one two three', max_tokens: 120, logprobs: 2, ...r }));
    const answers = async (srv) => {
      const ai = client(srv);
      const out = [];
      for (const req of reqs) {
        if (!req.stream) {
          const r = await ai.completions.create(req);
          out.push(r.choices.map((c) => [c.text, c.finish_reason, c.logprobs]));
          continue;
        }
        let text = '', finish = null, lps = [];
        for await (const ev of await ai.completions.create(req)) {
          for (const c of ev.choices) {
            text += c.text;
            finish = c.finish_reason || finish;
            if (c.logprobs) lps = lps.concat(c.logprobs.token_logprobs);
          }
        }
        out.push([text, finish, lps]);
      }
      return out;
    };
    /* every answer starts by repeating the prompt (a test hook), so guesses
     * are kept; its log-probabilities come from the checked rows, then the
     * model goes on alone */
    const env = { MOETIER_SERVE_FORCE_PREFIX: ' four one two three four one two three four one two' };
    const plain = await startServer(['--no-think'], env);
    let want;
    try {
      want = await answers(plain);
    } finally {
      await stopServer(plain);
    }
    /* every guess checked (MOETIER_DRAFT_TUNE=0: the rows do not depend on
     * timing), then as the tuner picks them */
    for (const tune of ['0', '1']) {
      const srv = await startServer(['--no-think', '--draft-lookup', '3'], { ...env, MOETIER_DRAFT_TUNE: tune });
      try {
        const got = await answers(srv);
        for (let i = 0; i < reqs.length; i++)
          assert.deepEqual(got[i], want[i], `request ${i}: another answer with --draft-lookup (tuned ${tune})`);
        const t = await (await fetch(srv.url + '/metrics')).text();
        const guessed = Number(/moetier_draft_tokens_total (\d+)/.exec(t)[1]);
        const kept = Number(/moetier_draft_tokens_accepted_total (\d+)/.exec(t)[1]);
        assert.ok(kept <= guessed && (tune === '1' || kept > 0), `${kept} of ${guessed} guesses kept: the check proves nothing`);
        /* what the last request learned: its answer repeated its prompt, so a
         * first guess after a long match was mostly kept */
        const chances = [...t.matchAll(/moetier_draft_chance\{match="([-0-9+]+)",guess="(\d)"\} ([0-9.]+)/g)];
        assert.equal(chances.length, 12, t);
        assert.ok(chances.every(([, , , x]) => x > 0 && x < 1), t);
        const long = chances.find(([, m, g]) => m === '8+' && g === '1');
        assert.ok(Number(long[3]) > 0.5, `a first guess's chance after 8 or more tokens matched: ${long[3]}\n${t}`);
      } finally {
        await stopServer(srv);
      }
    }
  });
}

async function draftParallelServer() {
  await check('--parallel 2 --draft-lookup 3: requests decoding together check their guesses in the same steps, with the answers and log-probabilities of a server without them', async () => {
    const reqs = [
      { temperature: 0, prompt: 'one two three four one two three four one two three' },
      { temperature: 0.3, seed: 5, prompt: 'five six seven eight five six seven eight five six seven' },
    ].map((r) => ({ model: MODEL, max_tokens: 80, logprobs: 2, ...r }));
    const shown = (r) => r.choices.map((c) => [c.text, c.finish_reason, c.logprobs]);
    /* each answer starts with 40 forced words that repeat its prompt's cycle */
    const env = { MOETIER_SERVE_FORCE_PREFIX: ' four one two three'.repeat(10) };
    const plain = await startServer(['--no-think'], env);
    const want = [];
    try {
      for (const req of reqs) want.push(shown(await client(plain).completions.create(req)));
    } finally {
      await stopServer(plain);
    }
    const tuned = await startServer(['--no-think', '--parallel', '2', '--draft-lookup', '3'], env);
    try {
      const ai = client(tuned);
      const got = await Promise.all(reqs.map((r) => ai.completions.create(r)));
      for (let i = 0; i < reqs.length; i++)
        assert.deepEqual(shown(got[i]), want[i], `request ${i}: another answer with --draft-lookup, tuned`);
    } finally {
      await stopServer(tuned);
    }
    /* every guess checked: the steps' rows do not depend on timing */
    const srv = await startServer(['--no-think', '--parallel', '2', '--draft-lookup', '3'],
      { ...env, MOETIER_DRAFT_TUNE: '0' });
    try {
      const ai = client(srv);
      const got = await Promise.all(reqs.map((r) => ai.completions.create(r)));
      for (let i = 0; i < reqs.length; i++)
        assert.deepEqual(shown(got[i]), want[i], `request ${i}: another answer with --draft-lookup`);
      const t = await (await fetch(srv.url + '/metrics')).text();
      const metric = (name) => Number(new RegExp(`${name} (\\d+)`).exec(t)[1]);
      const steps = metric('moetier_decode_steps_total');
      const both = metric('moetier_decode_step_requests_total') - steps;
      const tokens = got.reduce((n, r) => n + r.usage.completion_tokens, 0);
      /* without guesses in the steps the two share, those steps give one token
       * each, and a step of one request at most 4 */
      assert.ok(both > 0, 'the two requests never decoded in the same step');
      assert.ok(tokens > 2 * both + 4 * (steps - both),
                `${tokens} tokens in ${steps} steps, ${both} of them shared: no guess kept in a shared step`);
      /* steps of both requests with guesses: more than 2 rows, each timed */
      const timed = [...t.matchAll(/moetier_decode_step_seconds\{rows="(\d+)"\} ([0-9.]+)/g)];
      assert.ok(timed.some(([, r]) => Number(r) > 2) && timed.every(([, r, x]) => r <= 8 && x > 0),
                `step times: ${timed.map((x) => x[0]).join(', ')}`);
    } finally {
      await stopServer(srv);
    }
  });
}

async function parallelServer() {
  await check('--parallel 4: requests run at once, stepped together, each answers as alone; one that leaves mid-stream stops only itself', async () => {
    const srv = await startServer(['--no-think', '--parallel', '4', '-c', '4096', '--chunk', '8']);
    const alone = await startServer(['--no-think', '-c', '1024', '--chunk', '8']);
    try {
      assert.match(srv.log, /4 at once with 1024 positions each/);
      const long = Array.from({ length: 100 }, (_, i) => `w${i}`).join(' ');
      const reqs = [
        { messages: user('Name three rivers.'), max_tokens: 40, temperature: 0 },
        { messages: user('Count to ten.'), max_tokens: 30, temperature: 0.8, seed: 11 },
        { messages: user(`Summarize: ${long}`), max_tokens: 25, temperature: 0 },   // prefilled while others decode
        { messages: user('Why is the sky blue?'), max_tokens: 35, temperature: 1.1, top_p: 0.9, seed: 4 },
      ];
      const stream = (ai, r, signal) => ai.chat.completions.create({ model: MODEL, ...r, stream: true }, { signal });
      const ai = client(srv);
      const ctl = new AbortController();
      const leaver = (async () => {
        const s = await stream(ai, { messages: user('Talk forever.'), max_tokens: 400, temperature: 0 }, ctl.signal);
        let n = 0, health = null;
        try {
          for await (const ch of s) {
            if (++n === 3) health = await (await fetch(srv.url + '/health')).json();
            if (n === 5) ctl.abort();
          }
        } catch { /* aborted */ }
        return { n, health };
      })();
      const together = await Promise.all(reqs.map(async (r) => collect(await stream(ai, r))));
      const left = await leaver;
      assert.ok(left.n >= 5);
      assert.ok(left.health.slots_processing >= 1 && left.health.slots_idle + left.health.slots_processing === 4,
        JSON.stringify(left.health));
      const metrics = await (await fetch(srv.url + '/metrics')).text();
      const steps = Number(/moetier_decode_steps_total (\d+)/.exec(metrics)[1]);
      const rows = Number(/moetier_decode_step_requests_total (\d+)/.exec(metrics)[1]);
      assert.ok(rows >= steps + 20, `the requests were hardly stepped together: ${rows} rows in ${steps} steps`);
      for (let k = 0; k < reqs.length; k++) {
        const want = await collect(await stream(client(alone), reqs[k]));
        assert.equal(together[k].content, want.content, `request ${k} answered otherwise than alone`);
        assert.equal(together[k].finish, want.finish);
      }
    } finally {
      await stopServer(srv);
      await stopServer(alone);
    }
  });
  await check('--parallel 2 --decode-interval 1: a generating request steps between the layers of another\'s prompt chunk, both answering as alone', async () => {
    const srv = await startServer(['--no-think', '--parallel', '2', '-c', '8192', '--chunk', '1024', '--decode-interval', '1']);
    const alone = await startServer(['--no-think', '-c', '4096', '--chunk', '1024']);
    try {
      const long = Array.from({ length: 700 }, (_, i) => `w${i}`).join(' ');
      const talk = { messages: user('Talk forever.'), max_tokens: 300, temperature: 0 };
      const summary = { messages: user(`Summarize: ${long}`), max_tokens: 6, temperature: 0 };
      const stream = (ai, r) => ai.chat.completions.create({ model: MODEL, ...r, stream: true });
      const ai = client(srv);
      const talking = await stream(ai, talk);
      const it = talking[Symbol.asyncIterator]();
      let content = '', finish = null;
      const take = (ch) => { content += ch.choices[0]?.delta?.content ?? ''; finish = ch.choices[0]?.finish_reason ?? finish; };
      for (let k = 0; k < 3; k++)
        take((await it.next()).value);
      let summaryDone = false;
      const summarized = collect(await stream(ai, summary)).then((x) => { summaryDone = true; return x; });
      // GET /slots while the prompt is read: published in its pauses too, so
      // the talking slot's count moves within one of its chunks
      const seen = [];
      const polling = (async () => {
        while (!summaryDone) {
          const v = await (await fetch(srv.url + '/slots')).json();
          const p = v.find((x) => x.state === 'prefilling'), g = v.find((x) => x.state === 'generating');
          if (p && g) seen.push(`${p.prompt_done}:${g.generated}`);
          await new Promise((r) => setTimeout(r, 2));
        }
      })();
      for (let r = await it.next(); !r.done; r = await it.next())
        take(r.value);
      const got = await summarized;
      await polling;
      const moved = seen.some((x, k) => seen.some((y) => y.split(':')[0] === x.split(':')[0] && y !== x));
      assert.ok(moved, `GET /slots never showed the talking slot move within a chunk: ${seen.join(' ')}`);
      const metrics = await (await fetch(srv.url + '/metrics')).text();
      const inside = Number(/moetier_decode_steps_in_prefill_total (\d+)/.exec(metrics)[1]);
      assert.ok(inside >= 1, `no decode step ran inside the prompt's prefill:\n${metrics}`);
      const wantTalk = await collect(await stream(client(alone), talk));
      const wantSummary = await collect(await stream(client(alone), summary));
      assert.equal(content, wantTalk.content, 'the generating request answered otherwise than alone');
      assert.equal(finish, wantTalk.finish);
      assert.equal(got.content, wantSummary.content, 'the prefilled request answered otherwise than alone');
    } finally {
      await stopServer(srv);
      await stopServer(alone);
    }
  });
  await check('--parallel 3: short prompts sent while a long one\'s chunks run are prefilled between its layers, answering as alone', async () => {
    // --batch-invariant: the short prompts find their start cached (the one
    // before, or another slot's): their bits must not depend on it
    const srv = await startServer(['--no-think', '--batch-invariant', '--parallel', '3', '-c', '16384', '--chunk', '2048']);
    const alone = await startServer(['--no-think', '--batch-invariant', '-c', '8192', '--chunk', '2048']);
    try {
      const doc = Array.from({ length: 1000 }, (_, i) => `w${i}`).join(' ');
      const req = (content, max_tokens) => ({ model: MODEL, messages: user(content), max_tokens, temperature: 0 });
      let longDone = false;
      const long = client(srv).chat.completions.create(req(`Summarize: ${doc}`, 4)).then((r) => { longDone = true; return r; });
      // one after another while the long prompt runs: one that comes during
      // a chunk's last layer gets a chunk of its own instead
      const shorts = [];
      while (!longDone)
        shorts.push((await client(srv).chat.completions.create(req('Hi.', 1))).choices[0].message.content);
      const l = await long;
      assert.ok(l.usage.prompt_tokens > 3000 && shorts.length >= 3, `${JSON.stringify(l.usage)}, ${shorts.length} short prompts`);
      const metrics = await (await fetch(srv.url + '/metrics')).text();
      const between = Number(/moetier_prompts_between_layers_total (\d+)/.exec(metrics)[1]);
      assert.ok(between >= 1, `no short prompt was prefilled between the long one's layers (${shorts.length} sent):\n${metrics}`);
      const want = (await client(alone).chat.completions.create(req('Hi.', 1))).choices[0].message.content;
      assert.deepEqual(shorts, shorts.map(() => want));
      assert.equal(l.choices[0].message.content, (await client(alone).chat.completions.create(req(`Summarize: ${doc}`, 4))).choices[0].message.content);
    } finally {
      await stopServer(srv);
      await stopServer(alone);
    }
  });
  await check('--parallel 2: prompts take chunks in turn, so a short one sent behind a long one is answered before the long one is in', async () => {
    const srv = await startServer(['--no-think', '--parallel', '2', '-c', '16384', '--chunk', '16']);
    try {
      const doc = Array.from({ length: 800 }, (_, i) => `w${i}`).join(' ');
      const done = [];
      const ask = (content, tag) => client(srv).chat.completions.create({ model: MODEL, messages: user(content), max_tokens: 1, temperature: 0 })
        .then((r) => { done.push(tag); return r; });
      const long = ask(`Summarize: ${doc}`, 'long');
      await new Promise((r) => setTimeout(r, 50));
      const short = ask('Hi.', 'short');
      const [l, s] = await Promise.all([long, short]);
      assert.ok(l.usage.prompt_tokens > 3000 && s.usage.prompt_tokens < 40, JSON.stringify([l.usage, s.usage]));
      assert.deepEqual(done, ['short', 'long'], 'the short prompt waited for the long one');
    } finally {
      await stopServer(srv);
    }
  });
  await check('--parallel 2: a completions batch\'s prompts run in slots at once, each answered as alone', async () => {
    const srv = await startServer(['--no-think', '--parallel', '2', '-c', '2048']);
    const alone = await startServer(['--no-think', '-c', '1024']);
    try {
      const prompts = ['one two three', 'The quick brown fox', 'Why is the sea', 'Salt and'];
      const req = { model: MODEL, max_tokens: 12, temperature: 0 };
      const r = await client(srv).completions.create({ ...req, prompt: prompts });
      const metrics = await (await fetch(srv.url + '/metrics')).text();
      const steps = Number(/moetier_decode_steps_total (\d+)/.exec(metrics)[1]);
      const rows = Number(/moetier_decode_step_requests_total (\d+)/.exec(metrics)[1]);
      assert.ok(rows >= steps + 8, `the batch's prompts were hardly stepped together: ${rows} rows in ${steps} steps`);
      for (let k = 0; k < prompts.length; k++) {
        const want = await client(alone).completions.create({ ...req, prompt: prompts[k] });
        assert.equal(r.choices[k].text, want.choices[0].text, `prompt ${k} answered otherwise than alone`);
      }
    } finally {
      await stopServer(srv);
      await stopServer(alone);
    }
  });
  await check('--parallel 3: n choices are made at once (streamed too), each as the request makes it alone; a prompt another slot holds is copied, not prefilled; GET /slots', async () => {
    // --batch-invariant: a token's bits do not depend on its step, so the
    // choices made apart (the prompt copied) must be those made in turn
    const srv = await startServer(['--no-think', '--batch-invariant', '--parallel', '3', '-c', '3072', '--chunk', '16']);
    const alone = await startServer(['--no-think', '--batch-invariant', '-c', '1024', '--chunk', '16']);
    const counter = async (name) =>
      Number(new RegExp(`${name} (\\d+)`).exec(await (await fetch(srv.url + '/metrics')).text())[1]);
    try {
      const preamble = Array.from({ length: 40 }, (_, i) => `rule${i}`).join(' ');
      const req = { model: MODEL, prompt: `${preamble} Now write`, n: 3, max_tokens: 10, temperature: 0.9,
        seed: 7, logprobs: 2 };
      const made = await client(srv).completions.create(req);
      const want = await client(alone).completions.create(req);
      assert.deepEqual(made.choices, want.choices, 'the choices made at once differ from those made in turn');
      assert.deepEqual(made.usage, want.usage);
      const shared = await counter('moetier_prompt_tokens_shared_total');
      assert.ok(shared >= 2 * (want.usage.prompt_tokens - 1), `${shared} prompt tokens copied`);
      const rows = await counter('moetier_decode_step_requests_total'), steps = await counter('moetier_decode_steps_total');
      assert.ok(rows >= steps + 10, `the choices were hardly stepped together: ${rows} rows in ${steps} steps`);
      const chat = { model: MODEL, messages: user(`${preamble} Go on.`), n: 2, max_tokens: 8, temperature: 1, seed: 3 };
      const c1 = await client(srv).chat.completions.create(chat), c2 = await client(alone).chat.completions.create(chat);
      assert.deepEqual(c1.choices, c2.choices, 'chat choices made at once differ from those made in turn');
      // forced calls: each choice held to the template's call layout, as the first is
      const fn = { type: 'function', function: { name: 'f', parameters: { type: 'object',
        properties: { utc: { type: 'boolean' } }, required: ['utc'], additionalProperties: false } } };
      for (const tool_choice of ['required', { type: 'function', function: { name: 'f' } }]) {
        const forced = { ...chat, tools: [fn], tool_choice, max_tokens: 200 };
        const f1 = await client(srv).chat.completions.create(forced);
        const f2 = await client(alone).chat.completions.create(forced);
        assert.deepEqual(f1.choices, f2.choices, 'forced calls made at once differ from those made in turn');
        assert.ok(f1.choices.every((c) => c.message.tool_calls?.[0]?.function.name === 'f'), JSON.stringify(f1.choices));
      }
      // streamed: the parts' events interleaved whole, one id, the usage summed, one [DONE]
      const perIndex = async (ai) => {
        const st = await ai.chat.completions.create({ ...chat, n: 3, stream: true, stream_options: { include_usage: true } });
        const out = { text: ['', '', ''], finish: [], ids: new Set(), usage: null, roles: 0 };
        for await (const ch of st) {
          out.ids.add(ch.id);
          if (ch.usage) out.usage = ch.usage;
          for (const c of ch.choices) {
            out.text[c.index] += c.delta?.content ?? '';
            out.roles += c.delta?.role ? 1 : 0;
            if (c.finish_reason) out.finish[c.index] = c.finish_reason;
          }
        }
        return out;
      };
      const sp = await perIndex(client(srv)), ss = await perIndex(client(alone));
      assert.deepEqual(sp.text, ss.text, 'streamed choices made at once differ from those made in turn');
      assert.deepEqual(sp.finish, ss.finish);
      assert.deepEqual(sp.usage, ss.usage);
      assert.equal(sp.ids.size, 1, [...sp.ids].join(' '));
      assert.equal(sp.roles, 3);
      const raw = await (await fetch(srv.url + '/v1/chat/completions', { method: 'POST', headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ ...chat, n: 2, stream: true }) })).text();
      assert.equal(raw.split('data: [DONE]').length - 1, 1, raw.slice(-300));
      assert.ok(raw.trimEnd().endsWith('data: [DONE]'), raw.slice(-300));
      // a client leaving a streamed request stops all of its parts
      const cancelled = await counter('moetier_requests_cancelled_total');
      const ctl = new AbortController();
      const long = await client(srv).chat.completions.create({ ...chat, n: 3, max_tokens: 700, stream: true }, { signal: ctl.signal });
      let seen = 0;
      try {
        for await (const ch of long) if (++seen === 6) ctl.abort();
      } catch (e) {
        assert.ok(ctl.signal.aborted, String(e));
      }
      let idle = false;
      for (let k = 0; k < 100 && !idle; k++) {
        idle = (await (await fetch(srv.url + '/slots')).json()).every((x) => x.state === 'idle');
        if (!idle) await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(idle, 'the parts of a stream whose client left still run');
      assert.equal(await counter('moetier_requests_cancelled_total') - cancelled, 3, 'not every part was stopped');
      // a conversation starting as one that is running (and as no idle
      // slot's): its start copied
      const ai = client(srv), other = Array.from({ length: 40 }, (_, i) => `term${i}`).join(' ');
      const first = await ai.chat.completions.create({ model: MODEL, messages: user(`${other} First.`), max_tokens: 200,
        temperature: 0, stream: true });
      const it = first[Symbol.asyncIterator]();
      await it.next();    // the first request is in its slot (its first event may come before its prefill ends)
      let slots = [];
      for (let k = 0; k < 100; k++) {
        slots = await (await fetch(srv.url + '/slots')).json();
        if (slots.some((x) => x.state === 'generating')) break;
        await new Promise((r) => setTimeout(r, 10));
      }
      assert.equal(slots.length, 3, JSON.stringify(slots));
      const busy = slots.filter((x) => x.state !== 'idle');
      assert.equal(busy.length, 1, JSON.stringify(slots));
      assert.ok(busy[0].state === 'generating' && /^chatcmpl-/.test(busy[0].request) && busy[0].n_ctx === 1024 &&
        busy[0].prompt_done === busy[0].prompt_tokens && busy[0].n_past >= busy[0].prompt_tokens, JSON.stringify(slots));
      assert.ok(slots.every((x) => x.state !== 'idle' || (x.request === undefined && x.n_past >= 0)), JSON.stringify(slots));
      assert.equal((await fetch(srv.url + '/slots', { method: 'POST' })).status, 405);
      const before = await counter('moetier_prompt_tokens_shared_total');
      const second = { model: MODEL, messages: user(`${other} Second.`), max_tokens: 6, temperature: 0, logprobs: true };
      const r = await ai.chat.completions.create(second);
      while (!(await it.next()).done);
      const copied = (await counter('moetier_prompt_tokens_shared_total')) - before;
      assert.ok(copied >= 40 && r.usage.prompt_tokens_details.cached_tokens >= copied,
        `${copied} tokens copied, usage ${JSON.stringify(r.usage)}`);
      const w = await client(alone).chat.completions.create(second);
      assert.deepEqual(r.choices[0].logprobs, w.choices[0].logprobs, 'the answer after a copied start differs');
    } finally {
      await stopServer(srv);
      await stopServer(alone);
    }
  });
  await check('--parallel 2: a conversation\'s next turn goes back to its slot; a stop keeps both slots\' conversations', async () => {
    const dir = mkdtempSync(join(process.env.MOETIER_TMP || tmpdir(), 'parallel-dir-'));
    try {
      const ask = (ai, messages) => ai.chat.completions.create({ model: MODEL, messages, max_tokens: 3, temperature: 0 });
      const a = user('Tell me about the history of salt in trade, with numbers.');
      const b = user('Tell me about the history of rope in sailing, with numbers.');
      const then = (m, r, more) => [...m, { role: 'assistant', content: r.choices[0].message.content }, ...user(more)];
      let srv = await startServer(['--no-think', '--parallel', '2', '--prompt-cache-gb', '0']);
      const a1 = await ask(client(srv), a), b1 = await ask(client(srv), b);
      const a2 = await ask(client(srv), then(a, a1, 'Go on.'));
      assert.ok(a2.usage.prompt_tokens_details.cached_tokens >= a1.usage.prompt_tokens - 1,
        `the next turn did not find its slot: ${JSON.stringify(a2.usage)}`);
      await stopServer(srv);
      srv = await startServer(['--no-think', '--parallel', '2', '--prompt-cache-dir', dir]);
      await ask(client(srv), a);
      await ask(client(srv), b);
      await stopServer(srv);
      assert.match(srv.log, /2 conversations in /, srv.log);
      srv = await startServer(['--no-think', '--prompt-cache-dir', dir]);
      try {
        for (const [m, r1] of [[a, a1], [b, b1]]) {
          const r = await ask(client(srv), then(m, r1, 'More.'));
          assert.ok(r.usage.prompt_tokens_details.cached_tokens >= r1.usage.prompt_tokens - 1,
            `a slot's conversation was not kept: ${JSON.stringify(r.usage)}`);
        }
      } finally {
        await stopServer(srv);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  await check('--parallel leaving a slot fewer than 16 positions, or more than --max-queue, is refused; --decode-interval alone is said to do nothing', async () => {
    let e = await startServer(['-c', '64', '--parallel', '8']).then(async (s) => { await stopServer(s); return null; }, (x) => x);
    assert.ok(e && /-c 64 shared by --parallel 8 leaves 8 positions/.test(String(e)), String(e));
    e = await startServer(['--parallel', '4', '--max-queue', '2']).then(async (s) => { await stopServer(s); return null; }, (x) => x);
    assert.ok(e && /--max-queue 2 is less than --parallel 4/.test(String(e)), String(e));
    const srv = await startServer(['--parallel', '40', '-c', '4096']);
    try {
      assert.match(srv.log, /40 requests queued at most, 40 at once/);
      assert.doesNotMatch(srv.log, /--decode-interval/);
    } finally {
      await stopServer(srv);
    }
    // accepted, as before, but said to do nothing where one request runs at a time
    const one = await startServer(['--decode-interval', '5']);
    try {
      assert.match(one.log, /--decode-interval has no effect with --parallel 1/);
    } finally {
      await stopServer(one);
    }
  });
}

// A model's own template other than K2.5's (Kimi K2's own, in its shapes) is
// interpreted; one that cannot be compiled leaves the model served for raw
// prompts, chat refused saying why, unless --chat-template names a format
async function modelTemplateServer() {
  const dir = mkdtempSync(join(process.env.MOETIER_TMP || tmpdir(), 'template-'));
  try {
    for (const f of readdirSync(modelDir)) symlinkSync(join(modelDir, f), join(dir, f));
    writeFileSync(join(dir, 'chat_template.jinja'), [
      '{{- greeting if greeting is defined -}}',
      "{%- if messages|length == 0 or messages[0]['role'] != 'system' -%}",
      '<|im_system|>system<|im_middle|>You are a test model.<|im_end|>',
      '{%- endif -%}',
      '{%- for m in messages -%}',
      "  {%- if m['role'] == 'user' -%}<|im_user|>{{ m.get('name') or m['role'] }}<|im_middle|>",
      "  {%- elif m['role'] == 'assistant' -%}<|im_assistant|>assistant<|im_middle|><think></think>",
      "  {%- else -%}<|im_system|>{{ m['role'] }}<|im_middle|>{%- endif -%}",
      "  {{ m['content'] }}",
      "  {%- if m.get('tool_calls') -%}<|tool_calls_section_begin|>",
      "    {%- for c in m['tool_calls'] -%}<|tool_call_begin|>{{ c['id'] }}<|tool_call_argument_begin|>" +
        "{{ c['function']['arguments'] }}<|tool_call_end|>{%- endfor -%}<|tool_calls_section_end|>",
      '  {%- endif -%}<|im_end|>',
      '{%- endfor -%}',
      '{%- if add_generation_prompt -%}<|im_assistant|>assistant<|im_middle|>{%- endif -%}',
    ].join('\n'));
    await check("a model's own template (not K2.5's) is interpreted: /apply-template prints it, chat answers; continue_final_message; a request's own template", async () => {
      const srv = await startServer(['-m', dir, '--trust-request-chat-template', '--parallel', '2']);
      try {
        assert.doesNotMatch(srv.log, /chat requests will be refused/);
        assert.match((await (await fetch(srv.url + '/props')).json()).chat_template, /interpreted/);
        const messages = [{ role: 'user', content: 'Hello there', name: 'ann' },
          { role: 'assistant', content: '', tool_calls: [{ id: 'functions.f:0', type: 'function', function: { name: 'f', arguments: '{"x": 1}' } }] },
          { role: 'tool', content: '42', tool_call_id: 'functions.f:0' }];
        const r = await fetch(srv.url + '/apply-template', { method: 'POST', body: JSON.stringify({ messages }) });
        assert.equal(r.status, 200);
        assert.equal((await r.json()).prompt, '<|im_system|>system<|im_middle|>You are a test model.<|im_end|>' +
          '<|im_user|>ann<|im_middle|>Hello there<|im_end|><|im_assistant|>assistant<|im_middle|><think></think>' +
          '<|tool_calls_section_begin|><|tool_call_begin|>functions.f:0<|tool_call_argument_begin|>{"x": 1}' +
          '<|tool_call_end|><|tool_calls_section_end|><|im_end|><|im_system|>tool<|im_middle|>42<|im_end|>' +
          '<|im_assistant|>assistant<|im_middle|>');
        const kw = await fetch(srv.url + '/apply-template', { method: 'POST',
          body: JSON.stringify({ messages: user('Hi'), chat_template_kwargs: { greeting: 'hey' } }) });
        assert.match((await kw.json()).prompt, /^hey<\|im_system\|>system/, 'chat_template_kwargs reach the template');
        const apply = async (body) => {
          const res = await fetch(srv.url + '/apply-template', { method: 'POST', body: JSON.stringify(body) });
          return [res.status, await res.json()];
        };
        const partial = [...user('Count to five'), { role: 'assistant', content: 'one, two, ' }];
        let [st, b] = await apply({ messages: partial, continue_final_message: true, add_generation_prompt: false });
        assert.equal(st, 200, JSON.stringify(b));
        assert.match(b.prompt, /<think><\/think>one, two, $/, 'the prompt ends inside the last message');
        [st, b] = await apply({ messages: partial, continue_final_message: true });
        assert.equal(st, 400);
        assert.equal(b.error.param, 'continue_final_message');
        [st, b] = await apply({ messages: partial, add_generation_prompt: false });
        assert.match(b.prompt, /one, two, <\|im_end\|>$/, 'add_generation_prompt false is honoured');
        [st, b] = await apply({ messages: user('Hi'), chat_template: '{{ bos_token }}{% for m in messages %}[{{ m.content }}]{% endfor %}' });
        assert.equal(st, 200, JSON.stringify(b));
        assert.equal(b.prompt, '[BOS][Hi]', "a request's own template, trusted, with the model's special tokens");
        [st, b] = await apply({ messages: user('Hi'), chat_template: '{% for m in messages %}' });
        assert.equal(st, 400);
        assert.equal(b.error.param, 'chat_template');
        assert.match(b.error.message, /chat template line 1/);
        // the prompt does not open <think> (the model would): every choice's text is content
        const two = await client(srv).chat.completions.create({ model: MODEL, messages: user('Hello there'),
          max_tokens: 4, n: 2, seed: 3, ignore_eos: true });
        assert.equal(two.choices.length, 2);
        for (const ch of two.choices) {
          assert.ok(!ch.message.reasoning_content, `choice ${ch.index} is not reasoning: ${JSON.stringify(ch.message)}`);
          assert.ok(ch.message.content, `choice ${ch.index} has content`);
        }
        const c = await client(srv).chat.completions.create({ model: MODEL, messages: user('Hello there'), max_tokens: 3, temperature: 0 });
        assert.equal(c.object, 'chat.completion');
        assert.equal(c.usage.prompt_tokens, (await (await fetch(srv.url + '/tokenize', { method: 'POST',
          body: JSON.stringify({ messages: user('Hello there') }) })).json()).tokens.length, 'the prompt is the rendering');
      } finally {
        await stopServer(srv);
      }
    });
    await check("K2-Thinking's way: an answer's first token may open its reasoning; a held answer starts after it, a thinking budget ends it", async () => {
      const special = (t) => {
        const r = spawnSync(bin, ['tokenize', '-m', modelDir, '--special', '--text', t], { encoding: 'utf8' });
        assert.equal(r.status, 0, r.stderr);
        return r.stdout.trim();
      };
      const [think, unthink] = ['<think>', '</think>'].map(special);
      const [open, close] = ['{', '}'].map(tokenId);
      const srv = await startServer(['-m', dir]);
      try {
        const ai = client(srv);
        // the bias makes "<think>" the first token's best, then "</think>": both outside the JSON mask
        const ask = { model: MODEL, messages: user('Give me JSON'), max_tokens: 12, temperature: 0, logprobs: true,
          response_format: { type: 'json_object' }, logit_bias: { [think]: 60, [unthink]: 100, [open]: 50, [close]: 50 } };
        const c = (await ai.chat.completions.create(ask)).choices[0];
        assert.deepEqual(c.logprobs.content.map((t) => t.token), ['<think>', '</think>', '{', '}'], JSON.stringify(c));
        assert.equal(c.message.content, '{}');
        assert.ok(!c.message.reasoning_content, JSON.stringify(c.message));
        assert.equal(c.finish_reason, 'stop');
        const off = (await ai.chat.completions.create({ ...ask, reasoning_effort: 'none' })).choices[0];
        assert.deepEqual(off.logprobs.content.map((t) => t.token), ['{', '}'], 'asked for none, the answer opens none');
      } finally {
        await stopServer(srv);
      }
      // the model opens it (forced here); Anthropic's budget ends it as it ends K2.5's
      const forced = await startServer(['-m', dir], { MOETIER_SERVE_FORCE_PREFIX: '<think>' });
      try {
        const ask = { model: MODEL, temperature: 0, messages: [{ role: 'user', content: 'Think hard.' }] };
        const messages = async (body) => {
          const r = await fetch(forced.url + '/v1/messages', { method: 'POST', body: JSON.stringify({ ...ask, ...body }) });
          assert.equal(r.status, 200);
          return r.json();
        };
        const free = await messages({ max_tokens: 16, thinking: { type: 'enabled' } });
        assert.deepEqual(free.content.map((b) => b.type), ['thinking'], 'the reasoning ended by itself: this check proves nothing');
        const first = await messages({ max_tokens: 4, thinking: { type: 'enabled' } });
        const m = await messages({ max_tokens: 16, thinking: { type: 'enabled', budget_tokens: 3 } });
        assert.deepEqual(m.content.map((b) => b.type), ['thinking', 'text'], JSON.stringify(m.content));
        assert.equal(m.content[0].thinking, first.content[0].thinking, 'the opener and 3 tokens');
        assert.equal(m.usage.output_tokens, 16);
      } finally {
        await stopServer(forced);
      }
    });
    writeFileSync(join(dir, 'chat_template.jinja'), "{% for m in messages %}{{ m['content'] }}\n{% frobnicate %}{% endfor %}");
    await check('a template that cannot be compiled: served for raw prompts, chat refused saying why; --chat-template kimi-k2.5', async () => {
      const srv = await startServer(['--no-think', '-m', dir]);
      try {
        assert.match(srv.log, /chat requests will be refused: .*chat_template\.jinja: chat template line 2: unknown or unsupported statement 'frobnicate'/);
        assert.equal((await (await fetch(srv.url + '/props')).json()).chat_template, '', '/props: no chat format');
        const ai = client(srv);
        const chat = { model: MODEL, messages: user('Hello there'), max_tokens: 3, temperature: 0 };
        const e = await expectStatus(ai.chat.completions.create(chat), 400);
        assert.equal(e.param, 'messages');
        assert.equal(e.code, 'chat_template_unsupported');
        assert.match(e.message, /--chat-template kimi-k2\.5/);
        for (const [path, body] of [['/tokenize', { messages: chat.messages }], ['/apply-template', { messages: chat.messages }],
          ['/v1/messages', { model: MODEL, max_tokens: 3, messages: chat.messages }]]) {
          const r = await fetch(srv.url + path, { method: 'POST', body: JSON.stringify(body) });
          assert.equal(r.status, 400, path);
          assert.match(JSON.stringify(await r.json()), /chat template could not be compiled/, path);
        }
        const r = await ai.completions.create({ model: MODEL, prompt: 'one two', max_tokens: 2, temperature: 0 });
        assert.equal(r.object, 'text_completion', 'raw prompts need no template');
        const own = await fetch(srv.url + '/apply-template', { method: 'POST',
          body: JSON.stringify({ messages: chat.messages, chat_template: '{{ messages[0].content }}' }) });
        assert.equal(own.status, 400);
        const ob = await own.json();
        assert.equal(ob.error.param, 'chat_template');
        assert.match(ob.error.message, /--trust-request-chat-template/, "a request's template needs the flag");
      } finally {
        await stopServer(srv);
      }
      const srv2 = await startServer(['--no-think', '-m', dir, '--chat-template', 'kimi-k2.5']);
      try {
        assert.doesNotMatch(srv2.log, /chat requests will be refused/);
        const r = await client(srv2).chat.completions.create({ model: MODEL, messages: user('Hello there'), max_tokens: 3 });
        assert.equal(r.object, 'chat.completion');
      } finally {
        await stopServer(srv2);
      }
      const bad = await startServer(['-m', dir, '--chat-template', 'chatml']).then(async (x) => { await stopServer(x); return null; }, (x) => x);
      assert.ok(bad && /unknown chat format 'chatml'/.test(String(bad)), String(bad));
    });
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

try {
  await plainServer();
  await modelTemplateServer();
  await restartedServer();
  await queueServer();
  await progressServer();
  await parallelServer();
  await draftServer();
  await draftParallelServer();
  await invariantServer();
  await seededServer();
  await nanServer();
  await profiledServer();
  await forcedServer();
  await reasoningServer();
  await autoCallServers();
  await guardedServer();
  await codeServer();
  await stoppingServer();
} catch (e) {
  fail(e);
}
finish('server tests');
