#include <catch2/catch.hpp>

#include <jobq/jobq.hpp>

namespace {

jobq::NewJob job(std::string queue = "q") {
  jobq::NewJob j;
  j.queue = std::move(queue);
  j.name = "noop";
  return j;
}

struct Resize {
  static constexpr std::string_view job_name = "resize";
  using result_type = std::string;
  int width = 0;
  NLOHMANN_DEFINE_TYPE_INTRUSIVE(Resize, width)
};

}  // namespace

TEST_CASE("the Flow builder makes chains, groups and chords with dependencies in member order", "[flow]") {
  jobq::Flow f;
  auto last = f.chain({job("a"), job("b"), job("c")});
  CHECK(last.index == 2);
  auto fan = f.group({job(), job()}, {last});
  auto cb = f.chord({job(), job()}, job("cb"), {.continue_on_failure = true});
  const auto& spec = f.spec();
  REQUIRE(spec.members.size() == 8);
  CHECK(spec.members[0].after.empty());
  CHECK(spec.members[1].after == std::vector<std::size_t>{0});
  CHECK(spec.members[2].after == std::vector<std::size_t>{1});
  CHECK(spec.members[fan[0].index].after == std::vector<std::size_t>{2});
  CHECK(spec.members[cb.index].after == std::vector<std::size_t>{5, 6});
  CHECK(spec.members[cb.index].continue_on_failure);
  CHECK_NOTHROW(jobq::validate(spec));

  jobq::Flow other;
  CHECK_THROWS_AS(other.add(job(), {cb}), jobq::InvalidArgument);  // a step of another flow
  CHECK_THROWS_AS(other.chain({}), jobq::InvalidArgument);

  const jobq::EnqueuedFlow ids{100, {100, 101, 102}};
  CHECK(ids[last] == 102);
}

TEST_CASE("validate(NewFlow) refuses cycles, self and duplicate dependencies, unknown members, keys", "[flow]") {
  jobq::NewFlow f;
  CHECK_THROWS_WITH(jobq::validate(f), Catch::Contains("no members"));
  f.members = {{job(), {1}, false}, {job(), {2}, false}, {job(), {0}, false}};
  CHECK_THROWS_WITH(jobq::validate(f), Catch::Contains("cycle"));
  f.members = {{job(), {0}, false}};
  CHECK_THROWS_WITH(jobq::validate(f), Catch::Contains("itself"));
  f.members = {{job(), {}, false}, {job(), {0, 0}, false}};
  CHECK_THROWS_WITH(jobq::validate(f), Catch::Contains("twice"));
  f.members = {{job(), {7}, false}};
  CHECK_THROWS_WITH(jobq::validate(f), Catch::Contains("does not exist"));
  auto keyed = job();
  keyed.unique_key = "k";
  f.members = {{keyed, {}, false}};
  CHECK_THROWS_WITH(jobq::validate(f), Catch::Contains("unique key"));
  f.members = {{job("bad name"), {}, false}};
  CHECK_THROWS_WITH(jobq::validate(f), Catch::Contains("flow member 0: queue name"));
  f.members = {{job(), {}, false}};
  f.on_failure = job("");
  CHECK_THROWS_WITH(jobq::validate(f), Catch::Contains("on_failure"));
  // A long chain and a wide fan-in are fine (no recursion).
  jobq::NewFlow chain;
  for (std::size_t i = 0; i < 50'000; ++i) {
    chain.members.push_back({job(), i == 0 ? std::vector<std::size_t>{} : std::vector<std::size_t>{i - 1}, false});
  }
  CHECK_NOTHROW(jobq::validate(chain));
}

TEST_CASE("a stored on_failure job round-trips through JSON", "[flow]") {
  auto j = job("errors");
  j.payload = {{"x", 1}};
  j.priority = 5;
  j.max_attempts = 7;
  j.timeout = jobq::Millis{1500};
  j.group = "tenant";
  j.backoff = jobq::Backoff::fixed(jobq::Millis{250});
  j.run_at = jobq::from_epoch_ms(1'700'000'000'000);
  const auto back = jobq::new_job_from_json(jobq::to_json(j));
  CHECK(back.queue == "errors");
  CHECK(back.payload == j.payload);
  CHECK(back.priority == 5);
  CHECK(back.max_attempts == 7);
  CHECK(back.timeout == j.timeout);
  CHECK(back.group == "tenant");
  CHECK(back.run_at == j.run_at);
  CHECK(back.backoff.to_json() == j.backoff.to_json());
  CHECK_THROWS_AS(jobq::new_job_from_json(nlohmann::json{{"queue", 1}}), jobq::InvalidArgument);
}

TEST_CASE("a handler reads its dependencies' results typed, in order, loaded once", "[flow][worker]") {
  jobq::JobRecord rec;
  rec.id = 9;
  rec.depends_on = {1, 2, 3};
  int loads = 0;
  jobq::JobContext ctx(rec, {}, [](int, const std::string&) { return true; }, [&](const jobq::JobRecord& r) {
    ++loads;
    CHECK(r.id == 9);
    return std::vector<jobq::Dependency>{{1, "resize", "q", jobq::JobState::completed, "a.png", {}},
                                         {2, "resize", "q", jobq::JobState::dead, nullptr, "boom"},
                                         {3, "resize", "q", jobq::JobState::completed, "c.png", {}}};
  });
  CHECK(ctx.results<Resize>() == std::vector<std::string>{"a.png", "c.png"});  // Resize::result_type
  CHECK(ctx.result<std::string>(2) == "c.png");
  CHECK_THROWS_WITH(ctx.result<std::string>(1), Catch::Contains("dependency 2 did not complete (dead)"));
  CHECK_THROWS_WITH(ctx.result<std::string>(3), Catch::Contains("no dependency #3"));
  CHECK_THROWS_WITH(ctx.results<int>(), Catch::Contains("does not convert"));
  CHECK(ctx.dependencies().size() == 3);
  CHECK(loads == 1);

  jobq::JobRecord lone;
  jobq::JobContext none(lone, {}, [](int, const std::string&) { return true; },
                        [](const jobq::JobRecord&) -> std::vector<jobq::Dependency> { FAIL("loaded"); return {}; });
  CHECK(none.dependencies().empty());
}

TEST_CASE("a dead dependency's error names it and the root cause without nesting", "[flow]") {
  CHECK(jobq::dead_dependency_error(42, "boom") == "dependency 42 is dead: boom");
  CHECK(jobq::dead_dependency_error(43, "dependency 42 is dead: boom") == "dependency 43 is dead: boom");
  CHECK(jobq::dead_dependency_error(43, "dependency x is dead: boom") == "dependency 43 is dead: dependency x is dead: boom");
  CHECK(jobq::dead_dependency_error(7, "") == "dependency 7 is dead: ");
}
