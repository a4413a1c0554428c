// An error the client caused or should know about, answered in OpenAI's error shape:
// {"error": {"message", "type", "param", "code"}}.
#pragma once

#include <httplib.h>

#include <nlohmann/json.hpp>
#include <string>

namespace bitdelta {

struct HttpError {
  int status;
  std::string message, type, code;
  std::string param = {};  // the request field at fault, when there is one
};

[[noreturn]] inline void http_fail(int status, std::string message,
                                   std::string type = "invalid_request_error",
                                   std::string code = "") {
  throw HttpError{status, std::move(message), std::move(type), std::move(code)};
}

// A 400 about one request field: OpenAI names it in "param".
[[noreturn]] inline void field_fail(std::string param, std::string message, std::string code = "") {
  throw HttpError{400, std::move(message), "invalid_request_error", std::move(code),
                  std::move(param)};
}

inline void write_error(httplib::Response& res, const HttpError& e) {
  res.status = e.status;
  nlohmann::json err{{"message", e.message},
                     {"type", e.type},
                     {"param", e.param.empty() ? nlohmann::json(nullptr) : nlohmann::json(e.param)},
                     {"code", e.code.empty() ? nlohmann::json(nullptr) : nlohmann::json(e.code)}};
  res.set_content(nlohmann::json{{"error", err}}.dump(), "application/json");
}

}  // namespace bitdelta
