// Errors raised by the attn C++ API.
#pragma once

#include <stdexcept>
#include <string>

namespace attn {

// Every invalid argument raises attn::Error with a message that names the
// argument and the offending value, e.g. "sdpa: window.left = -2 (must be >= -1)".
// Library code never calls exit() or abort().
class Error : public std::invalid_argument {
 public:
  enum class Kind { kValue, kType };
  explicit Error(const std::string& message, Kind kind = Kind::kValue)
      : std::invalid_argument(message), kind_(kind) {}
  Kind kind() const { return kind_; }

 private:
  Kind kind_;
};

}  // namespace attn
