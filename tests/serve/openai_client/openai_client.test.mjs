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

// `bitdelta serve` on a free port: the process and the port it prints.
async function serve(args) {
  const proc = spawn(cli, ["serve", ...args, "--port", "0"], { stdio: ["ignore", "pipe", "pipe"] });
  const port = await new Promise((resolve, reject) => {
    let out = "";
    proc.stdout.on("data", (d) => {
      out += d;
      const m = out.match(/serving .* on http:\/\/127\.0\.0\.1:(\d+)/);
      if (m) resolve(Number(m[1]));
    });
    proc.on("exit", (code) => reject(new Error(`server exited with ${code}`)));
  });
  return { proc, port };
}

async function stop(proc) {
  if (proc && proc.exitCode === null) {
    const exited = new Promise((resolve) => proc.on("exit", resolve));
    proc.kill("SIGTERM");
    assert.equal(await exited, 0);
  }
}

// A tiny Qwen3 with the real Qwen3 vocabulary and chat template (random weights), for tools.
let toolServer;
let toolURL;

before(async () => {
  run("import-llama2c", "--model", join(assets, "models/stories260K/stories260K.bin"),
      "--tokenizer", join(assets, "models/stories260K/tok512.bin"), "--out", base);
  adapters.alice = makeUser("alice", "tinyshakespeare.txt");
  adapters.bob = makeUser("bob", "web_sentences_en.txt");
  const s = await serve(["--model", base, "--store", join(dir, "store")]);
  server = s.proc;
  client = new OpenAI({ baseURL: `http://127.0.0.1:${s.port}/v1`, apiKey: "unused", maxRetries: 0 });
  run("synth", "--like", "tiny", "--tokenizer", join(assets, "tokenizers/qwen3"), "--vocab-size",
      "151936", "--out", join(dir, "tq"));
  const t = await serve(["--model", join(dir, "tq"), "--store", join(dir, "tq-store")]);
  toolServer = t.proc;
  toolURL = `http://127.0.0.1:${t.port}/v1`;
});

after(async () => {
  await stop(server);
  await stop(toolServer);
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
    response_format: [{ type: "json_object" }, 200], seed: [1, 200], service_tier: ["auto", 200],
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

const weather = {
  type: "function",
  function: {
    name: "get_weather",
    description: "Weather in a city",
    parameters: {
      type: "object",
      properties: { city: { type: "string", maxLength: 12 }, days: { type: "integer", minimum: 1, maximum: 7 } },
      required: ["city", "days"],
      additionalProperties: false,
    },
  },
};
// The arguments a get_weather call must have (its parameters schema, checked by hand).
function checkWeather(args) {
  assert.deepEqual(Object.keys(args).sort(), ["city", "days"]);
  assert.equal(typeof args.city, "string");
  assert.ok([...args.city].length <= 12);
  assert.ok(Number.isInteger(args.days) && args.days >= 1 && args.days <= 7, JSON.stringify(args));
}

test("tool calls through the official client: create, the streaming helper, runTools", async () => {
  const tc = new OpenAI({ baseURL: toolURL, apiKey: "unused", maxRetries: 0 });
  const request = {
    model: "tq",
    messages: [{ role: "user", content: "Weather in Paris?" }],
    tools: [weather],
    tool_choice: { type: "function", function: { name: "get_weather" } },
    max_tokens: 120,
    temperature: 0.7,
    seed: 5,
  };
  const r = await tc.chat.completions.create(request);
  const call = r.choices[0].message.tool_calls[0];
  assert.equal(r.choices[0].finish_reason, "tool_calls");
  assert.equal(call.function.name, "get_weather");
  checkWeather(JSON.parse(call.function.arguments));
  // The client's stream helper puts the deltas back together into the same call.
  const stream = tc.beta.chat.completions.stream(request);
  const whole = await stream.finalChatCompletion();
  assert.equal(whole.choices[0].message.tool_calls[0].function.arguments, call.function.arguments);
  assert.equal(whole.choices[0].message.tool_calls[0].function.name, "get_weather");
  // runTools calls our function with the parsed arguments and sends its result back as a
  // role "tool" message; with tool_choice "auto" pushed towards <tool_call> by logit_bias, the
  // model calls again until the runner's limit.
  const seen = [];
  const runner = tc.beta.chat.completions.runTools({
    model: "tq",
    messages: [{ role: "user", content: "Weather in Paris?" }],
    tools: [{ type: "function", function: { ...weather.function, function: (args) => { seen.push(args); return "18 C"; }, parse: JSON.parse } }],
    logit_bias: { 151657: 100 },
    parallel_tool_calls: false,
    max_tokens: 120,
    temperature: 0.7,
    seed: 6,
  }, { maxChatCompletions: 3 });
  await runner.done().catch(() => {});  // it stops at its limit of completions
  assert.ok(seen.length >= 2, `runTools called the function ${seen.length} times`);
  seen.forEach(checkWeather);
  const toolResults = runner.messages.filter((m) => m.role === "tool");
  assert.ok(toolResults.length >= 2);
  assert.equal(toolResults[0].content, "18 C");
});

test("tool calls through LangChain JS: bindTools, invoke, stream", async () => {
  const { ChatOpenAI } = await import("@langchain/openai");
  const model = new ChatOpenAI({
    model: "tq", apiKey: "unused", temperature: 0.7, maxTokens: 120, maxRetries: 0,
    configuration: { baseURL: toolURL },
  });
  const llm = model.bindTools([weather], { tool_choice: "get_weather" });
  const msg = await llm.invoke("Weather in Paris?");
  assert.equal(msg.tool_calls.length, 1);
  assert.equal(msg.tool_calls[0].name, "get_weather");
  checkWeather(msg.tool_calls[0].args);
  let merged;
  for await (const chunk of await llm.stream("Weather in Rome?")) merged = merged ? merged.concat(chunk) : chunk;
  assert.equal(merged.tool_calls.length, 1);
  assert.equal(merged.tool_calls[0].name, "get_weather");
  checkWeather(merged.tool_calls[0].args);
  // The call and its result back, then a plain answer.
  const answer = await model.invoke([
    { role: "user", content: "Weather in Paris?" },
    msg,
    { role: "tool", tool_call_id: msg.tool_calls[0].id, content: "18 C" },
  ], { max_tokens: 8 });
  assert.equal(typeof answer.content, "string");
});
