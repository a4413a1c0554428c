// A small thread-safe Prometheus registry: counters, gauges and fixed-bucket histograms, each
// optionally split by labels, rendered in the Prometheus text exposition format (version 0.0.4)
// for GET /metrics.
//
// Register once at start-up and keep the handles; a handle is a pointer into the registry, so
// inc()/set()/observe() is one or two atomic operations with no lock and no lookup. Looking up a
// labelled child (Family::labels) takes a lock; hot paths should cache the child handle when the
// label values are known in advance. Handles stay valid as long as the registry lives.
//
//   MetricsRegistry registry;
//   auto requests = registry.counter_family("bitdelta_http_requests_total", "HTTP requests.",
//                                          {"route", "code"});
//   auto latency = registry.histogram("bitdelta_request_seconds", "Request latency.",
//                                     default_latency_buckets());
//   requests.labels({"/v1/chat/completions", "200"}).inc();
//   latency.observe(0.042);
//   std::string body = registry.render();  // Content-Type: kPrometheusContentType
#pragma once

#include <cstdint>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace bitdelta {

inline constexpr std::string_view kPrometheusContentType =
    "text/plain; version=0.0.4; charset=utf-8";

namespace metrics_detail {
enum class MetricType { kCounter, kGauge, kHistogram };
struct Cell;
struct Family;
// The child of `family` for `label_values` (created at zero on first use). Throws logic_error
// when the number of values differs from the family's label names.
Cell* child(Family* family, std::initializer_list<std::string_view> label_values);
}  // namespace metrics_detail

// A value that only goes up (requests, tokens, errors).
class Counter {
 public:
  // `amount` must be ≥ 0 (a negative amount is a programmer error and throws logic_error).
  void inc(double amount = 1.0) const;
  double value() const;

 private:
  friend class MetricsRegistry;
  template <typename Handle>
  friend class MetricFamily;
  explicit Counter(metrics_detail::Cell* cell) : cell_(cell) {}
  metrics_detail::Cell* cell_;
};

// A value that goes up and down (requests in flight, adapters cached, bytes resident).
class Gauge {
 public:
  void set(double value) const;
  void inc(double amount = 1.0) const;
  void dec(double amount = 1.0) const;
  double value() const;

 private:
  friend class MetricsRegistry;
  template <typename Handle>
  friend class MetricFamily;
  explicit Gauge(metrics_detail::Cell* cell) : cell_(cell) {}
  metrics_detail::Cell* cell_;
};

// Observations counted into fixed buckets (usually seconds). An observation v lands in the first
// bucket whose upper bound is ≥ v, or in +Inf; NaN observations are dropped (one would turn the
// sum into NaN for good).
class Histogram {
 public:
  void observe(double value) const;
  uint64_t count() const;  // all observations so far
  double sum() const;      // of all observations so far

 private:
  friend class MetricsRegistry;
  template <typename Handle>
  friend class MetricFamily;
  explicit Histogram(metrics_detail::Cell* cell) : cell_(cell) {}
  metrics_detail::Cell* cell_;
};

// A metric split by labels. labels({"POST", "200"}) gives the child for those values, in the
// order of the label names given at registration; values may be any text (escaped on render).
template <typename Handle>
class MetricFamily {
 public:
  Handle labels(std::initializer_list<std::string_view> label_values) const {
    return Handle(metrics_detail::child(family_, label_values));
  }

 private:
  friend class MetricsRegistry;
  explicit MetricFamily(metrics_detail::Family* family) : family_(family) {}
  metrics_detail::Family* family_;
};

using CounterFamily = MetricFamily<Counter>;
using GaugeFamily = MetricFamily<Gauge>;
using HistogramFamily = MetricFamily<Histogram>;

// Prometheus's default buckets, in seconds: 5 ms … 10 s.
std::vector<double> default_latency_buckets();
// `count` bounds start, start·factor, start·factor², … (start > 0, factor > 1, count ≥ 1).
std::vector<double> exponential_buckets(double start, double factor, int count);

class MetricsRegistry {
 public:
  MetricsRegistry();
  ~MetricsRegistry();
  MetricsRegistry(const MetricsRegistry&) = delete;  // handles point into it
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // Registration. Names must match [a-zA-Z_:][a-zA-Z0-9_:]*, label names [a-zA-Z_][a-zA-Z0-9_]*
  // (not starting with "__"; "le" is reserved for histograms); bucket bounds finite and strictly
  // increasing (+Inf is implied). Registering a name again with the same type, label names and
  // buckets returns the same metric; anything else is a programmer error and throws logic_error.
  Counter counter(std::string name, std::string help);
  Gauge gauge(std::string name, std::string help);
  Histogram histogram(std::string name, std::string help, std::vector<double> bucket_bounds);
  CounterFamily counter_family(std::string name, std::string help,
                               std::vector<std::string> label_names);
  GaugeFamily gauge_family(std::string name, std::string help,
                           std::vector<std::string> label_names);
  HistogramFamily histogram_family(std::string name, std::string help,
                                   std::vector<std::string> label_names,
                                   std::vector<double> bucket_bounds);

  // Every metric in registration order, children sorted by label values: # HELP and # TYPE
  // lines, then samples; histograms as cumulative name_bucket{le="…"} (ending with +Inf),
  // name_sum and name_count. Safe to call while other threads update metrics; each histogram's
  // +Inf bucket always equals its _count.
  std::string render() const;

 private:
  metrics_detail::Family* add_family(metrics_detail::MetricType type, std::string name,
                                     std::string help, std::vector<std::string> label_names,
                                     std::vector<double> bucket_bounds);

  mutable std::mutex mutex_;
  std::vector<std::unique_ptr<metrics_detail::Family>> families_;
};

}  // namespace bitdelta
