// Continuous batching across tenants: one engine thread runs the model; requests join the
// running batch between forward passes, each with its own KV cache and adapter, and sequences of
// different users decode in the same forward through the fused multi-tenant path. Long prompts
// are prefilled in chunks so they do not stall the others.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "model/generate.h"
#include "model/transformer.h"
#include "serve/prefix_cache.h"
#include "tokenizer/tokenizer.h"

namespace bitdelta {

// What a request hears back, in order: text pieces, then one end. Written by the engine thread,
// read by the request's thread (e.g. an HTTP handler streaming it out).
class RequestChannel {
 public:
  struct Event {
    std::string text;                   // a piece of final text (may be empty at the end)
    bool done = false;
    std::string finish_reason;          // "stop", "length", "cancelled" or "error"
    std::string error;                  // set when finish_reason is "error"
    int64_t prompt_tokens = 0, completion_tokens = 0;
    int index = 0;  // which of the request's n choices this is about
    // Log probabilities of the tokens generated since the previous event of this choice (with
    // options.logprobs ≥ 0); a token's text may come in a later event's `text`.
    std::vector<TokenLogprob> logprobs;
  };
  // Blocks until the next event (or `timeout` passes: nullopt).
  std::optional<Event> next(std::chrono::milliseconds timeout);
  // The reader went away (client disconnected): the engine drops the sequence at its next step.
  void cancel() { cancelled_ = true; }
  bool cancelled() const { return cancelled_; }

  void push(Event e);  // engine side

 private:
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<Event> events_;
  std::atomic<bool> cancelled_{false};
};

struct SchedulerRequest {
  std::vector<int32_t> prompt;
  GenerateOptions options;                // options.adapter: the user's adapter or null
  std::shared_ptr<const void> adapter_pin;  // keeps the adapter loaded while the request lives
  // Whose keys and values the prompt's prefix shares in the prefix cache: "" for the base, the
  // adapter's content hash otherwise (never its address: a reloaded adapter is another object).
  std::string prefix_owner;
  // Choices for the one prompt (OpenAI's n): the prompt is prefilled once and its keys and values
  // copied to the others, each sampling with its own seed (options.sampling.seed mixed with its
  // index). Every choice ends with its own done event.
  int n = 1;
};

struct SchedulerOptions {
  int64_t max_batch = 8;       // sequences in one forward
  int64_t max_queue = 64;      // waiting requests beyond the batch; more are refused
  int64_t prefill_chunk = 128; // prompt tokens per sequence per forward
  // Prompt tokens per forward across all sequences (≤ 0: prefill_chunk). Sequences that are
  // decoding take one token every forward whatever arrives; prompts prefill in slices of this
  // budget, oldest request first, so a burst of new prompts does not stall the running streams
  // (a step costs about budget + running sequences tokens). A forward with no sequence decoding
  // takes every waiting prompt's next chunk whole.
  int64_t prefill_budget = 0;
  uint64_t prefix_cache_bytes = 0;  // 0: no prefix cache
  int64_t prefix_block = 32;        // tokens per prefix-cache block
  // When nothing runs, how long the first request to arrive waits for others before its forward
  // (or until the batch is full): a burst of users arriving together prefills in one forward and
  // their streams start together, instead of the first one's stream decoding beside the others'
  // prompts. 0: none.
  double batch_wait_ms = 0;
};

struct SchedulerStats {
  int64_t queued = 0, active = 0;
  int64_t last_batch_sequences = 0, last_batch_tokens = 0;
};

class Scheduler {
 public:
  Scheduler(Transformer& model, const Tokenizer& tokenizer, SchedulerOptions options,
            ThreadPool& pool);
  ~Scheduler();  // drains: finishes every accepted request, then stops

  // Queues a request; nullptr when the queue is full (the caller answers 429). Options are
  // validated here (Error for bad values).
  std::shared_ptr<RequestChannel> submit(SchedulerRequest request);
  // Stops accepting, finishes what was accepted, then returns.
  void drain();
  SchedulerStats stats() const;
  // The prefix cache (null when disabled).
  const PrefixCache* prefix_cache() const { return prefix_cache_ ? &*prefix_cache_ : nullptr; }
  // Called after every forward with (sequences, tokens) and per new token's sequence; for metrics.
  std::function<void(int64_t sequences, int64_t tokens, double seconds)> on_batch;

 private:
  struct Sequence;
  using Outgoing = std::pair<std::shared_ptr<RequestChannel>, RequestChannel::Event>;
  void loop();
  std::vector<Outgoing> step(std::vector<std::unique_ptr<Sequence>>& active);
  // A finished sequence's KV cache, kept (up to max_batch of them) for the next one: a new
  // sequence then writes into memory already faulted in, instead of every request growing fresh
  // buffers (each growth a page-faulting copy that stalled every stream's step).
  void recycle(Sequence& s);
  bool take_spare(KVCache& into);      // moves a spare cache into `into`; false when none is left
  std::vector<KVCache> spare_caches_;  // engine thread only

  Transformer& model_;
  const Tokenizer& tokenizer_;
  SchedulerOptions options_;
  ThreadPool& pool_;
  std::optional<PrefixCache> prefix_cache_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<std::unique_ptr<Sequence>> queue_;
  int64_t active_count_ = 0;
  SchedulerStats last_;
  bool draining_ = false;
  std::thread thread_;
};

}  // namespace bitdelta
