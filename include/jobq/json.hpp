#pragma once

#include <cmath>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

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


/// @brief The deepest nesting of arrays and objects accepted in a payload, a result or a
/// schedule's job (`[]` is depth 1). nlohmann's dump, copy and comparison recurse once per
/// level, so deeper values could overflow a thread's stack; check_json refuses them first.
inline constexpr std::size_t max_json_depth = 512;

namespace detail {

/// @brief True when `s` is well-formed UTF-8 (no overlong forms, surrogates or code points
/// above U+10FFFF): what nlohmann's dump accepts and what SQL text columns and Redis readers
/// can return as JSON later.
inline bool is_valid_utf8(std::string_view s) noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    const unsigned char c = *p;
    if (c < 0x80) {
      ++p;
      continue;
    }
    int n = 0;
    unsigned char lo = 0x80, hi = 0xBF;  // range of the first continuation byte
    if (c >= 0xC2 && c <= 0xDF) {
      n = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 2;
      if (c == 0xE0) lo = 0xA0;
      if (c == 0xED) hi = 0x9F;  // no UTF-16 surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 3;
      if (c == 0xF0) lo = 0x90;
      if (c == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
    } else {
      return false;
    }
    if (end - p <= n) return false;
    if (p[1] < lo || p[1] > hi) return false;
    for (int i = 2; i <= n; ++i) {
      if ((p[i] & 0xC0) != 0x80) return false;
    }
    p += n + 1;
  }
  return true;
}

}  // namespace detail

/// @brief Throws InvalidArgument (naming `what`) unless `j` can be stored by every backend:
/// nested at most max_json_depth deep, every string and key valid UTF-8. Iterative, so it is
/// safe on any value a parser produced; call it before anything walks `j` recursively.
inline void check_json(const nlohmann::json& j, std::string_view what) {
  struct Open {
    nlohmann::json::const_iterator next, end;
    bool object;
  };
  std::vector<Open> stack;  // the containers being walked, outermost first
  const auto bad_utf8 = [&](const char* kind) {
    return InvalidArgument(std::string(what) + " contains a " + kind + " that is not valid UTF-8");
  };
  const auto visit = [&](const nlohmann::json& v) {
    if (v.is_string()) {
      if (!detail::is_valid_utf8(v.get_ref<const std::string&>())) throw bad_utf8("string");
    } else if (v.is_structured()) {
      if (stack.size() >= max_json_depth) {
        throw InvalidArgument(std::string(what) + " is nested deeper than " + std::to_string(max_json_depth) +
                              " levels (jobq::max_json_depth)");
      }
      if (!v.empty()) stack.push_back({v.cbegin(), v.cend(), v.is_object()});
    }
  };
  visit(j);
  while (!stack.empty()) {
    auto& top = stack.back();
    if (top.next == top.end) {
      stack.pop_back();
      continue;
    }
    const auto child = top.next++;
    if (top.object && !detail::is_valid_utf8(child.key())) throw bad_utf8("key");
    visit(*child);  // may grow the stack: `top` is not used after this
  }
}

/// @brief The JSON text a backend stores for `j`, after check_json(j, what); every backend
/// stores payloads, results and schedule specs through it, so all refuse the same values with
/// the same message.
inline std::string dump_for_storage(const nlohmann::json& j, std::string_view what) {
  check_json(j, what);
  try {
    return j.dump();
  } catch (const nlohmann::json::exception& e) {  // check_json already refuses what dump would
    throw InvalidArgument(std::string(what) + " cannot be stored as JSON: " + e.what());
  }
}

}  // namespace jobq
