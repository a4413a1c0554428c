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
};

// Throws HttpError (400, naming the field) for anything the server does not do or a bad value.
OpenAiRequest parse_openai_request(const nlohmann::json& body, bool chat,
                                   const OpenAiLimits& limits);

// The fields of OpenAI's schemas that are accepted and have no effect here (for docs and tests).
const std::vector<std::string_view>& ignored_openai_fields(bool chat);

}  // namespace bitdelta
