// Google Benchmark micro-benchmarks of single backend operations, templated over the targets
// in bench_targets.hpp (memory and SQLite here; server backends through jobq-bench).
#include <benchmark/benchmark.h>

#include <jobq/jobq.hpp>

#include "bench_targets.hpp"

namespace {

jobq::NewJob job(int i) {
  jobq::NewJob j;
  j.queue = "bench";
  j.name = "noop";
  j.payload = {{"i", i}};
  return j;
}

template <class Target>
void enqueue_one(benchmark::State& state) {
  Target target{};
  auto store = target.make();
  int i = 0;
  for (auto _ : state) benchmark::DoNotOptimize(store->enqueue(job(i++)));
  state.SetItemsProcessed(state.iterations());
}

template <class Target>
void claim_complete(benchmark::State& state) {
  Target target{};
  auto store = target.make();
  const auto batch = static_cast<std::size_t>(state.range(0));
  std::vector<jobq::NewJob> jobs(batch * 64, job(0));
  std::size_t left = 0;
  for (auto _ : state) {
    if (left == 0) {
      state.PauseTiming();
      store->enqueue_many(jobs);
      left = jobs.size();
      state.ResumeTiming();
    }
    auto got = store->claim({{"bench"}, batch, std::chrono::seconds(30)});
    std::vector<jobq::Completion> done;
    for (auto& j : got) done.push_back(jobq::Completion{j.id, j.lease_token, nlohmann::json()});
    store->complete_many(done);
    left -= got.size();
  }
  state.SetItemsProcessed(state.iterations() * static_cast<std::int64_t>(batch));
}

}  // namespace

BENCHMARK_TEMPLATE(enqueue_one, bench::MemoryTarget);
BENCHMARK_TEMPLATE(claim_complete, bench::MemoryTarget)->Arg(1)->Arg(16)->Arg(128);
#ifdef JOBQ_BENCH_SQLITE
namespace bench {
struct SqliteTmpTarget : SqliteTarget {
  SqliteTmpTarget() : SqliteTarget("") {}
};
}  // namespace bench
BENCHMARK_TEMPLATE(enqueue_one, bench::SqliteTmpTarget);
BENCHMARK_TEMPLATE(claim_complete, bench::SqliteTmpTarget)->Arg(1)->Arg(16)->Arg(128);
#endif

BENCHMARK_MAIN();
