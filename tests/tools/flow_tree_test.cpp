// What `jobq flow` prints (tools/cli/flow_tree.hpp), for flows stored in the memory backend
// through AnyBackend, and the waiting state in counts_to_json and the jobq_jobs gauge.
#include <catch2/catch.hpp>

#include <string>
#include <vector>

#include <jobq/metrics.hpp>
#include <jobq/open.hpp>
#include <jobq/queue.hpp>

#include "flow_tree.hpp"
#include "video_flow.hpp"

using namespace std::chrono_literals;

namespace {

std::string tag(jobq::JobId id) { return "#" + std::to_string(id); }

bool has_line(const std::string& text, const std::string& line) {
  return text.find("\n" + line + "\n") != std::string::npos || text.rfind(line + "\n", 0) == 0;
}

}  // namespace

TEST_CASE("jobq flow: a DAG as a tree, a member reached twice printed once; --json; waiting counted") {
  auto b = jobq::open_backend("memory://");
  jobq::Queue mail{b, "mail"};
  const auto v = enqueue_video_flow(b, "videos", "mail");
  const auto a = v.fetch, l = v.low, h = v.high, n = v.notify;

  auto flow = b.flow(n);
  REQUIRE(flow);
  CHECK(jobq::cli::flow_tree(*flow) ==
        "flow " + std::to_string(a) + ": 4 members, 1 queued, 3 waiting\n" +
        tag(a) + " fetch [videos] queued, attempts 0/3\n" +
        "├─ " + tag(l) + " transcode-720 [videos] waiting, attempts 0/3, after " + tag(a) + "\n" +
        "│  └─ " + tag(n) + " notify [mail] waiting, attempts 0/3, after " + tag(l) + " " + tag(h) + "\n" +
        "└─ " + tag(h) + " transcode-1080 [videos] waiting, attempts 0/3, after " + tag(a) + "\n" +
        "   └─ " + tag(n) + " (see above)\n");

  const auto j = jobq::cli::flow_to_json(*flow);
  CHECK(j.at("id") == a);
  REQUIRE(j.at("members").size() == 4);
  CHECK(j["members"][3].at("id") == n);
  CHECK(j["members"][3].at("state") == "waiting");
  CHECK(j["members"][3].at("flow_id") == a);
  CHECK(j["members"][3].at("depends_on") == nlohmann::json{l, h});

  // waiting in the counts the CLI and the dashboard print, and in the gauge
  CHECK(jobq::counts_to_json(b.counts("mail")) ==
        nlohmann::json{{"queued", 0}, {"active", 0}, {"completed", 0}, {"dead", 0}, {"cancelled", 0}, {"waiting", 1}, {"delayed", 0}});
  jobq::Metrics m;
  const std::vector<std::string> queues{"videos", "mail"};
  m.sample(b, queues);
  const auto text = m.prometheus();
  INFO(text);
  CHECK(has_line(text, R"(jobq_jobs{queue="videos",state="waiting"} 2)"));
  CHECK(has_line(text, R"(jobq_jobs{queue="videos",state="queued"} 1)"));
  CHECK(has_line(text, R"(jobq_jobs{queue="mail",state="waiting"} 1)"));
  CHECK(has_line(text, R"(jobq_jobs{queue="mail",state="queued"} 0)"));
  CHECK(m.snapshot()["videos"]["counts"]["waiting"] == 2);

  // fetch completes, 720 dies: notify dies with it, and the tree says why
  auto c = b.claim({{"videos"}, 1, 60s});
  REQUIRE(c.size() == 1);
  REQUIRE(b.complete(c[0].id, c[0].lease_token, {}));
  c = b.claim({{"videos"}, 1, 60s});
  REQUIRE(c.size() == 1);
  REQUIRE(c[0].id == l);
  REQUIRE(b.fail({l, c[0].lease_token, "codec\nmissing", std::nullopt}) == jobq::FailOutcome::dead);
  flow = b.flow(a);
  REQUIRE(flow);
  const auto tree = jobq::cli::flow_tree(*flow);
  INFO(tree);
  CHECK(tree.starts_with("flow " + std::to_string(a) + ": 4 members, 1 queued, 1 completed, 2 dead\n"));
  CHECK(tree.find(tag(l) + " transcode-720 [videos] dead, attempts 1/3, after " + tag(a) + ": codec missing\n") !=
        std::string::npos);
  CHECK(tree.find(tag(n) + " notify [mail] dead, attempts 0/3, after " + tag(l) + " " + tag(h) + ": dependency " +
                  std::to_string(l) + " is dead: codec missing\n") != std::string::npos);

  // a job in no flow has none
  CHECK_FALSE(b.flow(mail.enqueue("plain", {})).has_value());
}

TEST_CASE("jobq flow: a long chain indents at most flow_tree_max_depth levels") {
  auto b = jobq::open_backend("memory://");
  jobq::Queue q{b, "steps"};
  std::vector<jobq::NewJob> jobs;
  for (int i = 0; i < 2000; ++i) jobs.push_back(q.make("step", {{"i", i}}));
  jobq::Flow f;
  f.chain(std::move(jobs));
  const auto ids = q.enqueue_flow(f);
  const auto flow = b.flow(ids.id);
  REQUIRE(flow);
  const auto tree = jobq::cli::flow_tree(*flow);
  std::size_t lines = 0, widest = 0, start = 0;
  for (auto end = tree.find('\n'); end != std::string::npos; start = end + 1, end = tree.find('\n', start)) {
    ++lines;
    widest = std::max(widest, end - start);
  }
  CHECK(lines == 2001);  // the header, then each member once
  CHECK(tree.find("(see above)") == std::string::npos);
  // "└─ " (3 columns, 5 bytes) per level; past the cap the prefix stops growing
  CHECK(widest < 6 * jobq::cli::flow_tree_max_depth + 100);
  CHECK(tree.ends_with(tag(ids.members.back()) + " step [steps] waiting, attempts 0/3, after " +
                       tag(ids.members[ids.members.size() - 2]) + "\n"));
}
