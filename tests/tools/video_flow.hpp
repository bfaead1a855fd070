#pragma once
// The flow the tools' tests show: fetch, then transcode-720 and transcode-1080 (in `queue`),
// then notify (in `notify_queue`), which waits for both: a DAG with one member reached twice.

#include <string>

#include <jobq/queue.hpp>

struct VideoFlow {
  jobq::EnqueuedFlow ids;
  jobq::JobId fetch = 0, low = 0, high = 0, notify = 0;
};

template <jobq::Backend B>
VideoFlow enqueue_video_flow(B& backend, const std::string& queue, const std::string& notify_queue) {
  jobq::Queue<B> q{backend, queue};
  jobq::Flow f;
  const auto fetch = f.add(q.make("fetch", {}));
  const auto low = f.add(q.make("transcode-720", {}), {fetch});
  const auto high = f.add(q.make("transcode-1080", {}), {fetch});
  const auto notify = f.add(q.make("notify", {}, {.queue = notify_queue}), {low, high});
  VideoFlow v{q.enqueue_flow(f)};
  v.fetch = v.ids[fetch];
  v.low = v.ids[low];
  v.high = v.ids[high];
  v.notify = v.ids[notify];
  return v;
}
