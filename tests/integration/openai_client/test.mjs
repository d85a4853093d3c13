// dcompd's HTTP API through the official OpenAI client library for JavaScript.
//   node test.mjs serve BASE_URL API_KEY EXPECTED.json  models, completions, chat (plain and
//                                                      streamed) against dcomp's own output
//   node test.mjs busy BASE_URL                         a cancelled stream, then 429 while the
//                                                      daemon's one queue place is taken
import assert from 'node:assert/strict';
import fs from 'node:fs';
import OpenAI from 'openai';

const [mode, baseURL, apiKey, expectedPath] = process.argv.slice(2);
const client = new OpenAI({ baseURL: `${baseURL}/v1`, apiKey: apiKey || 'none', maxRetries: 0 });

async function collect(stream) {
  let text = '';
  let finish = null;
  let usage = null;
  let chunks = 0;
  for await (const chunk of stream) {
    chunks++;
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      text += c.delta ? (c.delta.content ?? '') : c.text;
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  return { text, finish, usage, chunks };
}

async function serve() {
  const want = JSON.parse(fs.readFileSync(expectedPath, 'utf8'));
  const models = await client.models.list();
  assert.equal(models.data.length, 1);
  const model = models.data[0].id;
  assert.equal((await client.models.retrieve(model)).id, model);

  // Greedy completion: the text `dcomp generate` gives; `model` may name anything.
  const c = await client.completions.create({
    model: 'any-name', prompt: want.prompt, max_tokens: want.n, temperature: 0,
  });
  assert.equal(c.model, model);
  assert.equal(c.object, 'text_completion');
  assert.equal(c.choices[0].text, want.completion);
  assert.equal(c.choices[0].finish_reason, want.completion_finish);
  assert.equal(c.usage.prompt_tokens, want.completion_prompt_tokens);
  assert.equal(c.usage.completion_tokens, want.completion_tokens);
  assert.equal(c.usage.total_tokens, want.completion_prompt_tokens + want.completion_tokens);

  // Chat, greedy and seeded: the answers of `dcomp chat`.
  const messages = [{ role: 'user', content: want.message }];
  const greedy = await client.chat.completions.create({
    model, messages, max_tokens: want.n, temperature: 0,
  });
  assert.equal(greedy.object, 'chat.completion');
  assert.equal(greedy.choices[0].message.role, 'assistant');
  assert.equal(greedy.choices[0].message.content, want.chat_greedy);
  const seeded = await client.chat.completions.create({
    model, messages, max_tokens: want.n, temperature: want.temperature, seed: want.seed,
  });
  assert.equal(seeded.choices[0].message.content, want.chat_seeded);

  // Streamed chat: the same text in chunks, a finish reason, and usage when asked.
  const streamed = await collect(await client.chat.completions.create({
    model, messages, max_tokens: want.n, temperature: 0, stream: true,
    stream_options: { include_usage: true },
  }));
  assert.equal(streamed.text, want.chat_greedy);
  assert.equal(streamed.finish, greedy.choices[0].finish_reason);
  assert.deepEqual(streamed.usage, greedy.usage);
  assert.ok(streamed.chunks > 2, `only ${streamed.chunks} chunks`);

  // Streamed completion with a stop string: the text ends before it.
  const stop = want.completion.slice(want.completion.length >> 1).trimStart().slice(0, 3);
  const cut = await collect(await client.completions.create({
    model, prompt: want.prompt, max_tokens: want.n, temperature: 0, stream: true, stop: [stop],
  }));
  assert.equal(cut.text, want.completion.slice(0, want.completion.indexOf(stop)));
  assert.equal(cut.finish, 'stop');

  // Errors arrive as the library's typed errors.
  await assert.rejects(
    client.completions.create({ model, prompt: 'x', max_tokens: 0 }),
    (e) => e instanceof OpenAI.BadRequestError && e.param === 'max_tokens');
  await assert.rejects(
    client.chat.completions.create({ model, messages: [{ role: 'tool', content: 'x' }] }),
    (e) => e.status === 400 && /tool/.test(e.message));
  const wrongKey = new OpenAI({ baseURL: `${baseURL}/v1`, apiKey: 'wrong', maxRetries: 0 });
  await assert.rejects(wrongKey.models.list(), (e) => e instanceof OpenAI.AuthenticationError);
  console.log('serve: models, completion, chat (greedy, seeded, streamed), stop, errors: ok');
}

async function busy() {
  // A stream the client abandons after three chunks: the daemon cancels it.
  const abandoned = await client.completions.create({
    model: 'm', prompt: 'Once upon a time', max_tokens: 400, stream: true, ignore_eos: true,
  });
  let n = 0;
  for await (const chunk of abandoned) {
    assert.equal(chunk.object, 'text_completion');
    if (++n === 3) break;  // ends the request: the library aborts the connection
  }
  // The one queue place taken by a long stream (once the abandoned one has left it, within a
  // step): the next request gets 429.
  let holder = null;
  for (let attempt = 0; holder === null; attempt++) {
    try {
      holder = await client.completions.create({
        model: 'm', prompt: 'Once upon a time', max_tokens: 400, stream: true, ignore_eos: true,
      });
    } catch (e) {
      if (!(e instanceof OpenAI.RateLimitError) || attempt === 100) throw e;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  const it = holder[Symbol.asyncIterator]();
  await it.next();  // admitted and running
  await assert.rejects(
    client.completions.create({ model: 'm', prompt: 'x', max_tokens: 4 }),
    (e) => e instanceof OpenAI.RateLimitError && e.status === 429 && /queue is full/.test(e.message));
  holder.controller.abort();
  console.log('busy: cancelled stream, 429 when the queue is full: ok');
}

await (mode === 'serve' ? serve() : busy());
