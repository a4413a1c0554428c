// Writes the Hugging Face `tokenizers` reference fixtures for tests/tokenizer/hf_fixtures_test.cc.
//
// Run (needs network once for npm; writes into tests/data/tokenizer/):
//   mkdir -p /tmp/hftok && (cd /tmp/hftok && npm install @anush008/tokenizers)
//   NODE_PATH=/tmp/hftok/node_modules node tools/gen_tokenizer_fixtures.mjs
// @anush008/tokenizers is a Node binding of the Rust `tokenizers` library (0.22.x), i.e. the exact
// code transformers' fast tokenizers run.
//
// Outputs:
//   qwen3_hf.json            ids + decodes of ~45 varied texts with the real Qwen3 tokenizer.json
//   spm_<variant>.tokenizer.json  small hand-built sentencepiece-style BPE tokenizers (byte
//                            fallback, unk, legacy Prepend/Replace normalizer, Metaspace)
//   spm_hf.json              ids + decodes of texts with each spm variant
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const require = createRequire(import.meta.url);
const { Tokenizer } = require("@anush008/tokenizers");

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const assets = process.env.BITDELTA_SHARED_ASSETS || path.resolve(root, "../shared/assets");
const outDir = path.join(root, "tests/data/tokenizer");
fs.mkdirSync(outDir, { recursive: true });

function excerpt(file, start, length) {
  const text = fs.readFileSync(path.join(assets, "corpora", file), "utf8");
  return text.slice(start, start + length);
}

const qwenTexts = [
  excerpt("web_sentences_en.txt", 0, 600),
  excerpt("web_sentences_en.txt", 50000, 400),
  excerpt("tinyshakespeare.txt", 0, 500),
  excerpt("tinyshakespeare.txt", 700000, 300),
  excerpt("tinystories_sample.txt", 0, 500),
  "Hello world",
  " Hello world",
  "hello  world   again\t\ttabs",
  "   leading spaces",
  "trailing spaces   ",
  "line one\nline two\r\nline three\n\n\nfour",
  "\n\n\n",
  " ",
  "1234567890 3.14159 1,000,000 2024-05-17",
  "I'll don't WE'RE they've She'S you'd",
  "def square(x):\n    return x ** 2  # why not\n\nprint(square(12))\n",
  '{"key": [1, 2, 3], "nested": {"a": null}}',
  "https://example.com/path?query=1&b=two#frag",
  "Ünïcödé naïve café résumé",
  "e\u0301 vs \u00e9 and A\u030a vs \u00c5",
  "한국어 문장입니다. 日本語の文章です。中文句子。",
  "مرحبا بالعالم — नमस्ते दुनिया",
  "Ελληνικά και Русский текст",
  "emoji 😀🎉👍🏽 family 👨‍👩‍👧‍👦 flag 🇺🇸",
  "∀x∈ℝ: x² ≥ 0, ∑ᵢ aᵢ ≠ ∞",
  "ＡＢＣ１２３ fullwidth and\u3000ideographic space",
  "nbsp\u00a0here zero\u200bwidth bom\ufeffmark line\u2028sep",
  "hello世界mixed文字text",
  "a".repeat(300),
  "'ſ 'S 'K long s and kelvin",
  "<|im_start|>user\nhi<|im_end|>",
  "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
  "<think>\nLet me think.\n</think>\n\nThe answer is 4.",
  "text<|endoftext|>more text",
  "<|im_start|><|im_end|><|endoftext|>",
  "<|im_start incomplete <|im_end|",
  "<tool_call>\n{\"name\": \"f\"}\n</tool_call>",
  "!!!??? ... --- === ***",
  "tab\tseparated\tvalues\t",
  "MiXeD CaSe WoRdS and ALLCAPS",
  "the quick brown fox jumps over the lazy dog. THE QUICK BROWN FOX.",
  "x = [i for i in range(10) if i % 2 == 0]\n\t\tindent",
  "Ａ half and  double  spaces  ",
  "😀",
  "",
];

async function reference(tokenizer, texts) {
  const out = [];
  for (const text of texts) {
    const enc = await tokenizer.encode(text, null, { addSpecialTokens: false });
    const ids = enc.getIds();
    out.push({
      text,
      ids,
      decoded: await tokenizer.decode(ids, false),
      decoded_skip_special: await tokenizer.decode(ids, true),
    });
  }
  return out;
}

// A tiny sentencepiece-style vocab: <unk> <s> </s>, 256 byte tokens, single characters, and the
// merges below (each merge's result is added to the vocab).
function spmModel({ byteFallback, unk }) {
  const vocab = { "<unk>": 0, "<s>": 1, "</s>": 2 };
  let next = 3;
  if (byteFallback) {
    for (let b = 0; b < 256; b++) {
      vocab[`<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`] = next++;
    }
  }
  const chars = ["▁", ..."abcdefghijklmnoprstuvwy", ..."HTW", ..."0123", ...".,!", "é"];
  for (const c of chars) vocab[c] = next++;
  const merges = [
    ["▁", "t"], ["h", "e"], ["▁t", "he"], ["▁", "a"], ["a", "n"], ["an", "d"], ["▁", "and"],
    ["i", "n"], ["e", "r"], ["▁", "w"], ["o", "r"], ["l", "l"], ["▁", "h"], ["▁h", "e"],
    ["ll", "o"], ["▁he", "llo"], ["▁w", "or"], ["▁wor", "l"], ["▁worl", "d"], ["▁", "▁"],
    ["▁▁", "▁"], ["▁", "H"], ["▁H", "e"], ["▁He", "llo"], ["é", "l"], ["▁", "1"], ["2", "3"],
  ];
  for (const [a, b] of merges) {
    if (!(a + b in vocab)) vocab[a + b] = next++;
  }
  return {
    type: "BPE",
    dropout: null,
    unk_token: unk ? "<unk>" : null,
    continuing_subword_prefix: null,
    end_of_word_suffix: null,
    fuse_unk: true,
    byte_fallback: byteFallback,
    ignore_merges: false,
    vocab,
    merges,
  };
}

const spmDecoderChain = {
  type: "Sequence",
  decoders: [
    { type: "Replace", pattern: { String: "▁" }, content: " " },
    { type: "ByteFallback" },
    { type: "Fuse" },
    { type: "Strip", content: " ", start: 1, stop: 0 },
  ],
};

function addedTokens(extra) {
  const base = [
    { id: 0, content: "<unk>", single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
    { id: 1, content: "<s>", single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
    { id: 2, content: "</s>", single_word: false, lstrip: false, rstrip: false, normalized: false, special: true },
  ];
  return base.concat(extra);
}

function spmTokenizer(variant) {
  const model = spmModel({ byteFallback: variant !== "metaspace_always", unk: true });
  const size = Object.keys(model.vocab).length;
  const t = {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: addedTokens([
      { id: size, content: "<mask>", single_word: false, lstrip: true, rstrip: false, normalized: false, special: true },
      { id: size + 1, content: "<sep>", single_word: false, lstrip: false, rstrip: true, normalized: false, special: false },
      { id: size + 2, content: "word", single_word: true, lstrip: false, rstrip: false, normalized: false, special: false },
    ]),
    normalizer: null,
    pre_tokenizer: null,
    post_processor: null,
    decoder: spmDecoderChain,
    model,
  };
  if (variant === "legacy") {
    t.normalizer = {
      type: "Sequence",
      normalizers: [
        { type: "Prepend", prepend: "▁" },
        { type: "Replace", pattern: { String: " " }, content: "▁" },
      ],
    };
  } else if (variant === "metaspace_first") {
    t.pre_tokenizer = { type: "Metaspace", replacement: "▁", prepend_scheme: "first", split: false };
  } else if (variant === "metaspace_always") {
    t.pre_tokenizer = { type: "Metaspace", replacement: "▁", prepend_scheme: "always", split: true };
    t.decoder = { type: "Metaspace", replacement: "▁", prepend_scheme: "always", split: true };
  }
  return t;
}

const spmTexts = [
  "hello world",
  "Hello World",
  " hello",
  "  two leading",
  "the and the",
  "the  and   the",
  "héllo wörld",
  "emoji 😀 here",
  "中文",
  "Zebra quiz QQQ",
  "<s>hello</s>",
  "a<s>b</s>c",
  "hello <mask> world",
  "hello   <mask>world",
  "x<sep>   y",
  "a word here",
  "swordfish word.",
  "tab\tand\nnewline",
  "123 1234 23",
  "",
  " ",
  "the end.",
  "hello world ".repeat(20),
];

const qwen = Tokenizer.fromFile(path.join(assets, "tokenizers/qwen3/tokenizer.json"));
const qwenCases = await reference(qwen, qwenTexts);
fs.writeFileSync(path.join(outDir, "qwen3_hf.json"), JSON.stringify(qwenCases, null, 1) + "\n");

const spm = {};
for (const variant of ["legacy", "metaspace_first", "metaspace_always"]) {
  const json = JSON.stringify(spmTokenizer(variant), null, 1) + "\n";
  const file = path.join(outDir, `spm_${variant}.tokenizer.json`);
  fs.writeFileSync(file, json);
  spm[variant] = await reference(Tokenizer.fromFile(file), spmTexts);
}
fs.writeFileSync(path.join(outDir, "spm_hf.json"), JSON.stringify(spm, null, 1) + "\n");
console.log(`wrote ${qwenCases.length} Qwen3 cases and ${spmTexts.length} texts x 3 spm variants`);
