#pragma once
// Conformance cases for flows (Backend::enqueue_flow and what follows from it): chains, groups,
// chords and DAGs, the waiting state, failure policies, the error callback, cancel and redrive
// mid-flow, inspection, retention, and a 10,000-member chord finished by 8 threads on two
// backend objects. The semantics are in include/jobq/backend.hpp ("Flows").

#include "conformance/common.hpp"
#include "conformance/two_objects.hpp"

namespace conformance {

/// Claims the one ready job of `queue`, checks it is `expected` (when given), completes it.
template <class B>
jobq::JobId complete_next(B& b, const std::string& queue, nlohmann::json result = nullptr,
                          jobq::JobId expected = 0) {
  auto j = claim_one(b, queue);
  if (expected != 0) CHECK(j.id == expected);
  REQUIRE(b.complete(j.id, j.lease_token, result));
  return j.id;
}

/// Claims the one ready job of `queue` and fails it for good.
template <class B>
jobq::JobId kill_next(B& b, const std::string& queue, const std::string& error = "boom") {
  auto j = claim_one(b, queue);
  REQUIRE(b.fail({j.id, j.lease_token, error, std::nullopt}) == jobq::FailOutcome::dead);
  return j.id;
}

template <class B>
std::string last_error(B& b, jobq::JobId id) {
  auto j = b.get(id);
  REQUIRE(j.has_value());
  REQUIRE_FALSE(j->errors.empty());
  return j->errors.back().message;
}

inline std::vector<jobq::JobId> ids_in(const jobq::FlowRecord& f) {
  std::vector<jobq::JobId> out;
  for (const auto& m : f.members) out.push_back(m.id);
  return out;
}

/// The flow's member `id`.
inline const jobq::JobRecord& member(const jobq::FlowRecord& f, jobq::JobId id) {
  for (const auto& m : f.members) {
    if (m.id == id) return m;
  }
  FAIL("job " << id << " is not a member of flow " << f.id);
  throw std::logic_error("unreachable");
}

}  // namespace conformance

TEMPLATE_LIST_TEST_CASE("a chain across three queues runs one member at a time, each after the one before",
                        "[conformance][flow]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  jobq::Flow flow;
  flow.chain({make_job("q1", {{"step", 1}}), make_job("q2", {{"step", 2}}), make_job("q3", {{"step", 3}})});
  const auto ids = b.enqueue_flow(flow.spec());
  REQUIRE(ids.size() == 3);
  CHECK(ids[0] < ids[1]);
  CHECK(ids[1] < ids[2]);
  CHECK(state_of(b, ids[0]) == JobState::queued);
  CHECK(state_of(b, ids[1]) == JobState::waiting);
  CHECK(state_of(b, ids[2]) == JobState::waiting);
  CHECK(b.counts("q2").waiting == 1);
  CHECK(b.counts("q2").queued == 0);
  CHECK(b.claim(claim_from({"q2", "q3"}, 10)).empty());  // waiting is never claimed

  const auto second = b.get(ids[1]);
  CHECK(second->flow_id == ids[0]);
  CHECK(second->depends_on == std::vector<jobq::JobId>{ids[0]});
  CHECK_FALSE(second->continue_on_failure);
  CHECK(b.get(ids[0])->flow_id == ids[0]);
  CHECK(b.get(ids[0])->depends_on.empty());

  complete_next(b, "q1", {{"out", 1}}, ids[0]);
  CHECK(state_of(b, ids[1]) == JobState::queued);
  CHECK(state_of(b, ids[2]) == JobState::waiting);
  auto claimed = claim_one(b, "q2");
  CHECK(claimed.id == ids[1]);
  CHECK(claimed.depends_on == std::vector<jobq::JobId>{ids[0]});  // claims carry the dependencies
  CHECK(claimed.flow_id == ids[0]);
  REQUIRE(b.complete(claimed.id, claimed.lease_token, {{"out", 2}}));
  complete_next(b, "q3", {{"out", 3}}, ids[2]);
  for (auto id : ids) CHECK(state_of(b, id) == JobState::completed);
}

TEMPLATE_LIST_TEST_CASE("a group's members are claimable at once and a chord's callback waits for all of them",
                        "[conformance][flow]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  jobq::Flow flow;
  flow.chord({make_job("q", {{"i", 0}}), make_job("q", {{"i", 1}}), make_job("q", {{"i", 2}})}, make_job("cb"));
  const auto ids = b.enqueue_flow(flow.spec());
  REQUIRE(ids.size() == 4);
  auto members = b.claim(claim_from({"q"}, 10));
  CHECK(members.size() == 3);
  CHECK(b.counts("cb").waiting == 1);
  // Finished out of order: the callback still lists its dependencies in member order.
  std::sort(members.begin(), members.end(), [](const auto& x, const auto& y) { return x.id > y.id; });
  for (const auto& m : members) {
    CHECK(state_of(b, ids[3]) == JobState::waiting);
    REQUIRE(b.complete(m.id, m.lease_token, m.payload.at("i")));
  }
  auto cb = claim_one(b, "cb");
  CHECK(cb.id == ids[3]);
  CHECK(cb.depends_on == std::vector<jobq::JobId>(ids.begin(), ids.begin() + 3));
  const auto deps = jobq::load_dependencies(b, cb);
  REQUIRE(deps.size() == 3);
  for (int i = 0; i < 3; ++i) {
    CHECK(deps[static_cast<std::size_t>(i)].id == ids[static_cast<std::size_t>(i)]);
    CHECK(deps[static_cast<std::size_t>(i)].state == JobState::completed);
    CHECK(deps[static_cast<std::size_t>(i)].result == i);
  }
  const auto many = b.get_many(std::vector<jobq::JobId>{ids[2], 999'999'999, ids[0]});
  REQUIRE(many.size() == 3);
  CHECK(many[0]->id == ids[2]);
  CHECK_FALSE(many[1].has_value());
  CHECK(many[2]->id == ids[0]);
}

TEMPLATE_LIST_TEST_CASE("a diamond DAG releases its join once both branches completed, with members listed in any order",
                        "[conformance][flow]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  // Members given join-first: dependencies may point forward.
  jobq::NewFlow f;
  f.members = {{make_job("q", {{"m", "join"}}), {1, 2}, false},
               {make_job("q", {{"m", "left"}}), {3}, false},
               {make_job("q", {{"m", "right"}}), {3}, false},
               {make_job("q", {{"m", "root"}}), {}, false}};
  const auto ids = b.enqueue_flow(f);
  REQUIRE(ids.size() == 4);
  CHECK(b.get(ids[0])->depends_on == std::vector<jobq::JobId>{ids[1], ids[2]});
  CHECK(b.counts("q").waiting == 3);
  complete_next(b, "q", nullptr, ids[3]);
  auto branches = b.claim(claim_from({"q"}, 10));
  REQUIRE(branches.size() == 2);
  REQUIRE(b.complete(branches[0].id, branches[0].lease_token, nullptr));
  CHECK(state_of(b, ids[0]) == JobState::waiting);
  REQUIRE(b.complete(branches[1].id, branches[1].lease_token, nullptr));
  complete_next(b, "q", nullptr, ids[0]);

  const auto fr = b.flow(ids[2]);
  REQUIRE(fr.has_value());
  CHECK(fr->id == ids[0]);
  auto sorted = ids;
  std::sort(sorted.begin(), sorted.end());
  CHECK(ids_in(*fr) == sorted);
  for (const auto& m : fr->members) {
    CHECK(m.state == JobState::completed);
    CHECK(m.flow_id == ids[0]);
  }
  CHECK(member(*fr, ids[0]).depends_on == std::vector<jobq::JobId>{ids[1], ids[2]});
}

TEMPLATE_LIST_TEST_CASE("a released member keeps its own run_at and a lone job is in no flow",
                        "[conformance][flow]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  jobq::Flow flow;
  auto first = flow.add(make_job("q"));
  auto later = make_job("q");
  later.run_at = fx.clock.now() + 1h;
  flow.add(later, {first});
  const auto ids = b.enqueue_flow(flow.spec());
  complete_next(b, "q", nullptr, ids[0]);
  CHECK(state_of(b, ids[1]) == JobState::queued);
  CHECK(b.claim(claim_from({"q"})).empty());
  fx.clock.advance(1h);
  complete_next(b, "q", nullptr, ids[1]);

  const auto lone = b.enqueue(make_job("q")).id;
  CHECK_FALSE(b.flow(lone).has_value());
  CHECK(b.get(lone)->flow_id == 0);
  CHECK_FALSE(b.flow(999'999'999).has_value());
  CHECK(b.cancel_flow(lone) == 0);
}

TEMPLATE_LIST_TEST_CASE("a flow that fails validation writes nothing: a cycle, a bad member, a unique key",
                        "[conformance][flow][bad-input]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  jobq::NewFlow cycle;
  cycle.members = {{make_job("q"), {2}, false}, {make_job("q"), {0}, false}, {make_job("q"), {1}, false}};
  CHECK_THROWS_WITH(b.enqueue_flow(cycle), Catch::Contains("cycle"));

  jobq::NewFlow bad;
  bad.members = {{make_job("q"), {}, false}, {make_job("q"), {0}, false}, {make_job("bad queue!"), {1}, false}};
  CHECK_THROWS_AS(b.enqueue_flow(bad), jobq::InvalidArgument);

  jobq::NewFlow unique;
  auto keyed = make_job("q");
  keyed.unique_key = "k";
  unique.members = {{make_job("q"), {}, false}, {keyed, {0}, false}};
  CHECK_THROWS_WITH(b.enqueue_flow(unique), Catch::Contains("unique key"));

  jobq::NewFlow dangling;
  dangling.members = {{make_job("q"), {5}, false}};
  CHECK_THROWS_AS(b.enqueue_flow(dangling), jobq::InvalidArgument);
  CHECK_THROWS_AS(b.enqueue_flow(jobq::NewFlow{}), jobq::InvalidArgument);

  jobq::NewFlow malformed;
  malformed.members = {{make_job("q"), {}, false}, {make_job("q", nlohmann::json::value_t::discarded), {0}, false}};
  CHECK_THROWS_AS(b.enqueue_flow(malformed), jobq::InvalidArgument);

  CHECK(b.counts("q") == jobq::Counts{});
  CHECK(b.claim(claim_from({"q"}, 10)).empty());
}

TEMPLATE_LIST_TEST_CASE("a member whose payload is too large fails the whole flow",
                        "[conformance][flow][bad-input]", Backends) {
  TestType fx;
  auto small = fx.open_with_payload_limit(64);
  jobq::NewFlow f;
  f.members = {{make_job("q"), {}, false}, {make_job("q", {{"big", std::string(200, 'x')}}), {0}, false}};
  CHECK_THROWS_WITH(small->enqueue_flow(f), Catch::Contains("max_payload_bytes"));
  CHECK(small->counts("q") == jobq::Counts{});
}

TEMPLATE_LIST_TEST_CASE("by default a dead member kills what depends on it, down the flow, naming the dependency",
                        "[conformance][flow][failure]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  jobq::Flow flow;
  auto a = flow.add(make_job("q"));
  auto other = flow.add(make_job("q"));
  auto mid = flow.add(make_job("q2"), {a, other});
  flow.add(make_job("q3"), {mid});
  const auto ids = b.enqueue_flow(flow.spec());
  const auto dead = kill_next(b, "q", "card declined");
  REQUIRE(dead == ids[0]);
  CHECK(state_of(b, ids[2]) == JobState::dead);
  CHECK(state_of(b, ids[3]) == JobState::dead);
  CHECK(last_error(b, ids[2]) == "dependency " + std::to_string(ids[0]) + " is dead: card declined");
  // Down the flow the root cause is kept, not nested: the text stays the same length.
  CHECK(last_error(b, ids[3]) == "dependency " + std::to_string(ids[2]) + " is dead: card declined");
  const auto mid_job = b.get(ids[2]);
  CHECK(mid_job->attempts == 0);
  CHECK(mid_job->errors.back().attempt == 0);
  CHECK(mid_job->finished_at.has_value());
  CHECK(b.counts("q2").dead == 1);
  CHECK(b.counts("q2").waiting == 0);
  // The other dependency still runs; its completion releases nothing.
  complete_next(b, "q", nullptr, ids[1]);
  CHECK(state_of(b, ids[2]) == JobState::dead);
  CHECK(b.claim(claim_from({"q2", "q3"}, 10)).empty());
}

TEMPLATE_LIST_TEST_CASE("a lease that expires on the last attempt kills the dependents too",
                        "[conformance][flow][failure][lease]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  jobq::Flow flow;
  flow.chain({with_attempts(1, make_job("q")), make_job("q")});
  const auto ids = b.enqueue_flow(flow.spec());
  claim_one(b, "q", 1s);
  fx.clock.advance(2s);
  CHECK(b.recover_expired().dead == 1);
  CHECK(state_of(b, ids[1]) == JobState::dead);
  CHECK(last_error(b, ids[1]).rfind("dependency " + std::to_string(ids[0]) + " is dead: lease expired", 0) == 0);
}

TEMPLATE_LIST_TEST_CASE("continue_on_failure runs the dependent with what completed and shows what failed",
                        "[conformance][flow][failure]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  jobq::Flow flow;
  auto ok = flow.add(make_job("q", {{"n", "ok"}}));
  auto bad = flow.add(make_job("q2", {{"n", "bad"}}));
  auto cancelled = flow.add(make_job("q3"));
  flow.add(make_job("report"), {ok, bad, cancelled}, {.continue_on_failure = true});
  const auto ids = b.enqueue_flow(flow.spec());
  CHECK(b.get(ids[3])->continue_on_failure);
  kill_next(b, "q2", "bounced");
  CHECK(state_of(b, ids[3]) == JobState::waiting);
  REQUIRE(b.cancel(ids[2]));
  CHECK(state_of(b, ids[3]) == JobState::waiting);
  complete_next(b, "q", 7, ids[0]);
  auto report = claim_one(b, "report");
  CHECK(report.id == ids[3]);
  const auto deps = jobq::load_dependencies(b, report);
  REQUIRE(deps.size() == 3);
  CHECK(deps[0].state == JobState::completed);
  CHECK(deps[0].result == 7);
  CHECK(deps[1].state == JobState::dead);
  CHECK(deps[1].error == "bounced");
  CHECK(deps[2].state == JobState::cancelled);
}

TEMPLATE_LIST_TEST_CASE("the flow's error callback is enqueued once, when the first member dies by its own failure",
                        "[conformance][flow][failure]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  jobq::Flow flow;
  auto a = flow.add(make_job("q"));
  flow.add(make_job("q"));
  flow.add(make_job("q"), {a});  // dies because of a: not an own failure
  flow.on_failure(make_job("errors", {{"alert", true}}));
  const auto ids = b.enqueue_flow(flow.spec());
  CHECK(b.counts("errors") == jobq::Counts{});
  const auto first = kill_next(b, "q");
  REQUIRE(b.counts("errors").queued == 1);
  const auto second = kill_next(b, "q");
  CHECK(first != second);
  CHECK(b.counts("errors").queued == 1);

  auto cb = claim_one(b, "errors");
  CHECK(cb.payload == nlohmann::json{{"alert", true}});
  CHECK(cb.flow_id == ids[0]);
  CHECK(cb.depends_on == std::vector<jobq::JobId>{first});
  CHECK(cb.continue_on_failure);
  const auto deps = jobq::load_dependencies(b, cb);
  REQUIRE(deps.size() == 1);
  CHECK(deps[0].state == JobState::dead);
  CHECK(deps[0].error == "boom");
  REQUIRE(b.complete(cb.id, cb.lease_token, nullptr));
  const auto fr = b.flow(ids[0]);
  REQUIRE(fr.has_value());
  CHECK(fr->members.size() == 4);  // the callback is a member
}

TEMPLATE_LIST_TEST_CASE("cancelling a flow mid-way cancels every member not started; the active one finishes alone",
                        "[conformance][flow][cancel]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  jobq::Flow flow;
  auto a = flow.add(make_job("q"));
  auto c = flow.add(make_job("q2"), {a});
  flow.add(make_job("q3"), {c});
  flow.add(make_job("q4"));
  flow.on_failure(make_job("errors"));
  const auto ids = b.enqueue_flow(flow.spec());
  auto running = claim_one(b, "q");
  CHECK(b.cancel_flow(ids[2]) == 3);
  CHECK(state_of(b, ids[1]) == JobState::cancelled);
  CHECK(state_of(b, ids[2]) == JobState::cancelled);
  CHECK(state_of(b, ids[3]) == JobState::cancelled);
  CHECK(state_of(b, ids[0]) == JobState::active);
  REQUIRE(b.fail({running.id, running.lease_token, "late", std::nullopt}) == jobq::FailOutcome::dead);
  CHECK(b.counts("errors") == jobq::Counts{});  // a cancelled flow calls no error callback
  CHECK(b.cancel_flow(ids[0]) == 0);
  CHECK(b.counts("q2").cancelled == 1);
  CHECK(b.counts("q2").waiting == 0);
}

TEMPLATE_LIST_TEST_CASE("cancelling one waiting member cancels what depends on it, naming it",
                        "[conformance][flow][cancel]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  jobq::Flow flow;
  flow.chain({make_job("q"), make_job("q"), make_job("q")});
  const auto ids = b.enqueue_flow(flow.spec());
  REQUIRE(b.cancel(ids[1]));
  CHECK(state_of(b, ids[2]) == JobState::cancelled);
  CHECK(last_error(b, ids[2]) == "dependency " + std::to_string(ids[1]) + " was cancelled");
  complete_next(b, "q", nullptr, ids[0]);
  CHECK(b.claim(claim_from({"q"}, 10)).empty());
  CHECK_FALSE(b.cancel(ids[2]));
}

TEMPLATE_LIST_TEST_CASE("cancelling an active member settles its dependents as for a queued one",
                        "[conformance][flow][cancel]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  jobq::Flow flow;
  auto a = flow.add(make_job("q"));
  auto strict = flow.add(make_job("q2"), {a});
  flow.add(make_job("q2"), {strict});
  flow.add(make_job("q3"), {a}, {.continue_on_failure = true});
  flow.on_failure(make_job("errors"));
  const auto ids = b.enqueue_flow(flow.spec());
  const auto running = claim_one(b, "q");
  REQUIRE(running.id == ids[0]);
  REQUIRE(b.cancel(ids[0]));
  CHECK(state_of(b, ids[0]) == JobState::cancelled);
  CHECK(state_of(b, ids[1]) == JobState::cancelled);
  CHECK(last_error(b, ids[1]) == "dependency " + std::to_string(ids[0]) + " was cancelled");
  CHECK(state_of(b, ids[2]) == JobState::cancelled);  // and so on down the flow
  CHECK(last_error(b, ids[2]) == "dependency " + std::to_string(ids[1]) + " was cancelled");
  CHECK_FALSE(b.complete(ids[0], running.lease_token, nullptr));  // too late to complete
  const auto cont = claim_one(b, "q3");
  CHECK(cont.id == ids[3]);
  const auto deps = jobq::load_dependencies(b, cont);
  REQUIRE(deps.size() == 1);
  CHECK(deps[0].state == JobState::cancelled);
  CHECK(b.counts("errors") == jobq::Counts{});  // a cancel is not a failure of its own
  CHECK(b.counts("q2") == jobq::Counts{.cancelled = 2});
}

TEMPLATE_LIST_TEST_CASE("re-driving a dead member resumes the flow from there",
                        "[conformance][flow][redrive]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  jobq::Flow flow;
  auto a = flow.add(make_job("q"));
  auto mid = flow.add(make_job("q2"), {a});
  flow.add(make_job("q3"), {mid});
  auto other = flow.add(make_job("q4"));
  flow.add(make_job("q5"), {a, other});  // also needs `other`, which dies too
  const auto ids = b.enqueue_flow(flow.spec());
  kill_next(b, "q");
  kill_next(b, "q4", "other broke");
  CHECK(state_of(b, ids[4]) == JobState::dead);
  CHECK_FALSE(b.redrive(ids[1]));  // its dependency is not completed: re-drive that one
  CHECK(state_of(b, ids[1]) == JobState::dead);

  REQUIRE(b.redrive(ids[0]));
  CHECK(state_of(b, ids[0]) == JobState::queued);
  CHECK(state_of(b, ids[1]) == JobState::waiting);
  CHECK(state_of(b, ids[2]) == JobState::waiting);
  CHECK(state_of(b, ids[4]) == JobState::dead);  // `other` is still dead
  CHECK(b.counts("q2").waiting == 1);
  CHECK(b.counts("q2").dead == 0);
  CHECK_FALSE(b.get(ids[1])->finished_at.has_value());
  CHECK(b.get(ids[1])->errors.size() == 1);  // kept

  complete_next(b, "q", nullptr, ids[0]);
  complete_next(b, "q2", nullptr, ids[1]);
  complete_next(b, "q3", nullptr, ids[2]);
  REQUIRE(b.redrive(ids[3]));
  CHECK(state_of(b, ids[4]) == JobState::waiting);
  complete_next(b, "q4", nullptr, ids[3]);
  complete_next(b, "q5", nullptr, ids[4]);
}

TEMPLATE_LIST_TEST_CASE("a dependent that continues on failure waits again for a re-driven dependency",
                        "[conformance][flow][redrive]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  jobq::Flow flow;
  auto a = flow.add(make_job("q"));
  auto slow = flow.add(make_job("q2"));
  flow.add(make_job("q3"), {a, slow}, {.continue_on_failure = true});
  const auto ids = b.enqueue_flow(flow.spec());
  kill_next(b, "q");
  REQUIRE(b.redrive(ids[0]));
  complete_next(b, "q2", nullptr, ids[1]);
  CHECK(state_of(b, ids[2]) == JobState::waiting);  // a is unresolved again
  complete_next(b, "q", nullptr, ids[0]);
  complete_next(b, "q3", nullptr, ids[2]);
}

TEMPLATE_LIST_TEST_CASE("list and counts show waiting members, paged by id",
                        "[conformance][flow][admin]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  jobq::Flow flow;
  flow.chord({make_job("q")}, make_job("q"));
  flow.chord({make_job("q")}, make_job("q"));
  flow.chord({make_job("q")}, make_job("q"));
  const auto ids = b.enqueue_flow(flow.spec());
  const auto c = b.counts("q");
  CHECK(c.queued == 3);
  CHECK(c.waiting == 3);
  const auto p1 = b.list("q", JobState::waiting, {0, 2});
  const auto p2 = b.list("q", JobState::waiting, {2, 2});
  CHECK(ids_of(p1) == std::vector<jobq::JobId>{ids[1], ids[3]});
  CHECK(ids_of(p2) == std::vector<jobq::JobId>{ids[5]});
  CHECK(p1[0].depends_on == std::vector<jobq::JobId>{ids[0]});
}

TEMPLATE_LIST_TEST_CASE("pruning keeps a flow until every member is finished and past retention, then removes it whole",
                        "[conformance][flow][retention]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  jobq::Flow flow;
  flow.chain({make_job("q"), make_job("q2")});
  const auto ids = b.enqueue_flow(flow.spec());
  const auto lone = b.enqueue(make_job("q")).id;
  complete_next(b, "q", nullptr, ids[0]);
  complete_next(b, "q", nullptr, lone);
  const jobq::Retention none{.completed = 0ms, .dead = 0ms, .cancelled = 0ms};
  fx.clock.advance(1s);
  CHECK(b.prune("q", none) == 1);  // the lone job; ids[1] still needs ids[0]... and is unfinished
  CHECK(b.get(ids[0]).has_value());
  CHECK_FALSE(b.get(lone).has_value());
  complete_next(b, "q2", nullptr, ids[1]);
  CHECK(b.prune("q", {.completed = 1h}) == 0);  // finished, not yet old enough
  CHECK(b.prune("q", {.completed = 1h, .max_jobs = 1}) == 0);  // the count cap ignores flows
  fx.clock.advance(1s);
  CHECK(b.prune("q", none) == 2);  // both members, although one lives in q2
  CHECK_FALSE(b.get(ids[0]).has_value());
  CHECK_FALSE(b.get(ids[1]).has_value());
  CHECK(b.counts("q2") == jobq::Counts{});
  CHECK_FALSE(b.flow(ids[0]).has_value());
}

TEMPLATE_LIST_TEST_CASE("a worker runs a chord end to end: the callback reads every result in member order",
                        "[conformance][flow][worker]", Backends) {
  TestType fx;
  auto& b = fx.backend();
  jobq::Queue q{b, "q"};
  jobq::Flow flow;
  std::vector<jobq::NewJob> parts;
  for (int i = 0; i < 20; ++i) parts.push_back(q.make("square", {{"n", i}}));
  auto cb = flow.chord(std::move(parts), q.make("sum", nlohmann::json::object()));
  auto then = flow.add(q.make("report", nlohmann::json::object()), {cb});
  const auto enqueued = q.enqueue_flow(flow);
  CHECK(enqueued.id == enqueued.members.front());
  std::atomic<int> sums{0};
  std::vector<int> seen;
  jobq::Worker w{b, fast_worker(4)};
  w.handle("square", [](const nlohmann::json& p, jobq::JobContext&) { return p.at("n").get<int>() * p.at("n").get<int>(); });
  w.handle("sum", [&](const nlohmann::json&, jobq::JobContext& ctx) {
    ++sums;
    seen = ctx.results<int>();
    int total = 0;
    for (int v : seen) total += v;
    return total;
  });
  std::atomic<int> reported{-1};
  w.handle("report", [&](const nlohmann::json&, jobq::JobContext& ctx) { reported = ctx.result<int>(0); });
  w.start();
  REQUIRE(q.wait_for(enqueued[then], 20s).has_value());
  w.stop();
  CHECK(sums == 1);
  std::vector<int> expected;
  for (int i = 0; i < 20; ++i) expected.push_back(i * i);
  CHECK(seen == expected);
  CHECK(reported == 2470);
  CHECK(state_of(b, enqueued[then]) == JobState::completed);
}

TEMPLATE_LIST_TEST_CASE("a 10,000-member chord finished by 8 threads on two objects releases its callback once",
                        "[conformance][flow][concurrency][two-objects]", Backends) {
  TestType fx;
  auto& a = fx.backend();
  constexpr int n = 10'000;
  jobq::Flow flow;
  std::vector<jobq::NewJob> parts;
  parts.reserve(n);
  for (int i = 0; i < n; ++i) parts.push_back(make_job("q", {{"i", i}}));
  flow.chord(std::move(parts), make_job("cb"));
  const auto ids = a.enqueue_flow(flow.spec());
  REQUIRE(ids.size() == n + 1);
  std::atomic<int> completed{0};
  std::atomic<int> callbacks{0};
  race_on_both(fx, 8, [&](auto& be, int) {
    for (;;) {
      auto jobs = be.claim(claim_from({"q", "cb"}, 32));
      if (jobs.empty()) {
        if (completed.load() >= n) return;
        std::this_thread::sleep_for(1ms);
        continue;
      }
      std::vector<jobq::Completion> done;
      for (auto& j : jobs) {
        if (j.queue == "cb") {
          ++callbacks;
          done.push_back({j.id, j.lease_token, nullptr});
        } else {
          done.push_back({j.id, j.lease_token, j.payload.at("i")});
        }
      }
      const auto oks = be.complete_many(done);
      for (std::size_t i = 0; i < oks.size(); ++i) {
        if (oks[i] && jobs[i].queue == "q") ++completed;
      }
    }
  });
  // The callback is released by the last completion; whoever was still claiming ran it, or it
  // waits queued.
  if (callbacks == 0) complete_next(a, "cb", nullptr, ids.back());
  CHECK(callbacks <= 1);
  CHECK(completed == n);
  CHECK(state_of(a, ids.back()) == JobState::completed);
  CHECK(a.claim(claim_from({"cb"}, 10)).empty());
  const auto cb = a.get(ids.back());
  const auto deps = jobq::load_dependencies(a, *cb);
  REQUIRE(deps.size() == static_cast<std::size_t>(n));
  bool in_order = true;
  for (int i = 0; i < n; ++i) in_order = in_order && deps[static_cast<std::size_t>(i)].result == i;
  CHECK(in_order);
}

TEMPLATE_LIST_TEST_CASE("a flow stored on one object is released and inspected from another",
                        "[conformance][flow][two-objects]", Backends) {
  TestType fx;
  auto& a = fx.backend();
  auto& b2 = fx.second_backend();
  jobq::Flow flow;
  flow.chain({make_job("q"), make_job("q2")});
  const auto ids = a.enqueue_flow(flow.spec());
  complete_next(b2, "q", {{"r", 1}}, ids[0]);
  CHECK(state_of(a, ids[1]) == JobState::queued);
  const auto fr = b2.flow(ids[1]);
  REQUIRE(fr.has_value());
  CHECK(member(*fr, ids[0]).result == nlohmann::json{{"r", 1}});
  CHECK(member(*fr, ids[1]).state == JobState::queued);
}
