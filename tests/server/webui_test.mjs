// The chat page (GET /, server/webui/index.html) driven in a headless Chromium
// through playwright-core: what it sends is compared with the same requests
// sent directly, and what it keeps with what it was given.
//
// usage: node webui_test.mjs MOETIER_BIN MODEL_DIR CHROMIUM
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { chromium } from 'playwright-core';
import { FORCED, check, fail, finish, startServer, stopServer, user } from './harness.mjs';

const executablePath = process.argv[4];
// (root, as CI runs, has no user namespaces for Chromium's sandbox)
const browser = await chromium.launch({ executablePath, args: ['--no-sandbox'] });

async function chatDirect(srv, body, key) {
  const headers = { 'content-type': 'application/json' };
  if (key) headers.authorization = `Bearer ${key}`;
  const res = await fetch(`${srv.url}/v1/chat/completions`, { method: 'POST', headers, body: JSON.stringify(body) });
  const text = await res.text();
  assert.equal(res.status, 200, text);
  return JSON.parse(text);
}

async function openPage(srv) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  // (a refused request is logged by the browser as a failed load: not the page's error)
  page.on('console', (m) => {
    if (m.type() === 'error' && !/^Failed to load resource/.test(m.text())) errors.push(m.text());
  });
  await page.goto(srv.url + '/');
  return { page, context, errors };
}

async function setSettings(page, fields) {
  await page.click('#open-settings');
  for (const [id, value] of Object.entries(fields)) {
    if (id === 's-thinking') await page.selectOption('#' + id, value);
    else await page.fill('#' + id, value);
  }
  await page.click('#settings-form button[type=submit]');
}

// sends text from the composer and waits for the answer to end
async function send(page, text) {
  await page.fill('#input', text);
  await page.press('#input', 'Enter');
  await waitIdle(page);
}

async function waitIdle(page) {
  await page.waitForSelector('#stop', { state: 'hidden' });
  await page.waitForSelector('#send', { state: 'visible' });
}

// (run in the page) renderChecked(md): md rendered into a box of the page, so
// that markup in it would load and run, but hidden: nothing covers the page
const RENDER_CHECK = () => {
  const box = document.createElement('div');
  box.id = 'render-check';
  box.hidden = true;
  document.body.append(box);
  window.renderChecked = (md) => {
    const d = document.createElement('div');
    d.innerHTML = renderMarkdown(md);
    box.append(d);
    return d;
  };
};

// (run in the page) the answers to chat requests come from the test, not the
// server: window.stream.say(delta, finish) adds an event to the answer
// streaming, window.stream.usage(u) sends stream_options' usage event,
// window.stream.end() ends it; window.stream.body is what was sent
const STUB_ANSWERS = () => {
  const real = window.realFetch || (window.realFetch = window.fetch);
  window.stream = null;
  window.fetch = async (url, init) => {
    if (!String(url).endsWith('/v1/chat/completions')) return real(url, init);
    let ctl;
    const body = new ReadableStream({ start(c) { ctl = c; } }), bytes = new TextEncoder();
    const send = (data) => ctl.enqueue(bytes.encode(`data: ${data}\n\n`));
    window.stream = { body: JSON.parse(init.body),
      say: (delta, finish) => send(JSON.stringify({ choices: [{ index: 0, delta, finish_reason: finish ?? null }] })),
      usage: (usage) => send(JSON.stringify({ choices: [], usage })),
      end: () => { send('[DONE]'); ctl.close(); } };
    init.signal.addEventListener('abort', () => {
      try { ctl.error(new DOMException('stopped', 'AbortError')); } catch { /* ended already */ }
    });
    return new Response(body, { headers: { 'content-type': 'text/event-stream' } });
  };
};
const UNSTUB_ANSWERS = () => { window.fetch = window.realFetch; };
// sends text and waits for the stub's answer to begin
async function sendStubbed(page, text) {
  await page.evaluate(() => { window.stream = null; });
  await page.fill('#input', text);
  await page.press('#input', 'Enter');
  await page.waitForFunction(() => window.stream);
}
const say = (page, delta, finish) => page.evaluate(([d, f]) => window.stream.say(d, f), [delta, finish]);

const stored = (page) => page.evaluate(() => JSON.parse(localStorage.getItem('moetier.conversations')));

// what the page stores of an answer, against the API's message
function sameAnswer(kept, api) {
  assert.equal(kept.content, api.choices[0].message.content ?? '');
  assert.equal(kept.reasoning ?? '', api.choices[0].message.reasoning_content ?? '');
  assert.equal(kept.stats.completion_tokens, api.usage.completion_tokens);
  assert.equal(kept.stats.prompt_tokens, api.usage.prompt_tokens);
}

async function plainServer() {
  const srv = await startServer([]);
  const { page, context, errors } = await openPage(srv);

  await check('GET / is the chat page, which names the served model', async () => {
    const res = await fetch(srv.url + '/');
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^text\/html/);
    assert.match(res.headers.get('content-security-policy'), /connect-src 'self'/);
    assert.match(await res.text(), /<title>moetier<\/title>/);
    await page.waitForFunction(() => document.getElementById('model').textContent === 'tiny');
    assert.equal((await fetch(srv.url + '/', { method: 'POST' })).status, 405);
  });

  const settings = { 's-temperature': '0', 's-max_tokens': '12' };
  await check('an answer streamed into the page is the answer the API gives', async () => {
    await setSettings(page, settings);
    await send(page, 'Hello there');
    const convs = await stored(page);
    assert.equal(convs.length, 1);
    assert.equal(convs[0].title, 'Hello there');
    const [u, a] = convs[0].messages;
    assert.deepEqual([u.role, u.content, a.role], ['user', 'Hello there', 'assistant']);
    const api = await chatDirect(srv, { messages: user('Hello there'), temperature: 0, max_tokens: 12 });
    sameAnswer(a, api);
    assert.ok(a.done && !a.error && !a.stopped);
    const meta = await page.textContent('#messages .msg.assistant .stats');
    assert.match(meta, new RegExp(`^${api.usage.completion_tokens} tokens`));
    if (api.choices[0].finish_reason === 'length') assert.match(meta, /cut at the token limit/);
  });

  await check('a second turn sends the conversation, reasoning included', async () => {
    const sent = page.waitForRequest((r) => r.url().endsWith('/v1/chat/completions'));
    await send(page, 'And then?');
    const msgs = (await stored(page))[0].messages;
    assert.equal(msgs.length, 4);
    assert.ok(msgs[1].reasoning, 'the first answer has reasoning (the check below needs it)');
    assert.ok(msgs[1].stats.reasoning_seconds >= 0, JSON.stringify(msgs[1].stats));
    assert.match(await page.textContent('#messages .msg.assistant >> nth=0 >> details.reasoning summary'),
                 /^Thought for \d+\.\d s$/);
    const history = [{ role: 'user', content: 'Hello there' },
                     { role: 'assistant', content: msgs[1].content, reasoning_content: msgs[1].reasoning },
                     { role: 'user', content: 'And then?' }];
    const body = (await sent).postDataJSON();
    assert.deepEqual(body.messages, history);
    assert.deepEqual([body.temperature, body.max_tokens, body.stream], [0, 12, true]);
    assert.ok(!('top_p' in body), 'a setting left empty is not sent');
    sameAnswer(msgs[3], await chatDirect(srv, { messages: history, temperature: 0, max_tokens: 12 }));
  });

  await check('a reload shows the kept conversation; Regenerate makes the same greedy answer', async () => {
    const before = (await stored(page))[0].messages;
    await page.reload();
    await page.waitForSelector('#conversations li.current');
    assert.equal(await page.textContent('#conversations li.current button.open'), 'Hello there');
    assert.equal(await page.locator('#messages .msg.user').count(), 2);
    await page.click('#messages .msg.assistant >> nth=1 >> button:has-text("Regenerate")');
    await waitIdle(page);
    const after = (await stored(page))[0].messages;
    assert.equal(after.length, 4);
    assert.equal(after[3].content, before[3].content);
    assert.equal(after[3].reasoning, before[3].reasoning);
    // the answer it replaced is kept: the versions' arrows show it again
    assert.deepEqual(after[3].branches.list.map((t) => t && t.map((m) => m.content)), [[before[3].content], null]);
    assert.deepEqual(after[3].branches.list[0][0].stats, before[3].stats);
    assert.equal(await page.textContent('#messages .msg.assistant >> nth=1 >> .branches'), '\u20392/2\u203a');
    await page.click('#messages .msg.assistant >> nth=1 >> .branches button >> nth=0');
    const back = (await stored(page))[0].messages;
    assert.deepEqual(back[3].stats, before[3].stats, 'the first version is shown again');
    assert.equal(back[3].branches.at, 0);
    assert.equal(await page.textContent('#messages .msg.assistant >> nth=1 >> .branches'), '\u20391/2\u203a');
  });

  await check('Edit sends the changed message in place of it and what followed', async () => {
    await page.click('#messages .msg.user >> nth=0 >> button:has-text("Edit")');
    await page.fill('#messages .editor textarea', 'Hi');
    await page.click('#messages .editor button:has-text("Send")');
    await waitIdle(page);
    const msgs = (await stored(page))[0].messages;
    assert.equal(msgs.length, 2);
    assert.equal(msgs[0].content, 'Hi');
    sameAnswer(msgs[1], await chatDirect(srv, { messages: user('Hi'), temperature: 0, max_tokens: 12 }));
    // the conversation it replaced (with the versions of its own last answer)
    // is kept, and comes back whole; Import takes such a conversation as it is
    const old = msgs[0].branches.list[0];
    assert.deepEqual(old.map((m) => m.content).slice(0, 1), ['Hello there']);
    assert.equal(old.length, 4);
    assert.equal(old[3].branches.list.length, 2);
    await page.click('#messages .msg.user >> nth=0 >> .branches button >> nth=0');
    const shown = (await stored(page))[0].messages;
    assert.deepEqual(shown.map((m) => m.content), old.map((m) => m.content));
    assert.equal(await page.locator('#messages .msg').count(), 4);
    const [imported, kept] = await page.evaluate(() =>
      [importMessages(JSON.parse(JSON.stringify(current().messages)), ''), current().messages]);
    assert.deepEqual(imported, kept, 'Import keeps the versions');
    await page.click('#messages .msg.user >> nth=0 >> .branches button >> nth=1');
    assert.deepEqual((await stored(page))[0].messages.map((m) => m.content), msgs.map((m) => m.content));
  });

  await check('the settings reach the request: a refused value is shown in the answer, which is not sent back', async () => {
    await page.click('#new-chat');
    await setSettings(page, { 's-temperature': '7' });
    await send(page, 'Hot');
    const convs = await stored(page), last = convs.find((c) => c.title === 'Hot').messages[1];
    assert.match(last.error, /temperature/);
    assert.match(await page.textContent('#messages .msg.assistant .error'), /temperature/);
    assert.equal(convs.length, 2, 'a new chat is a conversation of its own');
    // the failed answer (no text) is not sent back as an empty turn of the model's
    await setSettings(page, { 's-temperature': '0' });
    const sent = page.waitForRequest((r) => r.url().endsWith('/v1/chat/completions'));
    await send(page, 'Cooler');
    assert.deepEqual((await sent).postDataJSON().messages, [...user('Hot'), ...user('Cooler')]);
  });

  await check('Stop ends the answer; what came stays, with its token count, and the server takes the next request', async () => {
    const long = { messages: user('Hello there'), temperature: 0, max_tokens: 3000 };
    const full = await chatDirect(srv, long);
    const fullText = (full.choices[0].message.reasoning_content ?? '') + full.choices[0].message.content;
    // (a long answer, about a second of this model's: still running when stopped)
    assert.ok(full.usage.completion_tokens >= 1000, `the greedy answer has ${full.usage.completion_tokens} tokens`);
    await page.click('#new-chat');
    await setSettings(page, { 's-temperature': '0', 's-max_tokens': '3000' });
    await page.fill('#input', 'Hello there');
    await page.press('#input', 'Enter');
    await page.waitForFunction(() => /\S/.test(document.querySelector('#messages .msg.assistant').textContent));
    // (while it streams, the least the tokens so far can be, and their rate)
    await page.waitForFunction(() => /^at least \d+ tokens, \d+\.\d\d tokens\/s or more$/
      .test(document.querySelector('#messages .msg.assistant .stats').textContent));
    await page.click('#stop');
    await waitIdle(page);
    const convs = await stored(page), a = convs[convs.length - 1].messages[1];
    assert.ok(a.stopped && !a.error, JSON.stringify(a));
    const kept = (a.reasoning ?? '') + a.content;
    assert.ok(kept.length > 0 && kept.length < fullText.length, `kept ${kept.length} of ${fullText.length}`);
    assert.ok(fullText.startsWith(kept));
    // (no usage comes after Stop: the events that brought text stay, said to
    // be the least the tokens can be)
    assert.ok(a.stats.completion_tokens > 0 && a.stats.tokens_at_least === true, JSON.stringify(a.stats));
    assert.match(await page.textContent('#messages .msg.assistant .stats'),
                 new RegExp(`^at least ${a.stats.completion_tokens} tokens, .* tokens/s or more .*stopped$`));
    const next = await chatDirect(srv, { messages: user('Hi'), temperature: 0, max_tokens: 2 });
    assert.equal(next.usage.completion_tokens, 2);
    // Escape stops it too
    await page.click('#new-chat');
    await page.fill('#input', 'Hello there');
    await page.press('#input', 'Enter');
    await page.waitForFunction(() => /\S/.test(document.querySelector('#messages .msg.assistant').textContent));
    await page.keyboard.press('Escape');
    await waitIdle(page);
    assert.ok((await stored(page)).at(-1).messages[1].stopped, 'Escape stopped the answer');
  });

  await check('a conversation is renamed in place: Enter keeps the title, Escape leaves the old one', async () => {
    const id = await page.evaluate(() => currentId);
    const title = (await stored(page)).find((c) => c.id === id).title;
    await page.dblclick('#conversations li.current button.open');
    await page.fill('#conversations li.current input.rename', '  Greetings <b>x</b>  ');
    await page.press('#conversations li.current input.rename', 'Enter');
    assert.equal((await stored(page)).find((c) => c.id === id).title, 'Greetings <b>x</b>');
    assert.equal(await page.textContent('#conversations li.current button.open'), 'Greetings <b>x</b>');
    await page.dblclick('#conversations li.current button.open');
    await page.fill('#conversations li.current input.rename', 'Not kept');
    await page.press('#conversations li.current input.rename', 'Escape');
    assert.equal((await stored(page)).find((c) => c.id === id).title, 'Greetings <b>x</b>');
    assert.notEqual(title, 'Greetings <b>x</b>');
  });

  await check('More samplers: llama.cpp\'s settings reach the request, the server\'s defaults shown greyed', async () => {
    await page.click('#new-chat');
    await page.click('#open-settings');
    assert.equal(await page.evaluate(() => document.getElementById('more-samplers').open), false);
    await page.click('#more-samplers summary');
    assert.equal(await page.getAttribute('#s-repeat_penalty', 'placeholder'), '1');
    await page.fill('#s-typical_p', '0.9');
    await page.fill('#s-dry_multiplier', '0.8');
    await page.fill('#s-mirostat', '');
    await page.click('#settings-form button[type=submit]');
    const sent = page.waitForRequest((r) => r.url().endsWith('/v1/chat/completions'));
    await send(page, 'Samplers');
    const body = (await sent).postDataJSON();
    assert.deepEqual([body.typical_p, body.dry_multiplier, 'mirostat' in body], [0.9, 0.8, false]);
    assert.ok(!(await stored(page)).at(-1).messages[1].error);
    await page.click('#open-settings');
    assert.equal(await page.evaluate(() => document.getElementById('more-samplers').open), true, 'set ones shown');
    await page.fill('#s-typical_p', '');
    await page.fill('#s-dry_multiplier', '');
    await page.click('#settings-form button[type=submit]');
  });

  await check('Settings: a value not wholly a number is refused until it is corrected; "0,7" is 0.7', async () => {
    const isOpen = () => page.evaluate(() => document.getElementById('settings').open);
    const save = () => page.click('#settings-form button[type=submit]');
    await page.click('#new-chat');
    await page.click('#open-settings');
    await page.fill('#s-temperature', 'abc');
    await save();
    assert.equal(await isOpen(), true, '"abc" was taken as a temperature');
    await page.fill('#s-temperature', '0,7');
    await page.fill('#s-max_tokens', '1e1');
    await page.fill('#s-top_k', '40.9');
    await save();
    assert.equal(await isOpen(), true, '"40.9" was taken as a top-k');
    await page.fill('#s-top_k', '1,000');
    await save();
    assert.equal(await isOpen(), true, '"1,000" was taken as a top-k');
    await page.fill('#s-top_k', '40');
    await save();
    const kept = !(await isOpen());
    if (!kept) await page.click('#settings-cancel');   // (the checks after this one need the page)
    assert.ok(kept, 'the corrected settings were not saved');
    const sent = page.waitForRequest((r) => r.url().endsWith('/v1/chat/completions'));
    await send(page, 'Numbers');
    const body = (await sent).postDataJSON();
    assert.deepEqual([body.temperature, body.max_tokens, body.top_k], [0.7, 10, 40]);
    await setSettings(page, { 's-temperature': '0', 's-max_tokens': '12', 's-top_k': '' });
  });

  await check('Enter that ends an input method\'s word (Safari\'s: keyCode 229, not composing) does not send', async () => {
    await page.fill('#input', 'nihao');
    await page.evaluate(() => document.getElementById('input').dispatchEvent(
      new KeyboardEvent('keydown', { key: 'Enter', keyCode: 229, bubbles: true, cancelable: true })));
    await page.waitForTimeout(200);
    assert.equal(await page.inputValue('#input'), 'nihao');
    assert.equal(await page.isVisible('#send'), true);
    await page.fill('#input', '');
  });

  await check('Continue goes on from the end of an answer the token limit cut, as continue_final_message does; the context counts it once', async () => {
    await page.click('#new-chat');
    await setSettings(page, { 's-temperature': '0', 's-max_tokens': '5', 's-thinking': 'off' });
    await send(page, 'Hello there');
    const conv = (await stored(page)).at(-1);
    let a = conv.messages[1];
    assert.equal(a.finish, 'length', JSON.stringify(a));
    assert.ok(a.content && !a.reasoning, JSON.stringify(a));
    const partial = a.content;
    const sent = page.waitForRequest((r) => r.url().endsWith('/v1/chat/completions'));
    await page.click('#messages .msg.assistant >> button:has-text("Continue")');
    await waitIdle(page);
    const body = (await sent).postDataJSON();
    assert.deepEqual(body.messages, [...user('Hello there'), { role: 'assistant', content: partial }]);
    assert.deepEqual([body.continue_final_message, body.add_generation_prompt], [true, false]);
    const msgs = (await stored(page)).at(-1).messages;
    assert.equal(msgs.length, 2, 'the answer went on in place');
    a = msgs[1];
    const api = await chatDirect(srv, { ...body, stream: false, stream_options: undefined });
    assert.equal(a.content, partial + (api.choices[0].message.content ?? ''));
    assert.equal(a.stats.completion_tokens, 5 + api.usage.completion_tokens);
    // the context: the last request's prompt (the first part in it) and what it added, the first part once
    assert.match(await page.textContent('#context'),
                 new RegExp(`^context ${api.usage.prompt_tokens + api.usage.completion_tokens}( of \\d+)?$`));
    assert.ok(a.done && !a.stopped && !a.error);
    assert.equal(await page.locator('#messages .msg.assistant >> button:has-text("Continue")').count(),
                 api.choices[0].finish_reason === 'length' ? 1 : 0);
    await setSettings(page, { 's-thinking': '' });
  });

  await check('Attach adds text files to the message as fenced blocks; a file not UTF-8 text or too large is refused', async () => {
    await page.fill('#input', 'Summarize:');
    await page.setInputFiles('#attach-file', [
      { name: 'notes.md', mimeType: 'text/markdown', buffer: Buffer.from('a ``` b\nline2\n') },
      { name: 'blob.bin', mimeType: 'application/octet-stream', buffer: Buffer.from([0x89, 0x50, 0xff, 0x00]) },
      { name: 'huge.txt', mimeType: 'text/plain', buffer: Buffer.alloc((2 << 20) + 1, 97) },
      { name: 'README', mimeType: 'text/plain', buffer: Buffer.from('plain') }]);
    await page.waitForFunction(() => !document.getElementById('notice').hidden);   // (the files are read)
    const expected = 'Summarize:\n\nnotes.md:\n````md\na ``` b\nline2\n````\n\nREADME:\n```\nplain\n```\n';
    assert.equal(await page.inputValue('#input'), expected);
    assert.equal(await page.textContent('#notice'),
                 'Not attached: blob.bin (not UTF-8 text), huge.txt (larger than 2 MB)');
    // dropped on the composer
    await page.evaluate(() => {
      const dt = new DataTransfer();
      dt.items.add(new File(['dropped\n'], 'd.c', { type: 'text/plain' }));
      document.getElementById('input').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true,
                                                                            cancelable: true }));
    });
    await page.waitForFunction(() => document.getElementById('notice').hidden);   // (taken: the notice goes)
    const withDrop = expected + '\nd.c:\n```c\ndropped\n```\n';
    assert.equal(await page.inputValue('#input'), withDrop);
    await page.press('#input', 'Enter');
    await waitIdle(page);
    const msgs = (await stored(page)).at(-1).messages;
    assert.equal(msgs.at(-2).content, withDrop);
  });

  await check('Markdown: the tags it writes and no others', async () => {
    await page.evaluate(RENDER_CHECK);
    const out = await page.evaluate(() => {
      const render = window.renderChecked;
      window.__xss = 0;
      const bad = render('<img src=x onerror="window.__xss=1"> <script>window.__xss=2</script>\n' +
                         '[a](javascript:window.__xss=3) **<b>x</b>**');
      const code = render('Before\n```js\nconst a = "<b>" && 1;\n\n```\nafter');
      const colored = render('```python\ndef f(x):  # "<img src=x onerror=window.__xss=9>"\n' +
                             '    return """a\nb""" + 0x1F\n```\n```text\nint x = 1;\n```');
      const inline = render('**bold**, *it*, ~~gone~~ and `x<y` in [docs](https://example.com/a?b=1&c=2)');
      const blocks = render('# Title\n\n- a\n- b\n\n3. x\n4. y\n\n> quoted *words*\n\n---\nend');
      const open = render('```\nstill streaming <i>');
      const table = render('Here:\n| name | `a|b` | n |\n|:--|:-:|--:|\n| **x** | y \\| z | 3 | extra |\n' +
                           '| <script>window.__xss=4</script> |\n\nafter');
      const notTable = render('a | b\n---|---|---\nc | d');
      return {
        badTags: [...bad.querySelectorAll('*')].map((e) => e.tagName),
        badText: bad.textContent,
        codeLang: code.querySelector('.code-bar span').textContent,
        codeText: code.querySelector('pre code').textContent,
        spans: [...colored.querySelectorAll('pre code span')].map((e) => [e.className, e.textContent]),
        coloredText: [...colored.querySelectorAll('pre code')].map((e) => e.textContent),
        plainSpans: colored.querySelectorAll('pre code')[1].children.length,
        paras: [...code.querySelectorAll('p')].map((p) => p.textContent),
        strong: inline.querySelector('strong').textContent,
        em: inline.querySelector('em').textContent,
        del: inline.querySelector('del').textContent,
        code: inline.querySelector('code').textContent,
        href: inline.querySelector('a').getAttribute('href'),
        rel: inline.querySelector('a').rel,
        h1: blocks.querySelector('h1').textContent,
        ul: [...blocks.querySelectorAll('ul li')].map((e) => e.textContent),
        ol: [...blocks.querySelectorAll('ol li')].map((e) => e.textContent),
        olStart: blocks.querySelector('ol').getAttribute('start'),
        quote: blocks.querySelector('blockquote em').textContent,
        hr: blocks.querySelectorAll('hr').length,
        openCode: open.querySelector('pre code').textContent,
        tableHead: [...table.querySelectorAll('th')].map((e) => [e.textContent, e.className]),
        tableRows: [...table.querySelectorAll('tbody tr')].map((r) => [...r.children].map((e) => e.innerHTML)),
        tableParas: [...table.querySelectorAll('p')].map((p) => p.textContent),
        notTable: [notTable.querySelectorAll('table').length, notTable.textContent],
      };
    });
    await page.waitForTimeout(100);
    assert.equal(await page.evaluate(() => window.__xss), 0, 'text of an answer ran as script');
    await page.evaluate(() => document.getElementById('render-check').remove());
    assert.deepEqual(out.badTags, ['P', 'BR', 'STRONG']);
    assert.equal(out.badText,
                 '<img src=x onerror="window.__xss=1"> <script>window.__xss=2</script>[a](javascript:window.__xss=3) <b>x</b>');
    assert.equal(out.codeLang, 'js');
    assert.equal(out.codeText, 'const a = "<b>" && 1;\n');
    // a named language's colors: spans around its pieces, the text (what Copy
    // takes) unchanged; a language it does not know stays plain
    assert.deepEqual(out.spans, [['hl-keyword', 'def'], ['hl-comment', '# "<img src=x onerror=window.__xss=9>"'],
                                 ['hl-keyword', 'return'], ['hl-string', '"""a\nb"""'], ['hl-number', '0x1F']]);
    assert.deepEqual(out.coloredText, ['def f(x):  # "<img src=x onerror=window.__xss=9>"\n    return """a\nb""" + 0x1F',
                                       'int x = 1;']);
    assert.equal(out.plainSpans, 0);
    assert.deepEqual(out.paras, ['Before', 'after']);
    assert.deepEqual([out.strong, out.em, out.del, out.code], ['bold', 'it', 'gone', 'x<y']);
    assert.equal(out.href, 'https://example.com/a?b=1&c=2');
    assert.equal(out.rel, 'noopener noreferrer');
    assert.equal(out.h1, 'Title');
    assert.deepEqual(out.ul, ['a', 'b']);
    assert.deepEqual(out.ol, ['x', 'y']);
    assert.equal(out.olStart, '3');
    assert.equal(out.quote, 'words');
    assert.equal(out.hr, 1);
    assert.equal(out.openCode, 'still streaming <i>');
    // a table: alignment by colons, a pipe in a code span and an escaped one
    // stay in their cell, cells past the header's dropped, missing ones empty,
    // a cell's text escaped like the rest
    assert.deepEqual(out.tableHead, [['name', 'al-left'], ['a|b', 'al-center'], ['n', 'al-right']]);
    assert.deepEqual(out.tableRows, [['<strong>x</strong>', 'y | z', '3'],
                                     ['&lt;script&gt;window.__xss=4&lt;/script&gt;', '', '']]);
    assert.deepEqual(out.tableParas, ['Here:', 'after']);
    // a delimiter row of another count is no table
    assert.deepEqual(out.notTable, [0, 'a | b---|---|---c | d']);
  });

  await check('Markdown: emphasis around code and math, backslash escapes, lists nested and with code blocks, ' +
              'addresses with parentheses', async () => {
    await page.evaluate(RENDER_CHECK);
    const out = await page.evaluate(() => {
      const render = window.renderChecked, html = (md) => render(md).innerHTML;
      // a list as [text, [its nested list]] per item
      const shape = (list) => [...list.children].map((li) => {
        const sub = li.querySelector(':scope > ul, :scope > ol');
        const text = [...li.childNodes].filter((n) => n !== sub).map((n) => n.textContent).join('').trim();
        return sub ? [text, shape(sub)] : text;
      });
      const fenced = render('1. Install:\n    ```bash\n    pip install x\n      --user\n    ```\n2. Run it');
      const nested = render('- a\n  - b\n    - c\n  - b2\n- d\n\nafter');
      const numbered = render('1. one\n   - sub\n2. two\n\n3. three\n\n   more of three\n\n- other');
      return {
        boldCode: html('**Use `foo()` here**'),
        emMath: render('*see $x$ now*').querySelectorAll('em > math').length,
        both: html('***both*** and **`a` `b`**'),
        escapes: [render('\\*not em\\* \\`not code\\` \\\\ \\[a](https://x.org) 2 \\* 3 \\<b\\> \\q').innerHTML],
        escapedBackslash: html('\\\\`code`'),
        links: [...render('[Foo](https://en.wikipedia.org/wiki/Foo_(bar)) and [b](https://x.org/a) (note) ' +
                          '[c](https://x.org/`d`)').querySelectorAll('a')].map((a) => [a.textContent, a.getAttribute('href')]),
        tableRows: [...render('| a | b |\n|---|---|\n| x ` y | z |\n| `p|q` | r |\n| `s \\| t` | u |\n' +
                              '| \\`v | w\\` |').querySelectorAll('tbody tr')]
          .map((r) => [...r.children].map((e) => e.innerHTML)),
        fenced: [fenced.querySelectorAll('ol').length, fenced.querySelectorAll('ol > li').length,
                 fenced.querySelector('ol > li .code pre code') && fenced.querySelector('ol > li .code pre code').textContent,
                 fenced.querySelector('ol > li:first-child').firstChild.textContent,
                 fenced.querySelector('ol > li:last-child').textContent],
        nested: [shape(nested.querySelector('ul')), nested.querySelector(':scope > p').textContent],
        numbered: [...numbered.children].map((e) => [e.tagName, e.tagName === 'P' ? e.textContent : shape(e)]),
      };
    });
    await page.evaluate(() => document.getElementById('render-check').remove());
    assert.equal(out.boldCode, '<p><strong>Use <code>foo()</code> here</strong></p>');
    assert.equal(out.emMath, 1);
    assert.equal(out.both, '<p><em><strong>both</strong></em> and <strong><code>a</code> <code>b</code></strong></p>');
    assert.deepEqual(out.escapes, ['<p>*not em* `not code` \\ [a](https://x.org) 2 * 3 &lt;b&gt; \\q</p>']);
    assert.equal(out.escapedBackslash, '<p>\\<code>code</code></p>');
    assert.deepEqual(out.links, [['Foo', 'https://en.wikipedia.org/wiki/Foo_(bar)'], ['b', 'https://x.org/a']]);
    // a lone backtick is text; a code span keeps its pipe
    // (GitHub's: an escaped pipe in a code span is a pipe; an escaped backtick opens none)
    assert.deepEqual(out.tableRows, [['x ` y', 'z'], ['<code>p|q</code>', 'r'], ['<code>s | t</code>', 'u'],
                                     ['`v', 'w`']]);
    assert.deepEqual(out.fenced, [1, 2, 'pip install x\n  --user', 'Install:', 'Run it']);
    assert.deepEqual(out.nested, [[['a', [['b', ['c']], 'b2']], 'd'], 'after']);
    assert.deepEqual(out.numbered, [['OL', [['one', ['sub']], 'two', 'threemore of three']], ['UL', ['other']]]);
  });

  // (run in the page) each source's HTML, as renderMarkdown writes it
  const rendered = async (sources) => {
    await page.evaluate(RENDER_CHECK);
    const out = await page.evaluate((list) => list.map((md) => window.renderChecked(md).innerHTML), sources);
    await page.evaluate(() => document.getElementById('render-check').remove());
    return out;
  };
  await check('Markdown: _ and __ are emphasis outside words only (snake_case_names stay as written)', async () => {
    assert.deepEqual(await rendered([
      '_it_, __bold__, ___both___ and (_in parens_); snake_case_names, file_name_here, x_1 and _foo_bar_',
      '__init__ and foo.__init__() but __foo__bar and a ______ blank',
      '_über_ straße_x_y 日本_語_です \\_a\\_ *and* **stars**']), [
      '<p><em>it</em>, <strong>bold</strong>, <em><strong>both</strong></em> and (<em>in parens</em>); ' +
      'snake_case_names, file_name_here, x_1 and <em>foo_bar</em></p>',
      // (CommonMark's: __init__ alone is bold "init"; in backticks it is code)
      '<p><strong>init</strong> and foo.<strong>init</strong>() but __foo__bar and a ______ blank</p>',
      '<p><em>über</em> straße_x_y 日本_語_です _a_ <em>and</em> <strong>stars</strong></p>']);
  });
  await check('Markdown: a code span closes at the next run of as many backticks as opened it', async () => {
    const spans = await rendered(['``a `b` c``', '`` `x` ``', '` a ` and `  `', '``x` y', 'x `` y `` z ` w',
                                  '`a\\`b`', '\\``x`']);
    const [table] = await rendered(['| a | b |\n|---|---|\n| ``p|q`` | r |']);
    // one space each side goes when both are there; a run no run of its
    // length closes is text; inside a span a backslash is text
    assert.deepEqual(spans, ['<p><code>a `b` c</code></p>', '<p><code>`x`</code></p>',
                             '<p><code>a</code> and <code>  </code></p>', '<p>``x` y</p>',
                             '<p>x <code>y</code> z ` w</p>', '<p><code>a\\</code>b`</p>', '<p>`<code>x</code></p>']);
    assert.match(table, /<tbody><tr><td><code>p\|q<\/code><\/td><td>r<\/td><\/tr><\/tbody>/);   // (its pipe stays in its cell)
  });
  await check('Markdown: a link\'s address is taken as written, with no emphasis in it', async () => {
    assert.deepEqual(await rendered(['[a](https://x.org/**y**) [b](https://x.org/_y_) z_ ' +
                                     '[**c** _d_](https://x.org/a_b_c_) _e_']), [
      '<p><a href="https://x.org/**y**" target="_blank" rel="noopener noreferrer">a</a> ' +
      '<a href="https://x.org/_y_" target="_blank" rel="noopener noreferrer">b</a> z_ ' +
      '<a href="https://x.org/a_b_c_" target="_blank" rel="noopener noreferrer"><strong>c</strong> <em>d</em></a> ' +
      '<em>e</em></p>']);
  });
  await check('TeX math: \\( and \\[ open math; after an escaped backslash (\\\\( \\\\[) or in code they are text', async () => {
    // (docs/server.md: \( and \[ are math as models write it, though
    // CommonMark would read them as escaped brackets)
    const [text, block, inline, afterBackslash, code] = await rendered(
      ['\\\\(x\\) and \\\\[y\\]', '\\\\[y\\]', '\\(x\\)', '\\\\\\(x\\)', '`\\(x\\)`']);
    assert.deepEqual([text, block, code], ['<p>\\(x) and \\[y]</p>', '<p>\\[y]</p>', '<p><code>\\(x\\)</code></p>']);
    assert.match(inline, /^<p><math>.*<annotation encoding="application\/x-tex">x<\/annotation><\/semantics><\/math><\/p>$/);
    assert.match(afterBackslash, /^<p>\\<math>/);
  });

  await check('the token count is the usage the server sends; without it (Stop) the count is said to be the least', async () => {
    await page.evaluate(STUB_ANSWERS);
    await page.click('#new-chat');
    const stats = () => page.textContent('#messages .msg.assistant .stats');
    // three events for seven tokens (a piece may hold several: a character's
    // bytes, a stop string's start): the usage's seven
    await sendStubbed(page, 'Count');
    for (const piece of ['日本', '語', 'です']) await say(page, { content: piece });
    await say(page, {}, 'stop');
    await page.evaluate(() => window.stream.usage({ prompt_tokens: 4, completion_tokens: 7, total_tokens: 11 }));
    await page.evaluate(() => window.stream.end());
    await waitIdle(page);
    let a = (await stored(page)).find((c) => c.title === 'Count').messages[1];
    assert.deepEqual([a.stats.completion_tokens, a.stats.tokens_at_least], [7, undefined]);
    assert.match(await stats(), /^7 tokens, \d+\.\d\d tokens\/s · prompt 4 tokens/);
    // stopped: no usage comes; the events that came are the least the tokens can be
    await page.click('#new-chat');
    await sendStubbed(page, 'Stopped');
    for (const piece of ['日本', '語', 'です']) await say(page, { content: piece });
    await page.waitForFunction(() => document.querySelector('#messages .msg.assistant .body').textContent === '日本語です');
    await page.click('#stop');
    await waitIdle(page);
    a = (await stored(page)).find((c) => c.title === 'Stopped').messages[1];
    assert.deepEqual([a.stats.completion_tokens, a.stats.tokens_at_least, a.stopped], [3, true, true]);
    assert.match(await stats(), /^at least 3 tokens, \d+\.\d\d tokens\/s or more · stopped$/);
    // kept so across a reload (the stored stats are read as an import's are)
    await page.reload();
    await page.click('#conversations li button.open:has-text("Stopped")');
    assert.match(await stats(), /^at least 3 tokens/);
    await page.evaluate(STUB_ANSWERS);
    // Continue adds a counted part to it: still the least
    await page.click('#messages .msg.assistant >> button:has-text("Continue")');
    await page.waitForFunction(() => window.stream);
    await say(page, { content: '!' }, 'stop');
    await page.evaluate(() => window.stream.usage({ prompt_tokens: 9, completion_tokens: 2, total_tokens: 11 }));
    await page.evaluate(() => window.stream.end());
    await waitIdle(page);
    a = (await stored(page)).find((c) => c.title === 'Stopped').messages[1];
    assert.deepEqual([a.stats.completion_tokens, a.stats.tokens_at_least], [5, true]);
    assert.match(await stats(), /^at least 5 tokens/);
    await page.evaluate(UNSTUB_ANSWERS);
  });

  await check('TeX math: MathML from the tables, dollars that are money left as text, nothing else as markup', async () => {
    await page.evaluate(RENDER_CHECK);
    const out = await page.evaluate(() => {
      const render = window.renderChecked;
      const texts = (d, sel) => [...d.querySelectorAll(sel)].map((e) => e.textContent);
      window.__xss = 0;
      const inline = render('Euler: $e^{i\\pi}+1=0$; costs $5 and $10, \\$3 too; `$x$` is code; ' +
                            '\\(\\mathbb{R}^n\\) and $$\\frac{a}{b}$$ end');
      const block = render('Before\n\\[\nA = \\begin{pmatrix} 1 & x_1 \\\\ 2 & \\alpha \\end{pmatrix}\n\\]\nafter');
      const sums = render('$$\\sum_{k=1}^{n} k^2 \\quad \\lim_{x \\to 0} \\sin x \\quad f\'(x)$$');
      const aligned = render('$$\\begin{aligned} a &= b \\\\ &\\le c \\end{aligned}$$');
      const array = render('$$\\begin{array}{l|r} 10 & x \\\\ \\hline 1 & yz \\end{array}$$');
      const unknown = render('$\\frobnicate{x} + \\sqrt[3]{y}$');
      const open = render('Then\n$$\n\\frac{1}{');
      const bad = render('$\\text{<img src=x onerror="window.__xss=5">}$ $\\color{red" onload="window.__xss=6}{x}$ ' +
                         '$\\textcolor{#f00}{y}$ $<script>window.__xss=7</script>$ $\\operatorname{<b>o</b>}(n)$');
      const deep = render('$' + '{'.repeat(50000) + 'x$');
      const parts = (d) => [...d.querySelectorAll('math')].map((m) => m.getAttribute('display'));
      return {
        inlineMath: parts(inline),
        inlineText: inline.querySelector('p').firstChild.textContent,
        paraText: [...inline.querySelector('p').childNodes].filter((n) => n.nodeType === 3).map((n) => n.textContent),
        euler: [inline.querySelector('math msup > mi').textContent, texts(inline.querySelector('math msup > mrow'), 'mi, mo')],
        code: inline.querySelector('code').textContent,
        rn: inline.querySelectorAll('math')[1].querySelector('msup > mrow > mi').textContent,
        frac: texts(inline.querySelector('math[display=block] mfrac'), ':scope > *'),
        annotation: texts(inline, 'annotation'),
        blockParents: [...block.querySelectorAll('math')].map((m) => m.parentElement === block),
        blockParas: texts(block, 'p'),
        matrix: [...block.querySelectorAll('mtr')].map((r) => [...r.children].map((c) => c.textContent)),
        fences: texts(block, 'mtable ~ mo, mo:has(+ mtable)'),
        sum: [sums.querySelector('munderover > mo').textContent,
              sums.querySelector('munderover > mo').getAttribute('movablelimits'),
              texts(sums.querySelector('munderover'), ':scope > *')],
        lim: texts(sums.querySelector('munder'), ':scope > *'),
        prime: sums.querySelector('mo[lspace="0"][rspace="0"]').textContent,
        aligned: [...aligned.querySelectorAll('mtd')].map((c) => [c.textContent, c.getAttribute('style')]),
        array: [...array.querySelectorAll('mtd')].map((c) => [c.textContent, c.getAttribute('style')]),
        unknown: [texts(unknown, 'mtext.tex-unknown'), texts(unknown, 'mroot > *')],
        openSource: [texts(open, 'p'), texts(open, '.math-source'), open.querySelectorAll('math').length],
        badTags: [...new Set([...bad.querySelectorAll('*')].map((e) => e.tagName.toLowerCase()))].sort(),
        badTexts: [texts(bad, 'mtext'), bad.querySelectorAll('math')[4].querySelector('mi').textContent,
                   bad.querySelectorAll('math annotation')[3].textContent],
        colors: [...bad.querySelectorAll('[mathcolor]')].map((e) => e.getAttribute('mathcolor')),
        deep: [deep.querySelectorAll('math').length, deep.querySelector('code').textContent.length],
      };
    });
    await page.waitForTimeout(100);
    assert.equal(await page.evaluate(() => window.__xss), 0, 'text of an answer ran as script');
    await page.evaluate(() => document.getElementById('render-check').remove());
    assert.deepEqual(out.inlineMath, [null, null, 'block']);
    assert.equal(out.inlineText, 'Euler: ');
    assert.deepEqual(out.paraText, ['Euler: ', '; costs $5 and $10, $3 too; ', ' is code; ', ' and ', ' end']);
    assert.deepEqual(out.euler, ['e', ['i', 'π']]);
    assert.equal(out.code, '$x$');
    assert.equal(out.rn, 'ℝ');
    assert.deepEqual(out.frac, ['a', 'b']);
    assert.deepEqual(out.annotation, ['e^{i\\pi}+1=0', '\\mathbb{R}^n', '\\frac{a}{b}']);
    assert.deepEqual(out.blockParents, [true]);
    assert.deepEqual(out.blockParas, ['Before', 'after']);
    assert.deepEqual(out.matrix, [['1', 'x1'], ['2', 'α']]);
    assert.deepEqual(out.fences, ['(', ')']);
    assert.deepEqual(out.sum, ['∑', 'true', ['∑', 'k=1', 'n']]);
    assert.deepEqual(out.lim, ['lim', 'x→0']);
    assert.equal(out.prime, '′');
    assert.deepEqual(out.aligned, [['a', 'text-align:right;padding-right:0'], ['=b', 'text-align:left;padding-left:0'],
                                   ['', 'text-align:right;padding-right:0'], ['≤c', 'text-align:left;padding-left:0']]);
    assert.deepEqual(out.array, [['10', 'text-align:left'], ['x', 'text-align:right'],
                                 ['1', 'text-align:left'], ['yz', 'text-align:right']]);
    assert.deepEqual(out.unknown, [['\\frobnicate'], ['y', '3']]);
    assert.deepEqual(out.openSource, [['Then'], ['$$\n\\frac{1}{'], 0]);
    assert.deepEqual(out.badTags, ['annotation', 'math', 'mi', 'mn', 'mo', 'mrow', 'mstyle', 'msub', 'mtext', 'p',
                                   'semantics']);
    assert.deepEqual(out.badTexts, [['<img\u00a0src=x\u00a0onerror="window.__xss=5">'], '<b>o</b>',
                                    '<script>window.__xss=7</script>']);
    assert.deepEqual(out.colors, ['#f00']);
    // groups nested past the script's stack: the source as code, the page unharmed
    assert.deepEqual(out.deep, [0, 50001]);
  });

  await check('TeX math: any source ends, and writes only MathML tags and attributes from the tables', async () => {
    const out = await page.evaluate(() => {
      // random sources of TeX's pieces, unbalanced and misplaced as a model cut
      // short might write them (a fixed generator: the same sources every run)
      const pieces = ['\\frac', '\\sqrt', '[', ']', '{', '}', '^', '_', '&', '\\\\', '\\left(', '\\right)',
                      '\\middle|', '\\begin{pmatrix}', '\\end{pmatrix}', '\\begin{aligned}', '\\end{cases}',
                      '\\text{', '\\color{', '#f00', '\\mathbb', 'x', '1', ' ', '\\alpha', '\\sum', "'", '\\',
                      '\\not', '\\operatorname*', '\\limits', '\\big', '.', '\\displaystyle', '\\bf', '<', '"', '$'];
      let seed = 12345;
      const next = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
      const tags = new Set(['math', 'semantics', 'annotation', 'mrow', 'mi', 'mn', 'mo', 'msup', 'msub', 'msubsup',
                            'munder', 'mover', 'munderover', 'mfrac', 'msqrt', 'mroot', 'mtext', 'mspace', 'mstyle',
                            'mtable', 'mtr', 'mtd', 'mphantom',
                            // (and what the Markdown around it writes)
                            'p', 'br', 'div', 'code', 'em', 'strong', 'pre', 'span', 'button']);
      const attributes = new Set(['display', 'encoding', 'mathvariant', 'stretchy', 'movablelimits', 'lspace',
                                  'rspace', 'largeop', 'width', 'accent', 'accentunder', 'linethickness', 'minsize',
                                  'maxsize', 'fence', 'mathcolor', 'displaystyle', 'style', 'class']);
      const seen = { math: 0, strange: [] };
      for (let n = 0; n < 400; n++) {
        let src = '';
        for (let k = 0, len = 1 + Math.floor(next() * 30); k < len; k++) src += pieces[Math.floor(next() * pieces.length)];
        const d = document.createElement('div');
        d.innerHTML = renderMarkdown(n % 2 ? '$$' + src + '$$' : 'a $' + src.trim() + 'y$ b');
        seen.math += d.querySelectorAll('math').length;
        for (const e of d.querySelectorAll('*')) {
          if (!tags.has(e.tagName.toLowerCase())) seen.strange.push(e.tagName + ' in ' + src);
          for (const a of e.attributes)
            if (!attributes.has(a.name)) seen.strange.push(a.name + ' in ' + src);
        }
      }
      return seen;
    });
    assert.deepEqual(out.strange, []);
    assert.ok(out.math > 300, `${out.math} sources drawn as math`);
  });

  await check('the search lists the conversations whose title or messages hold every word', async () => {
    const all = await page.locator('#conversations li').count();
    assert.ok(all >= 3, `${all} conversations`);
    await page.fill('#search', 'SAMPLERS');
    assert.deepEqual(await page.locator('#conversations li button.open').allTextContents(), ['Samplers']);
    await page.fill('#search', 'notes.md summarize');    // (words of a message's text, any case)
    assert.equal(await page.locator('#conversations li').count(), 1);
    await page.fill('#search', 'no such words here');
    assert.equal(await page.locator('#conversations li').count(), 0);
    await page.fill('#search', '');
    assert.equal(await page.locator('#conversations li').count(), all);
  });

  await check('Export downloads a conversation that Import adds back, named by its title in any script; a bad file is refused', async () => {
    await page.dblclick('#conversations li.current button.open');
    await page.fill('#conversations li.current input.rename', '日本語の会話 #2');
    await page.press('#conversations li.current input.rename', 'Enter');
    const before = await stored(page), shownId = await page.evaluate(() => currentId);
    const shown = before.find((c) => c.id === shownId);
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#export')]);
    assert.equal(download.suggestedFilename(), '日本語の会話_2.json');
    const file = await download.path();
    const exported = JSON.parse(readFileSync(file, 'utf8'));
    assert.deepEqual(exported.messages, shown.messages);
    await page.setInputFiles('#import-file', file);
    // (the page reads the file after the change event)
    await page.waitForFunction((n) => JSON.parse(localStorage.getItem('moetier.conversations')).length === n,
      before.length + 1);
    const after = await stored(page);
    assert.equal(after.length, before.length + 1);
    const added = after[after.length - 1];
    assert.notEqual(added.id, shown.id);
    assert.equal(added.title, shown.title);
    assert.deepEqual(added.messages, shown.messages.map((m) => (m.role === 'assistant' ? { ...m, done: true } : m)));
    await page.setInputFiles('#import-file', { name: 'bad.json', mimeType: 'application/json',
      buffer: Buffer.from(JSON.stringify({ messages: [{ role: 'tool', content: 'x' }] })) });
    await page.waitForSelector('#notice:not([hidden])');
    assert.match(await page.textContent('#notice'), /Not imported: message 0 .*bad\.json/);
    await page.setInputFiles('#import-file', { name: 'torn.json', mimeType: 'application/json',
      buffer: Buffer.from('{"messages": [') });
    await page.waitForFunction(() => /not JSON/.test(document.getElementById('notice').textContent));
    assert.equal((await stored(page)).length, after.length, 'a refused file changes nothing');
  });

  await check('Delete removes a conversation from the list and the browser', async () => {
    const before = (await stored(page)).length;
    page.once('dialog', (d) => d.accept());
    await page.click('#conversations li.current button.link');
    assert.equal((await stored(page)).length, before - 1);
    assert.equal(await page.locator('#conversations li').count(), before - 1);
  });

  await check('the Thinking panel opens and closes while the answer streams, and stays as the user left it', async () => {
    await page.evaluate(STUB_ANSWERS);
    await page.click('#new-chat');
    await sendStubbed(page, 'Think');
    const isOpen = () => page.evaluate(() => document.querySelector('#messages .msg.assistant details.reasoning').open);
    const shows = (sel, text) => page.waitForFunction(([s, t]) =>
      document.querySelector('#messages .msg.assistant ' + s).textContent.includes(t), [sel, text]);
    await say(page, { reasoning_content: 'Let me see' });
    await page.waitForSelector('#messages .msg.assistant details.reasoning[open]');   // (open while it thinks)
    await page.click('#messages .msg.assistant summary');
    await say(page, { reasoning_content: ', more' });
    await shows('details', 'more');
    assert.equal(await isOpen(), false, 'the panel closed by the user opened again');
    await page.click('#messages .msg.assistant summary');
    await say(page, { content: 'Answer' });
    await shows('.body', 'Answer');
    assert.equal(await isOpen(), true, 'the panel opened by the user closed at the answer');
    await say(page, {}, 'stop');
    await page.evaluate(() => window.stream.end());
    await waitIdle(page);
    assert.equal(await isOpen(), true);
  });

  await check('the view follows the end of an answer only where the reader is at the end; Edit keeps it in place', async () => {
    await page.evaluate(STUB_ANSWERS);
    const box = (f) => page.evaluate(f);
    const lines = Array.from({ length: 150 }, (_, i) => `line ${i}`).join('\n\n');
    await page.click('#new-chat');
    await sendStubbed(page, 'Tall');
    await say(page, { content: lines }, 'stop');
    await page.evaluate(() => window.stream.end());
    await waitIdle(page);
    const { top, bottom } = await box(() => {
      const b = document.getElementById('messages');
      return { top: b.scrollTop, bottom: b.scrollHeight - b.clientHeight };
    });
    assert.ok(bottom > 1000 && top === bottom, `followed to the end: ${top} of ${bottom}`);
    // scrolled up to the question: Edit and Cancel leave the view there
    await box(() => { document.getElementById('messages').scrollTop = 0; });
    await page.click('#messages .msg.user >> button:has-text("Edit")');
    assert.equal(await box(() => document.getElementById('messages').scrollTop), 0, 'Edit scrolled the view');
    await page.click('#messages .editor button:has-text("Cancel")');
    assert.equal(await box(() => document.getElementById('messages').scrollTop), 0, 'Cancel scrolled the view');
    // a new question goes to the end; a reader who scrolls up while it comes stays where they are
    await sendStubbed(page, 'More');
    await page.waitForFunction(() => { const b = document.getElementById('messages');
      return b.scrollHeight - b.scrollTop - b.clientHeight < 40; });
    await say(page, { content: 'start\n\n' });
    await box(() => { document.getElementById('messages').scrollTop = 100; });
    await say(page, { content: lines }, 'stop');
    await page.evaluate(() => window.stream.end());
    await waitIdle(page);
    assert.equal(await box(() => document.getElementById('messages').scrollTop), 100, 'the end of the answer moved the view');
  });

  await check('an answer stopped before its first token is not sent back to the model', async () => {
    await page.evaluate(STUB_ANSWERS);
    await page.click('#new-chat');
    await sendStubbed(page, 'Quiet');
    await page.click('#stop');
    await waitIdle(page);
    await sendStubbed(page, 'Again');
    assert.deepEqual(await page.evaluate(() => window.stream.body.messages), [...user('Quiet'), ...user('Again')]);
    await page.evaluate(() => window.stream.end());
    await waitIdle(page);
  });

  await check('an open editor and a title being renamed keep what was typed when the page is drawn again', async () => {
    await page.evaluate(STUB_ANSWERS);
    await page.click('#new-chat');
    await sendStubbed(page, 'Draft here');
    await say(page, { content: 'ok' }, 'stop');
    await page.evaluate(() => window.stream.end());
    await waitIdle(page);
    await page.click('#messages .msg.user >> button:has-text("Edit")');
    await page.fill('#messages .editor textarea', 'typed, not sent');
    // an answer in another conversation (each end of it draws the page again)
    await page.click('#new-chat');
    await sendStubbed(page, 'Elsewhere');
    await page.dblclick('#conversations li.current button.open');
    await page.fill('#conversations li.current input.rename', 'Renamed');
    await say(page, { content: 'done' }, 'stop');
    await page.evaluate(() => window.stream.end());
    await waitIdle(page);
    assert.equal(await page.inputValue('#conversations li.current input.rename'), 'Renamed');
    assert.ok(await page.evaluate(() => document.activeElement.matches('input.rename')), 'the title field lost the focus');
    await page.keyboard.type('!');
    await page.keyboard.press('Enter');
    assert.equal((await stored(page)).find((c) => c.messages[0].content === 'Elsewhere').title, 'Renamed!');
    await page.click('#conversations li button.open:has-text("Draft here")');
    assert.equal(await page.inputValue('#messages .editor textarea'), 'typed, not sent');
    await page.click('#messages .editor button:has-text("Cancel")');
    await page.evaluate(UNSTUB_ANSWERS);
  });

  await check('the page ran without script errors', async () => {
    assert.deepEqual(errors, []);
  });
  await context.close();
  await stopServer(srv);
}

async function keyedServer() {
  const srv = await startServer(['--api-key', 'sesame']);
  const { page, context } = await openPage(srv);
  await check('with --api-key the page loads, asks for the key, and works once it is set', async () => {
    await page.waitForSelector('#notice:not([hidden])');
    assert.match(await page.textContent('#notice'), /API key/);
    await send(page, 'Hello there');
    assert.match((await stored(page))[0].messages[1].error, /API key/);
    await setSettings(page, { 's-api-key': 'sesame', 's-temperature': '0', 's-max_tokens': '4' });
    await page.waitForFunction(() => document.getElementById('model').textContent === 'tiny');
    assert.equal(await page.isHidden('#notice'), true);
    await page.click('#messages .msg.assistant >> button:has-text("Regenerate")');
    await waitIdle(page);
    const a = (await stored(page))[0].messages[1];
    assert.ok(!a.error, a.error);
    sameAnswer(a, await chatDirect(srv, { messages: user('Hello there'), temperature: 0, max_tokens: 4 }, 'sesame'));
  });
  await context.close();
  await stopServer(srv);
}

// a long prompt read in small chunks: the page shows how far the server is
async function progressServer() {
  const srv = await startServer(['--chunk', '32', '-c', '8192']);
  const { page, context, errors } = await openPage(srv);
  await check('while a long prompt is read, the page shows how far (the server\'s prompt_progress)', async () => {
    const asked = [];
    page.on('request', (r) => { if (r.url().endsWith('/v1/chat/completions')) asked.push(JSON.parse(r.postData())); });
    await setSettings(page, { 's-temperature': '0', 's-max_tokens': '2' });
    await page.fill('#input', Array.from({ length: 1500 }, (_, i) => `w${i}`).join(' '));
    await page.press('#input', 'Enter');
    await page.waitForFunction(() => /^reading the prompt: \d+ of \d+ tokens \(\d+ %\)(, about \d+ s left)?$/
      .test(document.querySelector('#messages .msg.assistant .stats').textContent));
    await waitIdle(page);
    assert.equal(asked[0].return_progress, true);
    const a = (await stored(page))[0].messages[1];
    assert.ok(!a.error && a.stats.prompt_tokens > 3000, JSON.stringify(a.stats));
    assert.doesNotMatch(await page.textContent('#messages .msg.assistant .stats'), /reading the prompt/);
    assert.deepEqual(errors, []);
  });
  await context.close();
  await stopServer(srv);
}

// what the model's text, another program or a proxy may hand the page
async function hostileInput() {
  const srv = await startServer([], { MOETIER_SERVE_FORCE_TEXT: FORCED });
  const { page, context, errors } = await openPage(srv);
  await check('a tool call the model makes is shown, kept, and sent back with the conversation', async () => {
    await send(page, 'Weather?');
    const a = (await stored(page))[0].messages[1];
    const call = { id: 'functions.get_weather:0', type: 'function',
                   function: { name: 'get_weather', arguments: '{"city": "Paris"}' } };
    assert.deepEqual([a.content, a.finish, a.tool_calls], ['Let me check.', 'tool_calls', [call]]);
    assert.equal(await page.textContent('#messages .msg.assistant .tool-call'), 'called get_weather({"city": "Paris"})');
    assert.match(await page.textContent('#messages .msg.assistant .stats'), /ended with a tool call/);
    const sent = page.waitForRequest((r) => r.url().endsWith('/v1/chat/completions'));
    await send(page, 'And?');
    assert.deepEqual((await sent).postDataJSON().messages[1].tool_calls, [call]);
  });
  await check('names of Object\'s own, deep quotes and emphasis never closed are text', async () => {
    await page.evaluate(RENDER_CHECK);
    const out = await page.evaluate(() => {
      const render = window.renderChecked;
      const fences = ['constructor', '__proto__', 'toString'].map((l) => render('```' + l + '\nx = 1\n```'));
      const deep = render('>'.repeat(5000) + ' hi');
      const open = render('**a '.repeat(20000) + '\n' + '~~b '.repeat(20000));
      const triple = render('***c '.repeat(20000));
      const tex = render('$\\toString x$ and $a \\constructor b$');
      // lines whose patterns once cost the cube or the square of their length
      // (a heading's spaces, a table delimiter's, links never closed): drawn at once
      const heads = render('# a' + ' '.repeat(20000) + 'b\n## Title ##\n### C#\n#### #');
      const table = render('a|b\n' + ' '.repeat(50000) + '|x\n' + '['.repeat(50000) + '\n' +
                           '[a](https://'.repeat(20000) + '\n[a](https://' + '(b'.repeat(20000) + '\n' +
                           '| `x | y |\n|---|---|\n' + '| ` |'.repeat(20000));
      // _ runs never closed, words with _ inside, backtick runs of 300 lengths
      // none closes, spans of two closed by the next two, escaped backticks:
      // each line at once (the patterns bounded, each length's closers
      // searched once)
      const t0 = performance.now();
      const unders = render('_a '.repeat(20000) + '\n' + '__a '.repeat(20000) + '\n' + '___a '.repeat(20000) + '\n' +
                            'a_b_'.repeat(20000) + '\n' + '_a_b'.repeat(20000));
      const ticks = render(Array.from({ length: 300 }, (_, i) => '`'.repeat(i + 1)).join('x') + '\n' +
                           '``x`` y'.repeat(20000) + '\n' + '\\`'.repeat(20000) + '`');
      const newSeconds = (performance.now() - t0) / 1000;
      return { fences: fences.map((f) => [f.querySelector('pre code').textContent, f.querySelectorAll('pre code span').length]),
               unders: [unders.querySelectorAll('em, strong').length, unders.textContent.length],
               ticks: [ticks.querySelectorAll('code').length, ticks.textContent.length], newSeconds,
               quotes: deep.querySelectorAll('blockquote').length, deepText: deep.textContent.trim(),
               strong: open.querySelectorAll('strong, del').length, openText: open.textContent.length,
               triple: triple.querySelectorAll('p').length,
               tex: tex.textContent,
               heads: [...heads.querySelectorAll('h1, h2, h3, h4')].map((h) => [h.tagName, h.textContent.length < 30 ?
                 h.textContent : h.textContent.slice(0, 2) + h.textContent.slice(-2)]),
               tables: [table.querySelectorAll('table').length, table.querySelectorAll('a').length],
               // lists nested 500 deep, and a list item's fence never closed: 32 lists deep, the rest text
               lists: (() => {
                 const d = render(Array.from({ length: 500 }, (_, i) => ' '.repeat(2 * i) + '- x').join('\n') +
                                  '\n- ```\n' + '- y\n'.repeat(20000));
                 return [d.querySelectorAll('ul').length, d.querySelectorAll('pre').length,
                         d.textContent.split('x').length - 1, d.querySelector('pre').textContent.split('y').length - 1];
               })() };
    });
    await page.evaluate(() => document.getElementById('render-check').remove());
    assert.deepEqual(out.fences, [['x = 1', 0], ['x = 1', 0], ['x = 1', 0]]);
    assert.equal(out.quotes, 33);
    assert.equal(out.deepText, '>'.repeat(5000 - 33) + ' hi');
    assert.equal(out.strong, 0);
    assert.equal(out.openText, 2 * 4 * 20000);
    assert.equal(out.triple, 1);
    assert.match(out.tex, /toString/);
    assert.match(out.tex, /constructor/);
    assert.deepEqual(out.heads, [['H1', 'a  b'], ['H2', 'Title'], ['H3', 'C#'], ['H4', '']]);
    assert.deepEqual(out.tables, [1, 0]);
    assert.deepEqual(out.lists, [33, 1, 500, 20000]);
    assert.deepEqual(out.unders, [0, 3 * 20000 + 4 * 20000 + 5 * 20000 + 4 * 20000 + 4 * 20000]);
    assert.deepEqual(out.ticks, [20000, 300 * 301 / 2 + 299 + 3 * 20000 + 20000 + 1]);
    assert.ok(out.newSeconds < 5, `the _ and backtick lines took ${out.newSeconds} s`);
  });
  await check('an answer a proxy ends without its end is said to be cut off (CRLF framing; an unended last event is none)', async () => {
    await page.route('**/v1/chat/completions', (route) => route.fulfill({ status: 200, contentType: 'text/event-stream',
      body: 'data: {"choices":[{"index":0,"delta":{"content":"par"}}]}\r\n\r\n' +
            'data: {"choices":[{"index":0,"delta":{"content":"tial"}}]}' }));
    await page.click('#new-chat');
    await send(page, 'Cut?');
    await page.unroute('**/v1/chat/completions');
    const a = (await stored(page)).find((c) => c.title === 'Cut?').messages[1];
    assert.equal(a.content, 'par');
    assert.match(a.error, /cut off/);
  });
  await check('two tabs answering at once keep both answers', async () => {
    const other = await context.newPage();
    await other.goto(srv.url + '/');
    await other.route('**/v1/chat/completions', async (route) => {
      await new Promise((r) => setTimeout(r, 1500));
      await route.fulfill({ status: 200, contentType: 'text/event-stream',
        body: 'data: {"choices":[{"index":0,"delta":{"content":"from b"},"finish_reason":"stop"}]}\n\ndata: [DONE]\n\n' });
    });
    await other.click('#new-chat');
    await other.fill('#input', 'Tab B');
    await other.press('#input', 'Enter');
    await page.click('#new-chat');
    await send(page, 'Tab A');              // done while the other tab's answer comes
    await waitIdle(other);
    await page.waitForFunction(() => JSON.parse(localStorage.getItem('moetier.conversations'))
      .some((c) => c.title === 'Tab B' && c.messages[1].done));
    const convs = await stored(page), a = convs.find((c) => c.title === 'Tab A').messages[1];
    assert.deepEqual([a.content, !!a.done, !!a.stopped], ['Let me check.', true, false]);
    assert.equal(convs.find((c) => c.title === 'Tab B').messages[1].content, 'from b');
    // a message being edited stays in its editor, with what was typed, while the other tab stores
    await page.click('#messages .msg.user >> button:has-text("Edit")');
    await page.fill('#messages .editor textarea', 'changed');
    await other.evaluate(() => { conversations.find((c) => c.title === 'Tab B').title = 'Tab B!'; store(); });
    await page.waitForFunction(() => [...document.querySelectorAll('#conversations li')]
      .some((li) => li.textContent.includes('Tab B!')));
    assert.equal(await page.inputValue('#messages .editor textarea'), 'changed');
    await page.click('#messages .editor button:has-text("Cancel")');
    // a conversation deleted in the other tab while this one answers in it: stopped and gone
    await page.route('**/v1/chat/completions', async (route) => {
      await new Promise((r) => setTimeout(r, 3000));
      await route.fulfill({ status: 200, contentType: 'text/event-stream', body: 'data: [DONE]\n\n' }).catch(() => {});
    });
    await page.click('#new-chat');
    await page.fill('#input', 'Doomed');
    await page.press('#input', 'Enter');
    await other.waitForFunction(() => { conversations = storedConversations();
      return conversations.some((c) => c.title === 'Doomed'); });
    await other.evaluate(() => { conversations = conversations.filter((c) => c.title !== 'Doomed'); store(); });
    await waitIdle(page);
    await page.unroute('**/v1/chat/completions');
    await page.waitForTimeout(300);
    assert.ok(!(await stored(page)).some((c) => c.title === 'Doomed'), 'the deleted conversation came back');
    await other.close();
  });
  await check('an import with stats of other types keeps what it can; the page goes on', async () => {
    const n = (await stored(page)).length;
    await page.setInputFiles('#import-file', { name: 'odd.json', mimeType: 'application/json',
      buffer: Buffer.from(JSON.stringify({ title: 'odd', messages: [{ role: 'user', content: 'q' },
        { role: 'assistant', content: 'a', reasoning: 'r', finish: 7,
          stats: { reasoning_seconds: '3', prompt_tokens: 5, first_token_seconds: 'x' } }] })) });
    await page.waitForFunction((k) => JSON.parse(localStorage.getItem('moetier.conversations')).length === k, n + 1);
    const a = (await stored(page)).find((c) => c.title === 'odd').messages[1];
    assert.deepEqual([a.stats, a.finish], [{ prompt_tokens: 5 }, undefined]);
    assert.match(await page.textContent('#messages .msg.assistant .stats'), /prompt 5 tokens/);
  });
  await check('a damaged stored conversation is left out, not the page, and kept as it was', async () => {
    await page.evaluate(() => localStorage.setItem('moetier.conversations', JSON.stringify([
      null, { id: 'a', updated: 1, messages: {} }, { id: 'c', updated: 3, messages: [null] },
      { id: 'b', updated: 2, title: 'kept', messages: [{ role: 'user', content: 'ok' },
        { role: 'assistant', content: 'fine', done: true, stats: { first_token_seconds: 'x', prompt_tokens: 3 } },
        { role: 'user', content: 'more' }, { role: 'assistant', content: 'half' }] }])));
    await page.reload();
    await page.waitForFunction(() => document.getElementById('model').textContent === 'tiny');
    assert.match(await page.textContent('#notice'), /3 stored conversations were damaged and left out/);
    assert.deepEqual(await page.locator('#conversations li').allTextContents().then((t) => t.length), 1);
    assert.equal(await page.textContent('#messages .msg.assistant >> nth=0 >> .body'), 'fine');
    // an answer the page was closed on: as far as it came, stopped
    assert.match(await page.textContent('#messages .msg.assistant >> nth=1 >> .stats'), /stopped/);
    // and kept as they were when the page stores again (here: a rename)
    const damaged = (await page.evaluate(() => JSON.parse(localStorage.getItem('moetier.conversations')))).slice(0, 3);
    await page.dblclick('#conversations li.current button.open');
    await page.fill('#conversations li.current input.rename', 'kept!');
    await page.press('#conversations li.current input.rename', 'Enter');
    const after = await stored(page);
    assert.equal(after[0].title, 'kept!');
    assert.deepEqual(after.slice(1), damaged);
    // a store that is no list at all is kept too, as its text
    await page.evaluate(() => localStorage.setItem('moetier.conversations', '{"torn'));
    await page.reload();
    await page.waitForFunction(() => document.getElementById('model').textContent === 'tiny');
    assert.match(await page.textContent('#notice'), /The stored conversations were damaged and left out/);
    await send(page, 'Fresh');
    const fresh = await stored(page);
    assert.deepEqual([fresh.length, fresh[0].title, fresh[1]], [2, 'Fresh', '{"torn']);
    assert.deepEqual(errors, []);
  });
  await check('damaged stored conversations are discarded only by the user, after a confirmation; a copy is offered', async () => {
    const good = { id: 'g', updated: 1, title: 'good', messages: [{ role: 'user', content: 'ok' }] };
    const damaged = [null, { id: 'a', updated: 1, messages: {} }];
    await page.evaluate((list) => localStorage.setItem('moetier.conversations', JSON.stringify(list)),
                        [...damaged, good]);
    await page.reload();
    await page.waitForSelector('#notice:not([hidden]) button:has-text("Discard them")');
    assert.match(await page.textContent('#notice'), /^2 stored conversations were damaged and left out/);
    // Save a copy: the damaged ones as stored
    const [download] = await Promise.all([page.waitForEvent('download'),
                                          page.click('#notice button:has-text("Save a copy")')]);
    assert.deepEqual(JSON.parse(readFileSync(await download.path(), 'utf8')), damaged);
    // refused at the confirmation: nothing goes
    let asked = '';
    page.once('dialog', (d) => { asked = d.message(); d.dismiss(); });
    await page.click('#notice button:has-text("Discard them")');
    assert.match(asked, /cannot be brought back/);
    assert.equal(await page.isHidden('#notice'), false);
    assert.deepEqual((await stored(page)).slice(0, 2), damaged);
    // confirmed: they go, the rest stays, and the notice with them
    page.once('dialog', (d) => d.accept());
    await page.click('#notice button:has-text("Discard them")');
    await page.waitForSelector('#notice', { state: 'hidden' });
    const after = await stored(page);
    assert.deepEqual([after.length, after[0].id, after[0].title], [1, 'g', 'good']);
    await page.reload();
    await page.waitForFunction(() => document.getElementById('model').textContent === 'tiny');
    assert.equal(await page.isHidden('#notice'), true);
    assert.deepEqual(errors, []);
  });
  await context.close();
  await stopServer(srv);
}

async function noPage() {
  const srv = await startServer(['--no-webui']);
  await check('--no-webui: GET / is a 404 saying so', async () => {
    const res = await fetch(srv.url + '/');
    assert.equal(res.status, 404);
    assert.match((await res.json()).error.message, /--no-webui/);
    assert.ok(!/chat in a browser/.test(srv.log));
  });
  await stopServer(srv);
}

try { await plainServer(); } catch (e) { fail(e); }
try { await keyedServer(); } catch (e) { fail(e); }
try { await progressServer(); } catch (e) { fail(e); }
try { await hostileInput(); } catch (e) { fail(e); }
try { await noPage(); } catch (e) { fail(e); }
await browser.close();
finish('web page tests');
