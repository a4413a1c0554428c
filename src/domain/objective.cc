#include "domain/objective.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "domain/brent.h"
#include "model/generate.h"
#include "train/eval.h"
#include "util/error.h"
#include "util/subprocess.h"

namespace bitdelta {

using nlohmann::json;

namespace {

json messages_json(const std::vector<ChatMessage>& messages) {
  json out = json::array();
  for (const auto& m : messages) out.push_back({{"role", m.role}, {"content", m.content}});
  return out;
}

// The conversation up to (not including) its last assistant message, and that message.
std::pair<std::vector<ChatMessage>, std::string> split_last_reply(
    const std::vector<ChatMessage>& conversation) {
  for (size_t i = conversation.size(); i-- > 0;) {
    if (conversation[i].role == "assistant") {
      return {std::vector<ChatMessage>(conversation.begin(),
                                       conversation.begin() + static_cast<std::ptrdiff_t>(i)),
              conversation[i].content};
    }
  }
  return {conversation, ""};
}

}  // namespace

json ObjectiveResult::to_json() const {
  json t = json::array();
  for (const auto& [m, s] : trace) t.push_back({m, s});
  return {{"objective", objective},
          {"description", description},
          {"method", "brent"},
          {"bounds", {lo, hi}},
          {"multiplier", multiplier},
          {"score", score},
          {"score_calibrated", score_calibrated},
          {"score_base", score_base},
          {"min_gain", min_gain},
          {"evaluations", evaluations},
          {"trace", t}};
}

AdapterWeights scaled_adapter_weights(const AdapterWeights& weights, float m,
                                      std::list<std::vector<float>>& storage) {
  AdapterWeights out = weights;
  auto scale = [&](LinearDelta& d) {
    if (!d.signs) return;
    const int64_t n = d.signs->per_row ? d.signs->rows : 1;
    std::vector<float>& s = storage.emplace_back(d.signs->scales, d.signs->scales + n);
    for (float& v : s) v *= m;
    d.signs->scales = s.data();
  };
  for (LayerDelta& layer : out.layers) {
    for (LinearDeltaMember member : {&LayerDelta::q, &LayerDelta::k, &LayerDelta::v, &LayerDelta::o,
                                     &LayerDelta::gate, &LayerDelta::up, &LayerDelta::down}) {
      scale(layer.*member);
    }
  }
  scale(out.embed);
  scale(out.lm_head);
  return out;
}

DomainObjective::DomainObjective(const DomainObjectiveData& data,
                                 const std::vector<std::vector<ChatMessage>>& heldout,
                                 Transformer& base, const Tokenizer& tokenizer,
                                 const ChatTemplate& chat, const ObjectiveOptions& options,
                                 const std::filesystem::path& work_dir, ThreadPool& pool)
    : data_(data),
      heldout_(heldout),
      base_(base),
      tokenizer_(tokenizer),
      chat_(chat),
      o_(options),
      pool_(pool) {
  if (!o_.scorer_cmd.empty()) return;
  if (!data_.scored.empty()) {
    const auto path = work_dir / "objective_scored.jsonl";
    write_conversations_jsonl(data_.scored, path);
    scored_ = std::make_unique<TrainingData>(TrainingData::load(path, tokenizer_, &chat_));
  }
  if (!data_.choices.empty()) {
    std::vector<std::vector<ChatMessage>> lines;
    for (const ChoiceItem& item : data_.choices) {
      for (const std::string& option : item.options) {
        auto conversation = item.context;
        conversation.push_back({"assistant", option, ""});
        lines.push_back(std::move(conversation));
      }
    }
    const auto path = work_dir / "objective_choices.jsonl";
    write_conversations_jsonl(lines, path);
    choices_ = std::make_unique<TrainingData>(TrainingData::load(path, tokenizer_, &chat_));
  }
  if (!scored_ && !choices_) fail("the {} objective has nothing held out to score", data_.name);
}

DomainObjective::~DomainObjective() = default;

double DomainObjective::score(const AdapterWeights* adapter) {
  if (!o_.scorer_cmd.empty()) return external(adapter);
  return choices_ ? choice_accuracy(adapter) : likelihood(adapter);
}

ModelScore DomainObjective::scores(const TrainingData& data, const AdapterWeights* adapter) {
  EvalOptions e;
  e.seq_len = std::min<int64_t>(o_.seq_len, base_.config().max_position_embeddings);
  e.max_windows = 0;
  e.score_base = adapter == nullptr;
  const EvalReport r = evaluate({&base_, nullptr, adapter}, data, e, pool_);
  return *r.find(adapter ? "bitdelta" : "base");
}

double DomainObjective::likelihood(const AdapterWeights* adapter) {
  return -scores(*scored_, adapter).nll;  // mean log-likelihood per token
}

double DomainObjective::choice_accuracy(const AdapterWeights* adapter) {
  const ModelScore s = scores(*choices_, adapter);
  size_t k = 0;
  double right = 0, log_p = 0;
  for (const ChoiceItem& item : data_.choices) {
    std::vector<double> ll;
    for (size_t j = 0; j < item.options.size(); ++j, ++k) ll.push_back(-s.window_nll.at(k));
    const size_t best = static_cast<size_t>(std::max_element(ll.begin(), ll.end()) - ll.begin());
    right += best == item.answer;
    const double top = ll[best];
    double sum = 0;
    for (double v : ll) sum += std::exp(v - top);
    log_p += ll[item.answer] - top - std::log(sum);
  }
  const auto n = static_cast<double>(data_.choices.size());
  return right / n + 0.001 * log_p / n;
}

double DomainObjective::external(const AdapterWeights* adapter) {
  std::string input;
  const auto items = std::min<int64_t>(o_.scorer_items, static_cast<int64_t>(heldout_.size()));
  for (int64_t i = 0; i < items; ++i) {
    auto [context, reference] = split_last_reply(heldout_[static_cast<size_t>(i)]);
    const std::vector<int32_t> prompt =
        tokenizer_.encode(chat_.render(context, {.add_generation_prompt = true}));
    GenerateOptions g;
    g.max_tokens = o_.scorer_max_tokens;
    g.adapter = adapter;
    g.continues_prompt = false;
    g.strip_leading_space = chat_.format() == ChatFormat::kPlain;
    if (tokenizer_.eos_id()) g.stop_ids.push_back(*tokenizer_.eos_id());
    for (const char* end : {"<|im_end|>", "<|eot_id|>", "<|endoftext|>"}) {
      if (auto id = tokenizer_.token_id(end)) g.stop_ids.push_back(*id);
    }
    const GenerateResult r = generate(base_, &tokenizer_, prompt, g, {}, pool_);
    input +=
        json{{"messages", messages_json(context)}, {"response", r.text}, {"reference", reference}}
            .dump() +
        "\n";
  }
  const CommandResult r = run_command(o_.scorer_cmd, input, o_.scorer_timeout_s);
  if (r.timed_out) {
    fail(
        "--scorer-cmd '{}' did not answer within {} s; make it faster or raise "
        "--scorer-timeout",
        o_.scorer_cmd, o_.scorer_timeout_s);
  }
  if (r.exit_code != 0) {
    fail("--scorer-cmd '{}' failed with exit status {}{}", o_.scorer_cmd, r.exit_code,
         r.err.empty() ? "" : ": " + r.err.substr(0, 500));
  }
  std::string out = r.out;
  while (!out.empty() && std::isspace(static_cast<unsigned char>(out.back()))) out.pop_back();
  while (!out.empty() && std::isspace(static_cast<unsigned char>(out.front()))) out.erase(0, 1);
  double v = 0;
  const auto [end, ec] = std::from_chars(out.data(), out.data() + out.size(), v);
  if (out.empty() || ec != std::errc() || end != out.data() + out.size() || !std::isfinite(v)) {
    fail("--scorer-cmd '{}' must print one finite number (the score), printed '{}'", o_.scorer_cmd,
         out.substr(0, 200));
  }
  return v;
}

ObjectiveResult DomainObjective::search(const AdapterWeights& calibrated,
                                        const std::function<void(double, double)>& on_evaluation) {
  ObjectiveResult r;
  r.objective = o_.scorer_cmd.empty() ? data_.name : "scorer-cmd";
  r.description =
      o_.scorer_cmd.empty()
          ? data_.description
          : fmt::format(
                "the score '{}' gives greedy replies to {} held-out "
                "conversations",
                o_.scorer_cmd,
                std::min<size_t>(heldout_.size(), static_cast<size_t>(o_.scorer_items)));
  r.lo = o_.lo;
  r.hi = o_.hi;
  auto at = [&](double m) {
    std::list<std::vector<float>> storage;
    const AdapterWeights w = scaled_adapter_weights(calibrated, static_cast<float>(m), storage);
    const double s = score(&w);
    if (on_evaluation) on_evaluation(m, s);
    return s;
  };
  r.score_base = score(nullptr);
  r.score_calibrated = at(1.0);
  const BrentResult b = brent_maximize(at, o_.lo, o_.hi, o_.tol, o_.max_evaluations);
  r.trace = b.trace;
  r.trace.insert(r.trace.begin(), {1.0, r.score_calibrated});
  r.evaluations = b.evaluations + 1;
  // The calibrated scales stay unless the search found clearly better: at least one more right
  // prediction (classification), 0.001 nats a token (likelihood) or any gain (--scorer-cmd).
  r.min_gain = !o_.scorer_cmd.empty() ? 0.0
               : choices_             ? 1.0 / static_cast<double>(data_.choices.size())
                                      : 1e-3;
  if (b.value >= r.score_calibrated + r.min_gain || o_.lo > 1 || o_.hi < 1) {
    r.multiplier = b.x;
    r.score = b.value;
  } else {
    r.multiplier = 1;
    r.score = r.score_calibrated;
  }
  return r;
}

}  // namespace bitdelta
