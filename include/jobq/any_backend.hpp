#pragma once

#include <memory>
#include <optional>
#include <span>
#include <stop_token>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "jobq/backend.hpp"
#include "jobq/error.hpp"
#include "jobq/forwarding_backend.hpp"

namespace jobq {

/// @brief A backend chosen at run time: owns any jobq::Backend behind a virtual interface and
/// is itself a Backend, so Queue, Worker, Metrics and the HTTP server take it like any other.
///
/// For tools that get the backend from a URL (the admin CLI, a dashboard). Programs that know
/// their backend at compile time should use it directly: every call here costs one virtual
/// dispatch, negligible next to a database round trip. Its Backend operations are
/// ForwardingBackend's, forwarded to the erased backend (detail::BackendInterface).
class AnyBackend : public ForwardingBackend<AnyBackend> {
 public:
  /// @brief Takes ownership of `backend`; `kind` names it in messages ("sqlite", "redis", ...).
  template <Backend B>
    requires(!std::is_same_v<B, AnyBackend>)
  explicit AnyBackend(std::unique_ptr<B> backend, std::string kind = "backend")
      : impl_(std::make_unique<Model<B>>(std::move(backend))), kind_(std::move(kind)) {
    if (!static_cast<Model<B>&>(*impl_).backend) throw InvalidArgument("AnyBackend: null backend");
  }

  AnyBackend(AnyBackend&&) noexcept = default;
  AnyBackend& operator=(AnyBackend&&) noexcept = default;

  /// @brief What kind of backend this is ("memory", "sqlite", "postgres", "redis", ...).
  [[nodiscard]] const std::string& kind() const noexcept { return kind_; }

  /// @brief The wrapped backend if it is a B, else nullptr (for backend-specific calls).
  template <Backend B>
  [[nodiscard]] B* target() noexcept {
    auto* m = dynamic_cast<Model<B>*>(impl_.get());
    return m ? m->backend.get() : nullptr;
  }

  /// @brief Whether the wrapped backend can list its queue names (see queues()).
  [[nodiscard]] bool can_list_queues() const noexcept { return impl_->can_list_queues(); }

  /// @brief Every queue name the store knows; throws jobq::Error (category backend) when the
  /// wrapped backend cannot list queues.
  std::vector<std::string> queues() { return impl_->queues(kind_); }

 private:
  friend ForwardingBackend<AnyBackend>;
  detail::BackendInterface& wrapped() const { return *impl_; }

  template <Backend B>
  struct Model final : ForwardingBackend<Model<B>, detail::BackendInterface> {
    explicit Model(std::unique_ptr<B> b) : backend(std::move(b)) {}
    B& wrapped() const { return *backend; }

    // queues() is not (yet) part of the Backend concept: forward it only where it exists.
    static constexpr bool listable = requires(B& b) {
      { b.queues() } -> std::convertible_to<std::vector<std::string>>;
    };
    bool can_list_queues() const noexcept override { return listable; }
    std::vector<std::string> queues(const std::string& kind) override {
      if constexpr (listable) {
        return backend->queues();
      } else {
        throw Error(ErrorCategory::backend, "listing queues is not supported by the " + kind +
                                                " backend yet; name the queues explicitly");
      }
    }

    std::unique_ptr<B> backend;
  };

  std::unique_ptr<detail::BackendInterface> impl_;
  std::string kind_;
};

static_assert(Backend<AnyBackend>);

}  // namespace jobq
