// The Prometheus registry: render() is parsed back line by line (HELP/TYPE, samples, label
// escaping, cumulative buckets, sums, counts), registration rules, and updates from 8 threads.
#include "serve/metrics.h"

#include <gtest/gtest.h>

#include <atomic>
#include <charconv>
#include <cmath>
#include <map>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace bitdelta {
namespace {

struct Sample {
  std::string name;
  std::map<std::string, std::string> labels;
  double value = 0;
};

struct Exposition {
  std::map<std::string, std::string> help;  // metric → help text (unescaped)
  std::map<std::string, std::string> type;  // metric → type
  std::vector<Sample> samples;
  std::vector<std::string> errors;  // lines that do not follow the format

  std::vector<Sample> find(const std::string& name,
                           const std::map<std::string, std::string>& labels = {}) const {
    std::vector<Sample> found;
    for (const auto& s : samples) {
      bool match = s.name == name;
      for (const auto& [k, v] : labels) {
        auto it = s.labels.find(k);
        match = match && it != s.labels.end() && it->second == v;
      }
      if (match) found.push_back(s);
    }
    return found;
  }
  double value(const std::string& name,
               const std::map<std::string, std::string>& labels = {}) const {
    auto found = find(name, labels);
    EXPECT_EQ(found.size(), 1u) << name;
    return found.empty() ? NAN : found[0].value;
  }
};

bool name_char(char c, bool first) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
         (!first && c >= '0' && c <= '9');
}

double parse_number(const std::string& text, bool* ok) {
  *ok = true;
  if (text == "+Inf") return INFINITY;
  if (text == "-Inf") return -INFINITY;
  if (text == "NaN") return NAN;
  double value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  *ok = ec == std::errc() && end == text.data() + text.size();
  return value;
}

// A strict reader of the text exposition format, as far as this registry uses it.
Exposition parse_exposition(const std::string& text) {
  Exposition out;
  if (!text.empty() && text.back() != '\n') out.errors.push_back("no final newline");
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    auto bad = [&] { out.errors.push_back(line); };
    if (line.starts_with("# HELP ") || line.starts_with("# TYPE ")) {
      const std::string rest = line.substr(7);
      const size_t space = rest.find(' ');
      if (space == std::string::npos) {
        bad();
        continue;
      }
      const std::string name = rest.substr(0, space);
      std::string body = rest.substr(space + 1);
      if (line[2] == 'H') {
        std::string unescaped;
        for (size_t i = 0; i < body.size(); ++i) {
          if (body[i] == '\\' && i + 1 < body.size()) {
            const char n = body[++i];
            if (n == 'n') {
              unescaped += '\n';
            } else if (n == '\\') {
              unescaped += '\\';
            } else {
              bad();
            }
          } else {
            unescaped += body[i];
          }
        }
        out.help[name] = unescaped;
      } else {
        if (body != "counter" && body != "gauge" && body != "histogram") bad();
        if (out.type.contains(name)) bad();  // TYPE once per metric
        out.type[name] = body;
      }
      continue;
    }
    if (line.empty() || line[0] == '#') {
      bad();
      continue;
    }
    Sample sample;
    size_t i = 0;
    while (i < line.size() && name_char(line[i], i == 0)) sample.name += line[i++];
    if (sample.name.empty()) {
      bad();
      continue;
    }
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (i < line.size() && line[i] != '}') {
        std::string label;
        while (i < line.size() && name_char(line[i], label.empty()) && line[i] != ':') {
          label += line[i++];
        }
        if (label.empty() || i + 1 >= line.size() || line[i] != '=' || line[i + 1] != '"') break;
        i += 2;
        std::string value;
        bool closed = false;
        while (i < line.size()) {
          const char c = line[i++];
          if (c == '"') {
            closed = true;
            break;
          }
          if (c == '\\' && i < line.size()) {
            const char n = line[i++];
            value += n == 'n' ? '\n' : n;  // \\ → \, \" → ", \n → newline
            if (n != 'n' && n != '\\' && n != '"') bad();
          } else {
            value += c;
          }
        }
        if (!closed || sample.labels.contains(label)) break;
        sample.labels[label] = value;
        if (i < line.size() && line[i] == ',') ++i;
      }
      if (i >= line.size() || line[i] != '}') {
        bad();
        continue;
      }
      ++i;
    }
    if (i >= line.size() || line[i] != ' ') {
      bad();
      continue;
    }
    bool ok = false;
    sample.value = parse_number(line.substr(i + 1), &ok);
    if (!ok) {
      bad();
      continue;
    }
    out.samples.push_back(std::move(sample));
  }
  return out;
}

TEST(Metrics, CountersAndGaugesRender) {
  MetricsRegistry registry;
  Counter requests = registry.counter("bitdelta_requests_total", "Requests served.");
  Gauge in_flight = registry.gauge("bitdelta_in_flight", "Requests in flight.");
  requests.inc();
  requests.inc(2.5);
  in_flight.inc(3);
  in_flight.dec();
  EXPECT_DOUBLE_EQ(requests.value(), 3.5);
  EXPECT_DOUBLE_EQ(in_flight.value(), 2);
  in_flight.set(-1.25);

  const Exposition e = parse_exposition(registry.render());
  EXPECT_TRUE(e.errors.empty()) << e.errors.front();
  EXPECT_EQ(e.type.at("bitdelta_requests_total"), "counter");
  EXPECT_EQ(e.type.at("bitdelta_in_flight"), "gauge");
  EXPECT_EQ(e.help.at("bitdelta_requests_total"), "Requests served.");
  EXPECT_EQ(e.value("bitdelta_requests_total"), 3.5);
  EXPECT_EQ(e.value("bitdelta_in_flight"), -1.25);
  EXPECT_TRUE(e.find("bitdelta_in_flight")[0].labels.empty());
}

TEST(Metrics, ExactTextForASimpleRegistry) {
  MetricsRegistry registry;
  registry.counter("a_total", "A.").inc(3);
  registry.histogram("h_seconds", "H.", {0.5, 1}).observe(0.75);
  EXPECT_EQ(registry.render(),
            "# HELP a_total A.\n"
            "# TYPE a_total counter\n"
            "a_total 3\n"
            "# HELP h_seconds H.\n"
            "# TYPE h_seconds histogram\n"
            "h_seconds_bucket{le=\"0.5\"} 0\n"
            "h_seconds_bucket{le=\"1\"} 1\n"
            "h_seconds_bucket{le=\"+Inf\"} 1\n"
            "h_seconds_sum 0.75\n"
            "h_seconds_count 1\n");
}

TEST(Metrics, UnusedMetricsRenderAsZero) {
  MetricsRegistry registry;
  registry.counter("c_total", "C.");
  registry.histogram("h", "H.", default_latency_buckets());
  registry.counter_family("f_total", "F.", {"code"});  // no children yet: HELP and TYPE only
  const Exposition e = parse_exposition(registry.render());
  EXPECT_TRUE(e.errors.empty());
  EXPECT_EQ(e.value("c_total"), 0);
  EXPECT_EQ(e.value("h_count"), 0);
  EXPECT_EQ(e.value("h_bucket", {{"le", "+Inf"}}), 0);
  EXPECT_EQ(e.type.at("f_total"), "counter");
  EXPECT_TRUE(e.find("f_total").empty());
}

TEST(Metrics, HistogramBucketsAreCumulative) {
  MetricsRegistry registry;
  Histogram latency = registry.histogram("lat_seconds", "Latency.", {0.1, 0.5, 1});
  for (double v : {0.05, 0.1, 0.3, 2.0, 5.0, -1.0}) latency.observe(v);
  latency.observe(NAN);  // dropped
  EXPECT_EQ(latency.count(), 6u);
  EXPECT_DOUBLE_EQ(latency.sum(), 6.45);

  const Exposition e = parse_exposition(registry.render());
  EXPECT_TRUE(e.errors.empty()) << e.errors.front();
  EXPECT_EQ(e.type.at("lat_seconds"), "histogram");
  // -1 and 0.05 and 0.1 (a bound is inclusive: le means ≤).
  EXPECT_EQ(e.value("lat_seconds_bucket", {{"le", "0.1"}}), 3);
  EXPECT_EQ(e.value("lat_seconds_bucket", {{"le", "0.5"}}), 4);
  EXPECT_EQ(e.value("lat_seconds_bucket", {{"le", "1"}}), 4);
  EXPECT_EQ(e.value("lat_seconds_bucket", {{"le", "+Inf"}}), 6);
  EXPECT_DOUBLE_EQ(e.value("lat_seconds_sum"), 6.45);
  EXPECT_EQ(e.value("lat_seconds_count"), 6);

  // Buckets appear in increasing le order and never decrease.
  const auto buckets = e.find("lat_seconds_bucket");
  ASSERT_EQ(buckets.size(), 4u);
  for (size_t i = 1; i < buckets.size(); ++i) {
    bool ok = false;
    EXPECT_LT(parse_number(buckets[i - 1].labels.at("le"), &ok),
              parse_number(buckets[i].labels.at("le"), &ok));
    EXPECT_LE(buckets[i - 1].value, buckets[i].value);
  }
}

TEST(Metrics, LabelledFamilies) {
  MetricsRegistry registry;
  CounterFamily requests =
      registry.counter_family("http_requests_total", "HTTP requests.", {"route", "code"});
  requests.labels({"/v1/models", "200"}).inc();
  requests.labels({"/v1/models", "200"}).inc();
  requests.labels({"/v1/chat/completions", "404"}).inc();
  EXPECT_EQ(requests.labels({"/v1/models", "200"}).value(), 2);
  HistogramFamily latency =
      registry.histogram_family("route_seconds", "Latency by route.", {"route"}, {1, 2});
  latency.labels({"a"}).observe(1.5);
  latency.labels({"b"}).observe(3);
  GaugeFamily cached = registry.gauge_family("cached", "Adapters cached.", {"domain"});
  cached.labels({"education"}).set(4);

  const Exposition e = parse_exposition(registry.render());
  EXPECT_TRUE(e.errors.empty()) << e.errors.front();
  EXPECT_EQ(e.value("http_requests_total", {{"route", "/v1/models"}, {"code", "200"}}), 2);
  EXPECT_EQ(e.value("http_requests_total", {{"route", "/v1/chat/completions"}, {"code", "404"}}),
            1);
  EXPECT_EQ(e.value("route_seconds_bucket", {{"route", "a"}, {"le", "2"}}), 1);
  EXPECT_EQ(e.value("route_seconds_bucket", {{"route", "b"}, {"le", "2"}}), 0);
  EXPECT_EQ(e.value("route_seconds_bucket", {{"route", "b"}, {"le", "+Inf"}}), 1);
  EXPECT_EQ(e.value("route_seconds_count", {{"route", "b"}}), 1);
  EXPECT_EQ(e.value("route_seconds_sum", {{"route", "a"}}), 1.5);
  EXPECT_EQ(e.value("cached", {{"domain", "education"}}), 4);
  EXPECT_EQ(e.find("http_requests_total").size(), 2u);
}

TEST(Metrics, LabelValuesAndHelpAreEscaped) {
  MetricsRegistry registry;
  const std::string nasty = "a\"b\\c\nd}e,f=g";
  registry.counter_family("odd_total", "Help with \\ and\nnewline.", {"v"}).labels({nasty}).inc();
  const std::string text = registry.render();
  EXPECT_NE(text.find(R"(odd_total{v="a\"b\\c\nd}e,f=g"} 1)"), std::string::npos) << text;
  EXPECT_NE(text.find(R"(# HELP odd_total Help with \\ and\nnewline.)"), std::string::npos);

  const Exposition e = parse_exposition(text);
  EXPECT_TRUE(e.errors.empty()) << e.errors.front();
  EXPECT_EQ(e.value("odd_total", {{"v", nasty}}), 1);
  EXPECT_EQ(e.help.at("odd_total"), "Help with \\ and\nnewline.");
}

TEST(Metrics, RegisteringAgainReturnsTheSameMetric) {
  MetricsRegistry registry;
  Counter a = registry.counter("x_total", "X.");
  Counter b = registry.counter("x_total", "X.");
  a.inc();
  b.inc();
  EXPECT_EQ(a.value(), 2);
  registry.counter_family("y_total", "Y.", {"k"}).labels({"v"}).inc();
  registry.counter_family("y_total", "Y.", {"k"}).labels({"v"}).inc();
  const Exposition e = parse_exposition(registry.render());
  EXPECT_EQ(e.value("x_total"), 2);
  EXPECT_EQ(e.value("y_total", {{"k", "v"}}), 2);
}

TEST(Metrics, ProgrammerErrorsThrow) {
  MetricsRegistry registry;
  registry.counter("dup_total", "D.");
  EXPECT_THROW(registry.gauge("dup_total", "D."), std::logic_error);
  EXPECT_THROW(registry.counter_family("dup_total", "D.", {"k"}), std::logic_error);
  registry.histogram("hist", "H.", {1, 2});
  EXPECT_THROW(registry.histogram("hist", "H.", {1, 3}), std::logic_error);
  EXPECT_THROW(registry.counter("", "Empty."), std::logic_error);
  EXPECT_THROW(registry.counter("9lives", "Digit first."), std::logic_error);
  EXPECT_THROW(registry.counter("has-dash", "Dash."), std::logic_error);
  EXPECT_THROW(registry.counter_family("c1", "C.", {"__reserved"}), std::logic_error);
  EXPECT_THROW(registry.counter_family("c2", "C.", {"a:b"}), std::logic_error);
  EXPECT_THROW(registry.counter_family("c3", "C.", {"k", "k"}), std::logic_error);
  EXPECT_THROW(registry.histogram_family("h1", "H.", {"le"}, {1}), std::logic_error);
  EXPECT_THROW(registry.histogram("h2", "H.", {}), std::logic_error);
  EXPECT_THROW(registry.histogram("h3", "H.", {1, 1}), std::logic_error);
  EXPECT_THROW(registry.histogram("h4", "H.", {2, 1}), std::logic_error);
  EXPECT_THROW(registry.histogram("h5", "H.", {1, INFINITY}), std::logic_error);

  Counter counter = registry.counter("ok_total", "OK.");
  EXPECT_THROW(counter.inc(-1), std::logic_error);
  EXPECT_THROW(counter.inc(NAN), std::logic_error);
  CounterFamily family = registry.counter_family("fam_total", "F.", {"a", "b"});
  EXPECT_THROW(family.labels({"only-one"}), std::logic_error);
  EXPECT_THROW(family.labels({"1", "2", "3"}), std::logic_error);

  // Nothing half-registered leaks into the output.
  const Exposition e = parse_exposition(registry.render());
  EXPECT_TRUE(e.errors.empty()) << e.errors.front();
  EXPECT_FALSE(e.type.contains("c1"));
  EXPECT_FALSE(e.type.contains("h5"));
}

TEST(Metrics, BucketHelpers) {
  EXPECT_EQ(exponential_buckets(1, 2, 4), (std::vector<double>{1, 2, 4, 8}));
  const auto latency = default_latency_buckets();
  EXPECT_TRUE(std::is_sorted(latency.begin(), latency.end()));
  EXPECT_EQ(latency.front(), 0.005);
  EXPECT_EQ(latency.back(), 10);
  EXPECT_THROW(exponential_buckets(0, 2, 3), std::logic_error);
  EXPECT_THROW(exponential_buckets(1, 1, 3), std::logic_error);
}

TEST(Metrics, EightThreadsUpdatingWhileRendering) {
  MetricsRegistry registry;
  Counter counter = registry.counter("ops_total", "Ops.");
  Gauge gauge = registry.gauge("level", "Level.");
  Histogram histogram = registry.histogram("op_seconds", "Op time.", {0.25, 0.5, 0.75});
  CounterFamily by_thread = registry.counter_family("by_thread_total", "Ops by thread.", {"t"});
  constexpr int kThreads = 8;
  constexpr int kIterations = 20000;

  std::atomic<bool> done{false};
  std::atomic<int> renders{0};
  std::vector<std::string> render_errors;
  std::thread renderer([&] {
    while (!done.load()) {
      const Exposition e = parse_exposition(registry.render());
      if (!e.errors.empty()) render_errors.push_back(e.errors.front());
      // +Inf always equals _count, and buckets never decrease, even mid-update.
      const auto buckets = e.find("op_seconds_bucket");
      for (size_t i = 1; i < buckets.size(); ++i) {
        if (buckets[i].value < buckets[i - 1].value) render_errors.push_back("decreasing");
      }
      if (buckets.empty() || buckets.back().value != e.value("op_seconds_count")) {
        render_errors.push_back("+Inf differs from _count");
      }
      renders.fetch_add(1);
    }
  });

  std::vector<std::thread> workers;
  for (int t = 0; t < kThreads; ++t) {
    workers.emplace_back([&, t] {
      Counter mine = by_thread.labels({std::to_string(t % 4)});  // threads share children
      for (int i = 0; i < kIterations; ++i) {
        counter.inc();
        gauge.inc(2);
        gauge.dec();
        histogram.observe((i % 4) * 0.25 + 0.125);  // one of each bucket, in turn
        mine.inc();
        if (i % 1000 == 0) by_thread.labels({std::to_string(t % 4)}).inc(0);  // lookups race too
      }
    });
  }
  for (auto& w : workers) w.join();
  done.store(true);
  renderer.join();

  EXPECT_TRUE(render_errors.empty()) << render_errors.front();
  EXPECT_GT(renders.load(), 0);
  const double total = double(kThreads) * kIterations;
  EXPECT_EQ(counter.value(), total);
  EXPECT_EQ(gauge.value(), total);
  EXPECT_EQ(histogram.count(), uint64_t(total));
  EXPECT_DOUBLE_EQ(histogram.sum(), total * 0.5);

  const Exposition e = parse_exposition(registry.render());
  EXPECT_EQ(e.value("ops_total"), total);
  EXPECT_EQ(e.value("op_seconds_bucket", {{"le", "0.25"}}), total / 4);
  EXPECT_EQ(e.value("op_seconds_bucket", {{"le", "0.5"}}), total / 2);
  EXPECT_EQ(e.value("op_seconds_bucket", {{"le", "0.75"}}), total * 3 / 4);
  EXPECT_EQ(e.value("op_seconds_bucket", {{"le", "+Inf"}}), total);
  for (int t = 0; t < 4; ++t) {
    EXPECT_EQ(e.value("by_thread_total", {{"t", std::to_string(t)}}), 2.0 * kIterations);
  }
}

}  // namespace
}  // namespace bitdelta
