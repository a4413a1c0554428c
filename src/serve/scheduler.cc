#include "serve/scheduler.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <set>

#include "util/error.h"

namespace bitdelta {

std::optional<RequestChannel::Event> RequestChannel::next(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  if (!ready_.wait_for(lock, timeout, [&] { return !events_.empty(); })) return std::nullopt;
  Event e = std::move(events_.front());
  events_.pop_front();
  return e;
}

void RequestChannel::push(Event e) {
  {
    std::lock_guard lock(mutex_);
    events_.push_back(std::move(e));
  }
  ready_.notify_one();
}

struct Scheduler::Sequence {
  SchedulerRequest request;
  std::shared_ptr<RequestChannel> channel;
  std::optional<SequenceDecoder> decoder;
  KVCache cache;
  std::chrono::steady_clock::time_point queued_at;  // when submit() took it
  int64_t prefilled = 0;  // prompt tokens already in the cache
  int32_t next_input = -1;
  int index = 0;                                    // which choice of its request
  std::vector<std::unique_ptr<Sequence>> siblings;  // the other choices, until the prompt is in
  std::vector<TokenLogprob> logprobs;               // not yet sent
};

namespace {

// Sequences running or waiting inside their request for its prompt (n choices count n).
template <typename Sequences>
int64_t choices(const Sequences& active) {
  int64_t n = 0;
  for (const auto& s : active) n += 1 + static_cast<int64_t>(s->siblings.size());
  return n;
}

// Choice i's seed: the request's seed for the first, well-mixed others after (SplitMix64).
uint64_t choice_seed(uint64_t seed, int index) {
  if (index == 0) return seed;
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * static_cast<uint64_t>(index);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

}  // namespace

Scheduler::Scheduler(Transformer& model, const Tokenizer& tokenizer, SchedulerOptions options,
                     ThreadPool& pool)
    : model_(model), tokenizer_(tokenizer), options_(options), pool_(pool) {
  if (options_.max_batch <= 0 || options_.max_queue < 0 || options_.prefill_chunk <= 0) {
    fail("max batch and prefill chunk must be positive and the queue length ≥ 0");
  }
  if (options_.prefill_budget <= 0) options_.prefill_budget = options_.prefill_chunk;
  if (options_.prefix_cache_bytes > 0) {
    prefix_cache_.emplace(model.config(), options_.prefix_cache_bytes, options_.prefix_block);
  }
  thread_ = std::thread([this] { loop(); });
}

Scheduler::~Scheduler() { drain(); }

std::shared_ptr<RequestChannel> Scheduler::submit(SchedulerRequest request) {
  auto seq = std::make_unique<Sequence>();
  // Validates prompt and options before anything is queued.
  seq->decoder.emplace(&tokenizer_, request.prompt, request.options);
  if (static_cast<int64_t>(request.prompt.size()) + request.options.max_tokens >
      model_.config().max_position_embeddings) {
    fail("the prompt ({} tokens) plus max_tokens ({}) exceeds the model's context of {} tokens",
         request.prompt.size(), request.options.max_tokens,
         model_.config().max_position_embeddings);
  }
  if (request.n < 1) fail("n must be at least 1, got {}", request.n);
  seq->channel = std::make_shared<RequestChannel>();
  std::shared_ptr<RequestChannel> channel = seq->channel;
  for (int i = 1; i < request.n; ++i) {
    auto sibling = std::make_unique<Sequence>();
    sibling->request = request;
    sibling->request.n = 1;
    sibling->request.options.sampling.seed = choice_seed(request.options.sampling.seed, i);
    sibling->decoder.emplace(&tokenizer_, sibling->request.prompt, sibling->request.options);
    sibling->channel = channel;
    sibling->index = i;
    seq->siblings.push_back(std::move(sibling));
  }
  seq->request = std::move(request);
  if (seq->decoder->done()) {  // max_tokens 0: nothing to run
    for (int i = 0; i < seq->request.n; ++i) {
      RequestChannel::Event e{"", true, "length", "", seq->decoder->prompt_tokens(), 0};
      e.index = i;
      channel->push(std::move(e));
    }
    return channel;
  }
  {
    std::lock_guard lock(mutex_);
    if (draining_) return nullptr;
    const int64_t waiting = static_cast<int64_t>(queue_.size());
    if (waiting >= options_.max_queue + std::max<int64_t>(0, options_.max_batch - active_count_)) {
      return nullptr;
    }
    seq->queued_at = std::chrono::steady_clock::now();
    queue_.push_back(std::move(seq));
  }
  wake_.notify_one();
  return channel;
}

void Scheduler::drain() {
  {
    std::lock_guard lock(mutex_);
    draining_ = true;
  }
  wake_.notify_one();
  if (thread_.joinable()) thread_.join();
}

SchedulerStats Scheduler::stats() const {
  std::lock_guard lock(mutex_);
  SchedulerStats s = last_;
  s.queued = static_cast<int64_t>(queue_.size());
  s.active = active_count_;
  return s;
}

void Scheduler::loop() {
  std::vector<std::unique_ptr<Sequence>> active;
  while (true) {
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return !active.empty() || !queue_.empty() || draining_; });
      if (active.empty() && queue_.empty() && draining_) return;
      if (active.empty() && options_.batch_wait_ms > 0) {
        // Idle until now: the others of a burst get a moment to arrive.
        const auto until = queue_.front()->queued_at +
                           std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                               std::chrono::duration<double, std::milli>(options_.batch_wait_ms));
        wake_.wait_until(lock, until,
                         [&] { return draining_ || choices(queue_) >= options_.max_batch; });
      }
      // New requests join between forward passes; a request of n choices takes n places (one
      // larger than the batch runs alone).
      int64_t load = choices(active);
      while (!queue_.empty() &&
             (active.empty() || load + queue_.front()->request.n <= options_.max_batch)) {
        load += queue_.front()->request.n;
        active.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
      active_count_ = load;
    }
    std::vector<Outgoing> out = step(active);
    {
      std::lock_guard lock(mutex_);
      active_count_ = choices(active);
    }
    // Events go out after the bookkeeping, so a reader who sees its request end also sees the
    // slot it freed.
    for (auto& [channel, event] : out) channel->push(std::move(event));
  }
}

// One forward over every active sequence: a prompt chunk for those still prefilling, one token
// for those decoding. Finished and cancelled sequences leave (their KV caches with them).
std::vector<Scheduler::Outgoing> Scheduler::step(std::vector<std::unique_ptr<Sequence>>& active) {
  using RE = RequestChannel::Event;
  std::vector<Outgoing> out;
  std::erase_if(active, [&](const std::unique_ptr<Sequence>& s) {
    if (!s->channel->cancelled()) return false;
    recycle(*s);
    RE e{"",
         true,
         "cancelled",
         "",
         s->decoder->prompt_tokens(),
         static_cast<int64_t>(s->decoder->tokens().size())};
    e.index = s->index;
    out.emplace_back(s->channel, std::move(e));
    return true;
  });
  std::vector<SequenceInput> inputs;
  std::vector<Sequence*> sampled;  // sequences whose logits row is a next-token distribution
  int64_t tokens = 0;
  // Prompt tokens left for this forward. The budget protects streams that are decoding; when
  // none is, no one waits on this forward but the prompts themselves, so they all go in whole
  // (each up to prefill_chunk) and their streams start together, as llama-server's do.
  const bool decoding = std::any_of(active.begin(), active.end(), [](const auto& s) {
    return s->cache.max_length() != 0 &&
           s->prefilled == static_cast<int64_t>(s->request.prompt.size());
  });
  int64_t budget = decoding ? options_.prefill_budget : std::numeric_limits<int64_t>::max();
  for (auto& s : active) {
    const auto& prompt = s->request.prompt;
    if (s->cache.max_length() == 0) {
      if (!take_spare(s->cache)) s->cache = model_.new_cache();
      // Room for the whole sequence at once (the prompt plus max_tokens, which submit() checked
      // against the context), so it never grows by copying mid-stream.
      s->cache.reserve_more(static_cast<int64_t>(prompt.size()) + s->request.options.max_tokens);
      // A prefix seen before comes from the prefix cache; at least the last prompt token is
      // computed, for its logits.
      if (prefix_cache_) {
        s->prefilled = prefix_cache_->restore(s->request.prefix_owner, prompt,
                                              static_cast<int64_t>(prompt.size()) - 1, s->cache);
      }
    }
    const int64_t left = static_cast<int64_t>(prompt.size()) - s->prefilled;
    SequenceInput in{&s->cache, {}, false, s->request.options.adapter};
    if (left > 0) {
      const int64_t n = std::min({left, options_.prefill_chunk, budget});
      if (n <= 0) continue;  // the budget is spent: this prompt goes on next forward
      budget -= n;
      in.tokens = std::span<const int32_t>(prompt).subspan(s->prefilled, n);
      s->prefilled += n;
    } else {
      in.tokens = {&s->next_input, 1};
    }
    tokens += static_cast<int64_t>(in.tokens.size());
    inputs.push_back(in);
    sampled.push_back(s->prefilled == static_cast<int64_t>(prompt.size()) ? s.get() : nullptr);
  }
  std::vector<float> logits;
  if (!inputs.empty()) {
    const auto start = std::chrono::steady_clock::now();
    try {
      model_.forward(inputs, &logits, pool_);
    } catch (const std::exception& e) {
      for (auto& s : active) {
        for (int i = 0; i <= static_cast<int>(s->siblings.size()); ++i) {
          RE error{"", true, "error", e.what(), s->decoder->prompt_tokens(), 0};
          error.index = i == 0 ? s->index : s->siblings[i - 1]->index;
          out.emplace_back(s->channel, std::move(error));
        }
      }
      active.clear();
      return out;
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    {
      std::lock_guard lock(mutex_);
      last_.last_batch_sequences = static_cast<int64_t>(inputs.size());
      last_.last_batch_tokens = tokens;
    }
    if (on_batch) on_batch(static_cast<int64_t>(inputs.size()), tokens, seconds);
  }
  const int64_t V = model_.config().vocab_size;
  std::vector<std::unique_ptr<Sequence>> spawned;
  std::set<const Sequence*> failed;
  for (size_t i = 0; i < sampled.size(); ++i) {
    Sequence* s = sampled[i];
    if (s == nullptr) continue;  // mid-prompt chunk: its logits predict nothing yet
    if (s->decoder->tokens().empty()) {
      const int64_t P = static_cast<int64_t>(s->request.prompt.size());
      // The prompt was just completed: its whole blocks are kept for later requests.
      if (prefix_cache_)
        prefix_cache_->store(s->request.prefix_owner, s->request.prompt, P, s->cache);
      // The other choices start from a copy of its keys and values; each computes the last
      // prompt position itself, for logits of its own (the same, the forward being
      // batch-invariant).
      for (auto& sibling : s->siblings) {
        take_spare(sibling->cache);  // copied into buffers already there, if any
        sibling->cache = s->cache;
        sibling->cache.truncate(P - 1);
        sibling->prefilled = P - 1;
        spawned.push_back(std::move(sibling));
      }
      s->siblings.clear();
    }
    std::string text;
    try {
      text = s->decoder->step(std::span<float>(logits).subspan(i * V, V));
    } catch (const std::exception& e) {
      // A constraint that could not go on (a broken invariant, never user input): this request
      // ends in an error; the engine and everyone else's requests go on.
      for (int k = 0; k <= static_cast<int>(s->siblings.size()); ++k) {
        RE error{"", true, "error", e.what(), s->decoder->prompt_tokens(), 0};
        error.index = k == 0 ? s->index : s->siblings[static_cast<size_t>(k - 1)]->index;
        out.emplace_back(s->channel, std::move(error));
      }
      s->siblings.clear();
      s->channel->cancel();  // its other choices leave at the next step
      failed.insert(s);
      continue;
    }
    if (!s->decoder->done()) s->next_input = s->decoder->tokens().back();
    if (const auto& lp = s->decoder->last_logprob()) s->logprobs.push_back(*lp);
    if (!text.empty() || s->decoder->done() || !s->logprobs.empty()) {
      RE e{std::move(text), s->decoder->done(), "", "", 0, 0};
      e.index = s->index;
      e.logprobs = std::move(s->logprobs);
      s->logprobs.clear();
      if (e.done) {
        e.finish_reason = s->decoder->finish_reason();
        e.prompt_tokens = s->decoder->prompt_tokens();
        e.completion_tokens = static_cast<int64_t>(s->decoder->tokens().size());
      }
      out.emplace_back(s->channel, std::move(e));
    }
  }
  std::erase_if(active, [&](const std::unique_ptr<Sequence>& s) {
    if (!s->decoder->done() && failed.count(s.get()) == 0) return false;
    recycle(*s);
    return true;
  });
  for (auto& s : spawned) active.push_back(std::move(s));
  return out;
}

bool Scheduler::take_spare(KVCache& into) {
  if (spare_caches_.empty()) return false;
  into = std::move(spare_caches_.back());
  spare_caches_.pop_back();
  return true;
}

void Scheduler::recycle(Sequence& s) {
  if (s.cache.max_length() == 0 || static_cast<int64_t>(spare_caches_.size()) >= options_.max_batch)
    return;
  s.cache.clear();
  spare_caches_.push_back(std::move(s.cache));
  s.cache = KVCache();
}

}  // namespace bitdelta
