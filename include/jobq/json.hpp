#pragma once

#include <cmath>
#include <limits>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "jobq/error.hpp"

namespace jobq {

/// @brief Reads an integer of type T from JSON, refusing what nlohmann's get<T>() would convert
/// with undefined behaviour (a float out of T's range, NaN) or silently truncate (1.5): throws
/// InvalidArgument naming `what`. Stored documents go through it, so a corrupted or hostile
/// value is an error, never UB (found by the fuzz targets).
template <class T>
T json_integer(const nlohmann::json& j, std::string_view what) {
  static_assert(std::numeric_limits<T>::is_integer);
  auto bad = [&] { return InvalidArgument(std::string(what) + " must be an integer in range, got " + j.dump()); };
  if (j.is_number_integer()) {
    if (j.is_number_unsigned()) {
      const auto v = j.get<std::uint64_t>();
      if (v > static_cast<std::uint64_t>(std::numeric_limits<T>::max())) throw bad();
      return static_cast<T>(v);
    }
    const auto v = j.get<std::int64_t>();
    if (v < static_cast<std::int64_t>(std::numeric_limits<T>::min()) ||
        (v > 0 && static_cast<std::uint64_t>(v) > static_cast<std::uint64_t>(std::numeric_limits<T>::max()))) {
      throw bad();
    }
    return static_cast<T>(v);
  }
  if (j.is_number_float()) {
    const double d = j.get<double>();
    // Exclusive upper bound: max() + 1 is a power of two, exactly representable as a double.
    const double hi = std::ldexp(1.0, std::numeric_limits<T>::digits);
    if (!std::isfinite(d) || d != std::trunc(d) || d < static_cast<double>(std::numeric_limits<T>::min()) || d >= hi) {
      throw bad();
    }
    return static_cast<T>(d);
  }
  throw bad();
}

/// @brief json_integer of j[key], or `fallback` when the key is absent.
template <class T>
T json_integer_or(const nlohmann::json& j, const char* key, T fallback) {
  const auto it = j.find(key);
  return it == j.end() ? fallback : json_integer<T>(*it, key);
}

}  // namespace jobq
