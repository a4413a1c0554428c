// Training losses over logits [T, V] with their gradients, split across threads by token.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "util/thread_pool.h"

namespace bitdelta {

// Cross-entropy of the tokens whose target is ≥ 0 (others are masked: prompt, padding).
// Returns the SUM of their negative log-likelihoods; writes dlogits = (softmax − onehot) /
// normalizer (0 on masked rows), so with normalizer = the number of counted targets over all
// micro-batches of a step, the accumulated gradient is that of the mean loss.
double cross_entropy(std::span<const float> logits, std::span<const int32_t> targets,
                     int64_t vocab, double normalizer, std::span<float> dlogits,
                     ThreadPool& pool);

// Scale distillation's objective between the student's logits and the teacher's (the
// fine-tuned model's) over the same tokens: kMse = mean over T·V of (student − teacher)²;
// kKl = mean over T of KL(softmax(teacher) ‖ softmax(student)). Returns the loss and writes
// its gradient (times `grad_scale`, e.g. 1/micro-batches) with respect to the student logits.
enum class DistillLoss { kMse, kKl };
DistillLoss parse_distill_loss(std::string_view name);  // "mse" | "kl"
double distill_loss(std::span<const float> student, std::span<const float> teacher,
                    int64_t vocab, DistillLoss kind, double grad_scale,
                    std::span<float> dlogits, ThreadPool& pool);

}  // namespace bitdelta
