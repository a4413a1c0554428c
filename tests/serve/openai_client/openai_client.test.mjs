// The official `openai` npm client driving a real `bitdelta serve`: chat, completion, streaming,
// an unknown model (404), bad parameters (400), and two users' adapters answering differently
// from the base and exactly like `bitdelta generate --adapter` under greedy decoding.
//
// Run by ctest (tests/serve/CMakeLists.txt) with BITDELTA_CLI and BITDELTA_SHARED_ASSETS set;
// `npm ci` in this folder installs the client (scripts/setup.sh does it).
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI from "openai";

const cli = process.env.BITDELTA_CLI;
const assets = process.env.BITDELTA_SHARED_ASSETS;
assert.ok(cli && assets, "set BITDELTA_CLI and BITDELTA_SHARED_ASSETS");
const dir = mkdtempSync(join(tmpdir(), "bitdelta-openai-"));
const base = join(dir, "stories260K");
const run = (...args) => execFileSync(cli, args, { encoding: "utf8" });

let server;
let client;

// Two users fine-tuned on different text, compressed to 1 bit and put in the store.
function makeUser(name, corpus) {
  const ft = join(dir, `${name}-ft`);
  run("finetune", "--model", base, "--data", join(assets, "corpora", corpus), "--max-chars",
      "40000", "--out", ft, "--steps", "20", "--batch", "4", "--seq-len", "64", "--lr", "3e-3",
      "--quiet");
  const adapter = join(dir, `${name}.bdelta`);
  run("compress", "--base", base, "--finetuned", ft, "--out", adapter, "--granularity", "row",
      "--adapter-id", `general/${name}/v1`);
  run("store", "add", "--store", join(dir, "store"), adapter, "--model", base);
  return adapter;
}

const adapters = {};

before(async () => {
  run("import-llama2c", "--model", join(assets, "models/stories260K/stories260K.bin"),
      "--tokenizer", join(assets, "models/stories260K/tok512.bin"), "--out", base);
  adapters.alice = makeUser("alice", "tinyshakespeare.txt");
  adapters.bob = makeUser("bob", "web_sentences_en.txt");
  server = spawn(cli, ["serve", "--model", base, "--store", join(dir, "store"), "--port", "0"],
                 { stdio: ["ignore", "pipe", "pipe"] });
  const port = await new Promise((resolve, reject) => {
    let out = "";
    server.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/serving .* on http:\/\/127\.0\.0\.1:(\d+)/);
      if (m) resolve(Number(m[1]));
    });
    server.on("exit", (code) => reject(new Error(`server exited with ${code}`)));
  });
  client = new OpenAI({ baseURL: `http://127.0.0.1:${port}/v1`, apiKey: "unused", maxRetries: 0 });
});

after(async () => {
  if (server && server.exitCode === null) {
    const exited = new Promise((resolve) => server.on("exit", resolve));
    server.kill("SIGTERM");
    assert.equal(await exited, 0);
  }
  rmSync(dir, { recursive: true, force: true });
});

const greedy = (model, prompt, max_tokens = 24) =>
  client.completions.create({ model, prompt, max_tokens, temperature: 0 });

test("models lists the base and both users", async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.deepEqual(ids.sort(), ["general/alice/v1", "general/bob/v1", "stories260K"]);
});

test("completion with usage", async () => {
  const r = await greedy("stories260K", "Once upon a time");
  assert.equal(r.object, "text_completion");
  assert.equal(r.choices.length, 1);
  assert.ok(r.choices[0].text.length > 0);
  assert.equal(r.usage.completion_tokens + r.usage.prompt_tokens, r.usage.total_tokens);
});

test("chat completion", async () => {
  const r = await client.chat.completions.create({
    model: "general/alice/v1",
    messages: [{ role: "user", content: "Tell me a story." }],
    max_tokens: 12,
    temperature: 0,
  });
  assert.equal(r.object, "chat.completion");
  assert.equal(r.choices[0].message.role, "assistant");
  assert.equal(r.usage.completion_tokens, 12);
  assert.equal(r.choices[0].finish_reason, "length");
});

test("streaming gives the same text as a whole answer", async () => {
  const request = {
    model: "general/bob",
    messages: [{ role: "user", content: "Hello" }],
    max_tokens: 16,
    temperature: 0,
  };
  const whole = await client.chat.completions.create(request);
  const stream = await client.chat.completions.create({ ...request, stream: true });
  let text = "";
  let chunks = 0;
  let finish = null;
  for await (const chunk of stream) {
    chunks++;
    text += chunk.choices[0]?.delta?.content ?? "";
    finish = chunk.choices[0]?.finish_reason ?? finish;
  }
  assert.ok(chunks > 2);
  assert.equal(finish, "length");
  assert.equal(text, whole.choices[0].message.content);
});

test("an unknown model is a 404", async () => {
  await assert.rejects(greedy("general/nobody/v1", "x"), (e) => {
    assert.ok(e instanceof OpenAI.NotFoundError);
    assert.equal(e.status, 404);
    return true;
  });
});

test("bad parameters are a 400", async () => {
  for (const bad of [{ temperature: -1 }, { n: 100 }, { max_tokens: 10 ** 7 }, { top_p: 5 },
                     { top_logprobs: 21, logprobs: true }, { logprobs: 21 }]) {
    await assert.rejects(
      client.completions.create({ model: "stories260K", prompt: "x", ...bad }),
      (e) => e instanceof OpenAI.BadRequestError && e.status === 400,
      JSON.stringify(bad));
  }
});

test("users' adapters answer differently, exactly like bitdelta generate --adapter", async () => {
  const prompt = "Once upon a time";
  const answers = {};
  for (const [name, model, adapter] of [
    ["base", "stories260K", null],
    ["alice", "general/alice/v1", adapters.alice],
    ["bob", "general/bob/v1", adapters.bob],
  ]) {
    answers[name] = (await greedy(model, prompt)).choices[0].text;
    const args = ["generate", "--model", base, "--prompt", prompt, "--max-tokens", "24"];
    if (adapter) args.push("--adapter", adapter);
    const expected = execFileSync(cli, args, { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] });
    assert.ok(expected.startsWith(prompt + answers[name]),
              `${name}: server said ${JSON.stringify(answers[name])}, generate said ${JSON.stringify(expected)}`);
  }
  assert.notEqual(answers.base, answers.alice);
  assert.notEqual(answers.base, answers.bob);
  assert.notEqual(answers.alice, answers.bob);
});

test("log probabilities and n choices through the official client", async () => {
  const r = await client.chat.completions.create({
    model: "general/alice/v1",
    messages: [{ role: "user", content: "Tell me a story." }],
    max_tokens: 6,
    temperature: 0.8,
    seed: 3,
    n: 2,
    logprobs: true,
    top_logprobs: 2,
  });
  assert.equal(r.choices.length, 2);
  assert.deepEqual(r.choices.map((c) => c.index), [0, 1]);
  assert.equal(r.usage.completion_tokens, 12);
  for (const c of r.choices) {
    assert.equal(c.logprobs.content.length, 6);
    for (const t of c.logprobs.content) {
      assert.ok(t.logprob <= 0);
      assert.equal(t.top_logprobs.length, 2);
      assert.ok(t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob);
      assert.equal(Buffer.from(t.bytes).toString("utf8"), t.token);
    }
  }
  const c = await client.completions.create({
    model: "stories260K", prompt: "Once upon a time", max_tokens: 4, temperature: 0, logprobs: 3,
  });
  const lp = c.choices[0].logprobs;
  assert.equal(lp.tokens.length, 4);
  assert.equal(lp.tokens.join(""), c.choices[0].text);
  assert.equal(lp.top_logprobs[0][lp.tokens[0]], lp.token_logprobs[0]);  // greedy: the best
});

// Every field of the official client's request types for chat and completions: implemented or
// accepted as documented (docs/openai-api.md) answers 200; anything else a 400 that names it. A
// field a newer client adds fails here until someone decides what the server does with it.
test("every request field of OpenAI's schemas is implemented, documented as ignored, or a 400 naming it", async () => {
  const require = createRequire(import.meta.url);
  const root = require.resolve("openai").replace(/index\.js$/, "");
  const fields = (file, name) => {
    const text = readFileSync(root + file, "utf8");
    const body = text.slice(text.indexOf(`export interface ${name} {`)).split("\n").slice(1);
    const out = [];
    let depth = 0;
    for (const line of body) {
      if (depth === 0 && /^}/.test(line)) break;
      const m = line.match(/^    ([a-z_]+)\??:/);
      if (m && depth === 0) out.push(m[1]);
      depth += (line.match(/{/g) || []).length - (line.match(/}/g) || []).length;
    }
    return out;
  };
  const tool = { type: "function", function: { name: "f", parameters: { type: "object", properties: {} } } };
  // [value, expected status] per field; 400s must name the field in error.param.
  const chat = {
    messages: [[{ role: "user", content: "Hi" }], 200], model: ["stories260K", 200],
    audio: [{ voice: "alloy", format: "wav" }, 400], frequency_penalty: [0.5, 200],
    function_call: ["auto", 400], functions: [[{ name: "f", parameters: { type: "object" } }], 400],
    logit_bias: [{ 1: 1 }, 200], logprobs: [true, 200], max_completion_tokens: [2, 200],
    max_tokens: [2, 200], metadata: [{ k: "v" }, 200], modalities: [["text", "audio"], 400],
    n: [2, 200], parallel_tool_calls: [true, 200], prediction: [{ type: "content", content: "x" }, 400],
    presence_penalty: [0.5, 200], reasoning_effort: ["low", 400],
    response_format: [{ type: "json_object" }, 400], seed: [1, 200], service_tier: ["auto", 200],
    stop: [["\n\n"], 200], store: [true, 400], stream: [false, 200],
    stream_options: [{ include_usage: true }, 200, { stream: true }], temperature: [0.5, 200],
    tool_choice: ["auto", 400], tools: [[tool], 400], top_logprobs: [2, 200, { logprobs: true }],
    top_p: [0.9, 200], user: ["u", 200], web_search_options: [{}, 400],
  };
  const completion = {
    model: ["stories260K", 200], prompt: ["Once", 200], best_of: [2, 400], echo: [true, 200],
    frequency_penalty: [0.5, 200], logit_bias: [{ 1: 1 }, 200], logprobs: [2, 200],
    max_tokens: [2, 200], n: [2, 200], presence_penalty: [0.5, 200], seed: [1, 200],
    stop: [["\n\n"], 200], stream: [false, 200], stream_options: [{ include_usage: true }, 200, { stream: true }],
    suffix: ["x", 400], temperature: [0.5, 200], top_p: [0.9, 200], user: ["u", 200],
  };
  const port = new URL(client.baseURL).port;
  const walk = async (path, file, iface, table, minimal) => {
    const names = fields(file, iface);
    assert.ok(names.length > 10, `read ${names.length} fields of ${iface}`);
    for (const name of names) {
      assert.ok(name in table, `${iface}.${name} is new in the openai package: decide what the server does with it`);
      const [value, status, extra] = table[name];
      const res = await fetch(`http://127.0.0.1:${port}${path}`, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ ...minimal, ...extra, [name]: value }),
      });
      const text = await res.text();
      assert.equal(res.status, status, `${path} ${name}: ${text}`);
      if (status === 400) assert.equal(JSON.parse(text).error.param, name, `${path} ${name}: ${text}`);
    }
    const res = await fetch(`http://127.0.0.1:${port}${path}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ ...minimal, not_an_openai_field: 1 }),
    });
    assert.equal(res.status, 400);
    assert.equal((await res.json()).error.param, "not_an_openai_field");
  };
  await walk("/v1/chat/completions", "resources/chat/completions/completions.d.ts",
             "ChatCompletionCreateParamsBase", chat,
             { model: "stories260K", messages: [{ role: "user", content: "Hi" }], max_tokens: 2 });
  await walk("/v1/completions", "resources/completions.d.ts", "CompletionCreateParamsBase",
             completion, { model: "stories260K", prompt: "Once", max_tokens: 2 });
});
