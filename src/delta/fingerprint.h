// base_fingerprint: which base an adapter was made against. Defined as
//   SHA-256 over, for each base tensor the adapter touches in name order, the line
//   "<name>\t<dtype>\t<dim0>x<dim1>...\t<hex SHA-256 of the tensor's bytes>\n"
// — the names, shapes, dtypes and bytes of those tensors, as ARCHITECTURE.md asks, with the bytes
// entering through their per-tensor digest so a server hashes its base once and then checks any
// adapter in microseconds.
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "io/weight_files.h"
#include "util/thread_pool.h"

namespace bitdelta {

class BaseFingerprints {
 public:
  // `weights` must outlive this object.
  explicit BaseFingerprints(const WeightFiles& weights) : weights_(weights) {}

  // The fingerprint over `names` (any order; each must exist in the base). Digests of tensors not
  // seen before are computed in parallel on `pool` and cached. Thread safe.
  std::string fingerprint(std::vector<std::string> names, ThreadPool& pool);
  // Records a digest computed elsewhere (e.g. while the tensor was being read anyway).
  void set_digest(const std::string& name, std::string hex_digest);
  // Hashes every tensor now (e.g. at server start), so later checks cost nothing.
  void precompute(ThreadPool& pool);

 private:
  void ensure(const std::vector<std::string>& names, ThreadPool& pool);
  const WeightFiles& weights_;
  std::mutex mutex_;
  std::map<std::string, std::string> digests_;
};

}  // namespace bitdelta
