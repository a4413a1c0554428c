#include "serve/metrics.h"

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <map>
#include <span>

#include "util/error.h"

namespace bitdelta {

namespace metrics_detail {

// One time series (or, for a histogram, one set of buckets with its sum).
struct Cell {
  std::atomic<double> value{0.0};  // counter, gauge
  // Histogram: bounds.size() + 1 per-bucket (not cumulative) counts, the last one +Inf. Render
  // derives _count from them, so _count and the +Inf bucket can never disagree.
  std::unique_ptr<std::atomic<uint64_t>[]> buckets;
  std::span<const double> bounds;
  std::atomic<double> sum{0.0};
};

struct Family {
  MetricType type;
  std::string name;
  std::string help;
  std::vector<std::string> label_names;
  std::vector<double> bounds;  // histograms only; never changes after registration

  std::mutex mutex;  // guards `children` (the map, not the cells' atomics)
  std::map<std::vector<std::string>, std::unique_ptr<Cell>> children;
};

Cell* child(Family* family, std::initializer_list<std::string_view> label_values) {
  BD_CHECK(label_values.size() == family->label_names.size(),
           "metric '{}' has {} label(s), got {} value(s)", family->name, family->label_names.size(),
           label_values.size());
  std::vector<std::string> key(label_values.begin(), label_values.end());
  std::lock_guard lock(family->mutex);
  auto& cell = family->children[std::move(key)];
  if (!cell) {
    cell = std::make_unique<Cell>();
    if (family->type == MetricType::kHistogram) {
      cell->bounds = family->bounds;
      cell->buckets = std::make_unique<std::atomic<uint64_t>[]>(family->bounds.size() + 1);
    }
  }
  return cell.get();
}

}  // namespace metrics_detail

using metrics_detail::Cell;
using metrics_detail::Family;
using metrics_detail::MetricType;

namespace {

bool valid_metric_name(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    if (!letter && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

bool valid_label_name(std::string_view name) {
  if (name.empty() || name.starts_with("__")) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    if (!letter && !(i > 0 && c >= '0' && c <= '9')) return false;
  }
  return true;
}

std::string_view type_name(MetricType type) {
  switch (type) {
    case MetricType::kCounter:
      return "counter";
    case MetricType::kGauge:
      return "gauge";
    case MetricType::kHistogram:
      return "histogram";
  }
  return "untyped";
}

// Go's strconv.ParseFloat reads fmt's shortest round-trip form; only the non-finite values need
// Prometheus's spelling.
std::string format_value(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  return fmt::format("{}", value);
}

void append_escaped(std::string& out, std::string_view text, bool escape_quotes) {
  for (char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '"' && escape_quotes) {
      out += "\\\"";
    } else {
      out += c;
    }
  }
}

// `{a="x",b="y"}` with an optional extra label (histograms' le) last; nothing when no labels.
void append_labels(std::string& out, const std::vector<std::string>& names,
                   const std::vector<std::string>& values, std::string_view extra_name = {},
                   std::string_view extra_value = {}) {
  if (names.empty() && extra_name.empty()) return;
  out += '{';
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) out += ',';
    out += names[i];
    out += "=\"";
    append_escaped(out, values[i], true);
    out += '"';
  }
  if (!extra_name.empty()) {
    if (!names.empty()) out += ',';
    out += extra_name;
    out += "=\"";
    out += extra_value;
    out += '"';
  }
  out += '}';
}

void render_family(std::string& out, Family& family) {
  out += "# HELP ";
  out += family.name;
  out += ' ';
  append_escaped(out, family.help, false);
  out += "\n# TYPE ";
  out += family.name;
  out += ' ';
  out += type_name(family.type);
  out += '\n';
  std::lock_guard lock(family.mutex);
  for (const auto& [label_values, cell] : family.children) {
    if (family.type != MetricType::kHistogram) {
      out += family.name;
      append_labels(out, family.label_names, label_values);
      out += ' ';
      out += format_value(cell->value.load(std::memory_order_relaxed));
      out += '\n';
      continue;
    }
    uint64_t cumulative = 0;
    for (size_t b = 0; b <= family.bounds.size(); ++b) {
      cumulative += cell->buckets[b].load(std::memory_order_relaxed);
      const std::string le =
          b < family.bounds.size() ? format_value(family.bounds[b]) : std::string("+Inf");
      out += family.name;
      out += "_bucket";
      append_labels(out, family.label_names, label_values, "le", le);
      out += ' ';
      out += std::to_string(cumulative);
      out += '\n';
    }
    out += family.name;
    out += "_sum";
    append_labels(out, family.label_names, label_values);
    out += ' ';
    out += format_value(cell->sum.load(std::memory_order_relaxed));
    out += '\n';
    out += family.name;
    out += "_count";
    append_labels(out, family.label_names, label_values);
    out += ' ';
    out += std::to_string(cumulative);
    out += '\n';
  }
}

}  // namespace

void Counter::inc(double amount) const {
  BD_CHECK(amount >= 0, "a counter only goes up (got {})", amount);
  cell_->value.fetch_add(amount, std::memory_order_relaxed);
}

double Counter::value() const { return cell_->value.load(std::memory_order_relaxed); }

void Gauge::set(double value) const { cell_->value.store(value, std::memory_order_relaxed); }
void Gauge::inc(double amount) const { cell_->value.fetch_add(amount, std::memory_order_relaxed); }
void Gauge::dec(double amount) const { cell_->value.fetch_sub(amount, std::memory_order_relaxed); }
double Gauge::value() const { return cell_->value.load(std::memory_order_relaxed); }

void Histogram::observe(double value) const {
  if (std::isnan(value)) return;
  const auto bounds = cell_->bounds;
  const size_t bucket = std::lower_bound(bounds.begin(), bounds.end(), value) - bounds.begin();
  cell_->buckets[bucket].fetch_add(1, std::memory_order_relaxed);
  cell_->sum.fetch_add(value, std::memory_order_relaxed);
}

uint64_t Histogram::count() const {
  uint64_t total = 0;
  for (size_t b = 0; b <= cell_->bounds.size(); ++b) {
    total += cell_->buckets[b].load(std::memory_order_relaxed);
  }
  return total;
}

double Histogram::sum() const { return cell_->sum.load(std::memory_order_relaxed); }

std::vector<double> default_latency_buckets() {
  return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

std::vector<double> exponential_buckets(double start, double factor, int count) {
  BD_CHECK(start > 0 && factor > 1 && count >= 1, "start {} factor {} count {}", start, factor,
           count);
  std::vector<double> bounds;
  double bound = start;
  for (int i = 0; i < count; ++i, bound *= factor) bounds.push_back(bound);
  return bounds;
}

MetricsRegistry::MetricsRegistry() = default;
MetricsRegistry::~MetricsRegistry() = default;

Family* MetricsRegistry::add_family(MetricType type, std::string name, std::string help,
                                    std::vector<std::string> label_names,
                                    std::vector<double> bucket_bounds) {
  BD_CHECK(valid_metric_name(name), "metric name '{}' must match [a-zA-Z_:][a-zA-Z0-9_:]*", name);
  for (const auto& label : label_names) {
    BD_CHECK(valid_label_name(label),
             "label name '{}' of metric '{}' must match [a-zA-Z_][a-zA-Z0-9_]* and not start "
             "with __",
             label, name);
    BD_CHECK(std::count(label_names.begin(), label_names.end(), label) == 1,
             "metric '{}' repeats label '{}'", name, label);
    BD_CHECK(type != MetricType::kHistogram || label != "le",
             "histogram '{}' may not use the label 'le' (it names the buckets)", name);
  }
  if (type == MetricType::kHistogram) {
    BD_CHECK(!bucket_bounds.empty(), "histogram '{}' needs at least one bucket", name);
    for (size_t i = 0; i < bucket_bounds.size(); ++i) {
      BD_CHECK(
          std::isfinite(bucket_bounds[i]) && (i == 0 || bucket_bounds[i - 1] < bucket_bounds[i]),
          "histogram '{}': bucket bounds must be finite and strictly increasing", name);
    }
  }

  std::lock_guard lock(mutex_);
  for (const auto& family : families_) {
    if (family->name != name) continue;
    BD_CHECK(family->type == type && family->label_names == label_names &&
                 family->bounds == bucket_bounds,
             "metric '{}' is already registered with another type, labels or buckets", name);
    return family.get();
  }
  auto family = std::make_unique<Family>();
  family->type = type;
  family->name = std::move(name);
  family->help = std::move(help);
  family->label_names = std::move(label_names);
  family->bounds = std::move(bucket_bounds);
  // An unlabelled metric has its one series from the start, so it renders as 0 before any use.
  if (family->label_names.empty()) metrics_detail::child(family.get(), {});
  families_.push_back(std::move(family));
  return families_.back().get();
}

Counter MetricsRegistry::counter(std::string name, std::string help) {
  return Counter(metrics_detail::child(
      add_family(MetricType::kCounter, std::move(name), std::move(help), {}, {}), {}));
}

Gauge MetricsRegistry::gauge(std::string name, std::string help) {
  return Gauge(metrics_detail::child(
      add_family(MetricType::kGauge, std::move(name), std::move(help), {}, {}), {}));
}

Histogram MetricsRegistry::histogram(std::string name, std::string help,
                                     std::vector<double> bucket_bounds) {
  return Histogram(metrics_detail::child(add_family(MetricType::kHistogram, std::move(name),
                                                    std::move(help), {}, std::move(bucket_bounds)),
                                         {}));
}

CounterFamily MetricsRegistry::counter_family(std::string name, std::string help,
                                              std::vector<std::string> label_names) {
  return CounterFamily(add_family(MetricType::kCounter, std::move(name), std::move(help),
                                  std::move(label_names), {}));
}

GaugeFamily MetricsRegistry::gauge_family(std::string name, std::string help,
                                          std::vector<std::string> label_names) {
  return GaugeFamily(
      add_family(MetricType::kGauge, std::move(name), std::move(help), std::move(label_names), {}));
}

HistogramFamily MetricsRegistry::histogram_family(std::string name, std::string help,
                                                  std::vector<std::string> label_names,
                                                  std::vector<double> bucket_bounds) {
  return HistogramFamily(add_family(MetricType::kHistogram, std::move(name), std::move(help),
                                    std::move(label_names), std::move(bucket_bounds)));
}

std::string MetricsRegistry::render() const {
  std::string out;
  std::lock_guard lock(mutex_);
  for (const auto& family : families_) render_family(out, *family);
  return out;
}

}  // namespace bitdelta
