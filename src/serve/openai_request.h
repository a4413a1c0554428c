// OpenAI chat and completions requests, parsed and checked before anything runs. Every field of
// OpenAI's request schemas is either implemented, ignored on purpose because it cannot change
// the output (`user`, `metadata`, ...), or refused with a 400 that names it in `param`; a field
// OpenAI does not know is refused as OpenAI refuses it. The lists: docs/openai-api.md.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "model/generate.h"
#include "tokenizer/tokenizer.h"

namespace bitdelta {

// The most choices (n) one request may ask for; the server also caps it at its --max-batch.
inline constexpr int kMaxChoices = 16;

struct OpenAiLimits {
  int64_t max_tokens = 4096;  // the largest max_tokens a request may ask for
  int max_n = 8;              // the most choices per request
  int32_t vocab_size = 0;     // token ids in logit_bias must be below it
};

// A function the model may call (OpenAI's tools[i] of type "function").
struct ToolSpec {
  std::string name;
  nlohmann::ordered_json parameters;  // a JSON Schema for the arguments (an object)
  std::string rendered;               // the whole tool as the chat template writes it (tojson)
};

struct ToolChoice {
  enum class Mode { kNone, kAuto, kRequired, kNamed };
  Mode mode = Mode::kAuto;
  std::string name;  // kNamed
};

struct ResponseFormat {
  enum class Type { kText, kJsonObject, kJsonSchema };
  Type type = Type::kText;
  nlohmann::ordered_json schema;  // kJsonSchema: json_schema.schema, its keys in the given order
};

struct OpenAiRequest {
  bool chat = false;
  std::string model;
  std::vector<ChatMessage> messages;  // chat
  std::string prompt;                 // completions
  // Sampling, stops, logprobs; max_tokens is -1 when the request does not say (it depends on
  // the prompt's length). The seed is the request's, or drawn at random.
  GenerateOptions options;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage: a last chunk with only usage
  int n = 1;
  bool echo = false;  // completions: the prompt's text comes before the completion
  std::vector<ToolSpec> tools;  // chat
  ToolChoice tool_choice;       // kNone without tools
  bool parallel_tool_calls = true;
  ResponseFormat response_format;
};

// Throws HttpError (400, naming the field) for anything the server does not do or a bad value.
// `ordered` is the same body with its objects' keys in the order given (schemas and tools are
// rendered and generated in that order).
OpenAiRequest parse_openai_request(const nlohmann::json& body,
                                   const nlohmann::ordered_json& ordered, bool chat,
                                   const OpenAiLimits& limits);

// The fields of OpenAI's schemas that are accepted and have no effect here (for docs and tests).
const std::vector<std::string_view>& ignored_openai_fields(bool chat);

}  // namespace bitdelta
