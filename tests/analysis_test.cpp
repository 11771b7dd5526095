// analysis_test.cpp: `smoe routes` on the fixture models, every figure recomputed here
// independently: routing shares and repetition from the router logits of the tests' own
// forward passes (top-K chosen here). Also the shared helpers of the analysis tools (text
// splits, lists, windows), the random-routing baselines, and K = 3 of 16 experts on a
// synthetic model.
#include <nlohmann/json.hpp>

#include "analysis/eval_common.h"
#include "analysis/routing.h"
#include "analysis_util.h"
#include "core/error.h"
#include "model/model.h"
#include "model/synth.h"
#include "model/transformer.h"
#include "tokenizer/tokenizer.h"

namespace smoe {
namespace {

using json = nlohmann::json;
using test::fixture;
using test::quoted;

// ------------------------------------------------------------------ shared helpers

TEST(EvalCommon, ValidationSplitIsTheLastTenthOfCharacters) {
  SMOE_REQUIRE_FIXTURES();
  const std::string text = test::read_file(fixture("text/tinyshakespeare.txt"));
  ASSERT_EQ(text.size(), 1115394u);
  EXPECT_EQ(val_split_offset(text), 1003854u);  // fixtures README
  const std::string val = select_split(text, TextSplit::Val, "t");
  EXPECT_EQ(val.substr(0, 40), "?\n\nGREMIO:\nGood morrow, neighbour Baptis");
  EXPECT_EQ(select_split(text, TextSplit::Train, "t") + val, text);
  EXPECT_EQ(select_split(text, TextSplit::All, "t"), text);
}

TEST(EvalCommon, SplitCountsCharactersNotBytes) {
  // 10 characters, the first two of them two bytes each: the split starts at character 9.
  const std::string text = "\xC3\xA9\xC3\xA9" "abcdefgh";
  EXPECT_EQ(val_split_offset(text), 11u);
  EXPECT_EQ(select_split(text, TextSplit::Val, "t"), "h");
  EXPECT_EQ(select_split("abc", TextSplit::Val, "t"), "c");      // from character 3 * 9 / 10 = 2
  EXPECT_THROW(select_split("a", TextSplit::Train, "t"), Error);  // 1 * 9 / 10 = 0: empty
}

TEST(EvalCommon, ListsAndWindows) {
  EXPECT_EQ(parse_int_list("1, 2,3", "x"), (std::vector<int64_t>{1, 2, 3}));
  EXPECT_EQ(parse_double_list("0,0.5,1", "x"), (std::vector<double>{0, 0.5, 1}));
  EXPECT_THROW(parse_int_list("1,,2", "x"), Error);
  EXPECT_THROW(parse_int_list("1,a", "x"), Error);
  EXPECT_THROW(parse_int_list("", "x"), Error);
  EXPECT_THROW(parse_split("validation"), Error);
  const std::vector<Window> w = split_windows(10, 4);
  ASSERT_EQ(w.size(), 3u);
  EXPECT_EQ(w[2].begin, 8);
  EXPECT_EQ(w[2].end, 10);
}

TEST(Routing, RandomBaselines) {
  EXPECT_DOUBLE_EQ(random_repeat_first(8), 0.125);
  EXPECT_NEAR(random_repeat_either(8, 2), 1 - (6.0 / 8) * (5.0 / 7), 1e-15);  // 0.4643
  EXPECT_NEAR(random_repeat_either(8, 2), 0.4642857, 1e-6);
  EXPECT_DOUBLE_EQ(random_repeat_either(4, 1), 0.25);
  EXPECT_DOUBLE_EQ(random_repeat_either(5, 3), 1.0);  // two 3-subsets of 5 always meet
  // 1 - C(12, 4) / C(16, 4) for n = 16, K = 4.
  EXPECT_NEAR(random_repeat_either(16, 4), 1 - 495.0 / 1820.0, 1e-12);
}

// ------------------------------------------------------------------ routing, recomputed

// Routing figures recomputed from the router logits of plain forward passes (one call per
// window, top-K chosen by the test).
struct ExpectedRouting {
  int64_t n_tokens = 0;
  std::vector<std::vector<double>> first, second, either;  // [L][E]
  std::vector<double> repeat_first, repeat_either;          // [L]
  std::vector<double> independent_first, independent_either;  // [L] over all ordered token pairs
  std::vector<std::vector<int32_t>> first_choice;          // [L][T] of the first text's first window
};

ExpectedRouting recompute_routing(const Model& m, const std::vector<std::vector<int32_t>>& texts, int64_t ctx) {
  const int64_t L = m.config.n_layers, E = m.config.n_experts, K = m.config.n_experts_used;
  ExpectedRouting x;
  std::vector<std::vector<int64_t>> first(L, std::vector<int64_t>(E)), second = first, chosen = first;
  std::vector<int64_t> pairs(L), same_first(L), same_either(L);
  std::vector<std::vector<std::vector<int32_t>>> all(L);  // [L][token] chosen experts, best first
  x.first_choice.resize(L);
  for (size_t ti = 0; ti < texts.size(); ++ti) {
    const std::vector<int32_t>& tokens = texts[ti];
    const int64_t N = static_cast<int64_t>(tokens.size());
    for (int64_t b = 0; b < N; b += ctx) {
      const int64_t e = std::min(N, b + ctx), T = e - b;
      Session s(m, T);
      RouteRecord rec;
      s.route_record = &rec;
      std::vector<float> logits;
      s.forward(std::span<const int32_t>(tokens).subspan(b, T), false, logits);
      for (int64_t l = 0; l < L; ++l) {
        std::vector<int32_t> prev;
        for (int64_t t = 0; t < T; ++t) {
          const std::vector<int32_t> ids = test::top_k(&rec.router_logits[(l * T + t) * E], E, K);
          ++first[l][ids[0]];
          if (K >= 2) ++second[l][ids[1]];
          for (int32_t id : ids) ++chosen[l][id];
          if (ti == 0 && b == 0) x.first_choice[l].push_back(ids[0]);
          all[l].push_back(ids);
          if (!prev.empty()) {
            ++pairs[l];
            same_first[l] += prev[0] == ids[0];
            bool meet = false;
            for (int32_t a : prev)
              for (int32_t c : ids) meet |= a == c;
            same_either[l] += meet;
          }
          prev = ids;
        }
      }
      x.n_tokens += T;
    }
  }
  for (int64_t l = 0; l < L; ++l) {
    std::vector<double> f, s, c;
    for (int64_t e = 0; e < E; ++e) {
      f.push_back(static_cast<double>(first[l][e]) / x.n_tokens);
      if (K >= 2) s.push_back(static_cast<double>(second[l][e]) / x.n_tokens);
      c.push_back(static_cast<double>(chosen[l][e]) / (x.n_tokens * K));
    }
    x.first.push_back(f);
    x.second.push_back(s);
    x.either.push_back(c);
    x.repeat_first.push_back(static_cast<double>(same_first[l]) / pairs[l]);
    x.repeat_either.push_back(static_cast<double>(same_either[l]) / pairs[l]);
    // Two tokens drawn independently from the text: every ordered pair, by brute force.
    double eq = 0, meet = 0;
    for (const auto& a : all[l])
      for (const auto& c : all[l]) {
        eq += a[0] == c[0];
        bool m = false;
        for (int32_t i : a)
          for (int32_t k : c) m |= i == k;
        meet += m;
      }
    const double n2 = static_cast<double>(all[l].size()) * static_cast<double>(all[l].size());
    x.independent_first.push_back(eq / n2);
    x.independent_either.push_back(meet / n2);
  }
  return x;
}

void expect_vectors_near(const json& got, const std::vector<double>& want, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i].get<double>(), want[i], 1e-12) << what << " [" << i << "]";
}

void expect_domain(const json& dom, const ExpectedRouting& x, const std::string& name) {
  EXPECT_EQ(dom["name"], name);
  EXPECT_EQ(dom["n_tokens"].get<int64_t>(), x.n_tokens) << name;
  ASSERT_EQ(dom["layers"].size(), x.first.size());
  for (size_t l = 0; l < x.first.size(); ++l) {
    const json& lay = dom["layers"][l];
    const std::string where = name + " layer " + std::to_string(l);
    EXPECT_EQ(lay["layer"].get<size_t>(), l);
    expect_vectors_near(lay["first_choice_share"], x.first[l], where + " first");
    expect_vectors_near(lay["second_choice_share"], x.second[l], where + " second");
    expect_vectors_near(lay["either_share"], x.either[l], where + " either");
    EXPECT_NEAR(lay["repeat_first"].get<double>(), x.repeat_first[l], 1e-12) << where;
    EXPECT_NEAR(lay["repeat_either"].get<double>(), x.repeat_either[l], 1e-12) << where;
    EXPECT_NEAR(lay["repeat_first_independent"].get<double>(), x.independent_first[l], 1e-12) << where;
    EXPECT_NEAR(lay["repeat_either_independent"].get<double>(), x.independent_either[l], 1e-12) << where;
  }
}

TEST(Routes, SharesAndRepetitionMatchRouterLogitsTop2) {
  SMOE_REQUIRE_FIXTURES();
  const std::string dir = test::temp_dir("routes_a");
  // The first text is longer than one forward chunk (256 tokens): pairs across chunks count.
  const std::string a = test::put_file(dir, "first.txt", test::shakespeare_val(0, 1400));
  const std::string b = test::put_file(dir, "b.txt", test::shakespeare_val(3000, 300));
  const std::string c = test::put_file(dir, "c.txt", test::shakespeare_val(5000, 300));
  test::CmdResult r = test::run_smoe("routes -m " + quoted(fixture(test::kModelA)) + " -f " + quoted(a) +
                                     " --domain pair=" + quoted(b) + " --domain pair=" + quoted(c) +
                                     " --html-tokens 20 --out " + quoted(dir + "/out"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(test::read_file(dir + "/out/routes.json"));
  EXPECT_EQ(j["n_experts"], 8);
  EXPECT_EQ(j["experts_per_token"], 2);
  EXPECT_NEAR(j["random_baseline"]["repeat_first"].get<double>(), 0.125, 1e-15);
  EXPECT_NEAR(j["random_baseline"]["repeat_either"].get<double>(), 1 - (6.0 / 8) * (5.0 / 7), 1e-15);
  ASSERT_EQ(j["domains"].size(), 2u);

  auto model = load_model(fixture(test::kModelA));
  const Tokenizer& tok = *model->tokenizer;
  const std::vector<int32_t> ta = tok.encode(test::read_file(a), true);
  ASSERT_GT(ta.size(), 300u);
  const ExpectedRouting xa = recompute_routing(*model, {ta}, 1 << 20);
  const ExpectedRouting xp =
      recompute_routing(*model, {tok.encode(test::read_file(b), true), tok.encode(test::read_file(c), true)}, 1 << 20);
  // Domains come in the order --domain first, then -f.
  expect_domain(j["domains"][0], xp, "pair");
  expect_domain(j["domains"][1], xa, "first.txt");
  EXPECT_EQ(j["domains"][0]["files"].size(), 2u);

  // The printed table (Table 5 layout) shows the same repetition, next to random routing.
  EXPECT_NE(r.out.find("| random routing | | 12.5% | 12.5% | 46.4% | 46.4% |"), std::string::npos) << r.out;
  char row[200];
  std::snprintf(row, sizeof row, "| first.txt | %lld | %.1f%% | %.1f%% | %.1f%% | %.1f%% |",
                static_cast<long long>(xa.n_tokens), 100 * xa.repeat_first[0], 100 * xa.repeat_first[1],
                100 * xa.repeat_either[0], 100 * xa.repeat_either[1]);
  EXPECT_NE(r.out.find(row), std::string::npos) << row << "\n" << r.out;
  std::snprintf(row, sizeof row, "| first.txt | independent | %.1f%% | %.1f%% | %.1f%% | %.1f%% |",
                100 * xa.independent_first[0], 100 * xa.independent_first[1], 100 * xa.independent_either[0],
                100 * xa.independent_either[1]);
  EXPECT_NE(r.out.find(row), std::string::npos) << row << "\n" << r.out;

  // Charts and the coloured page: the page's layer-0 spans of the first text follow its
  // first-choice experts, token after token (BOS has no text).
  for (const char* f : {"shares_first.svg", "shares_second.svg", "shares_either.svg", "repetition.svg"})
    EXPECT_EQ(test::read_file(dir + "/out/" + f).rfind("<svg", 0), 0u) << f;
  EXPECT_NE(test::read_file(dir + "/out/routes.md").find("random routing"), std::string::npos);
  const std::string html = test::read_file(dir + "/out/routes.html");
  const std::string start = "<h2>first.txt, layer 0</h2>";
  size_t at = html.find(start);
  ASSERT_NE(at, std::string::npos);
  std::vector<int32_t> shown;
  for (size_t p = html.find("title=\"layer 0: expert ", at); p != std::string::npos && p < html.find("</div>", at);
       p = html.find("title=\"layer 0: expert ", p + 1))
    shown.push_back(std::stoi(html.substr(p + 23, 3)));
  EXPECT_EQ(shown, std::vector<int32_t>(xa.first_choice[0].begin() + 1, xa.first_choice[0].begin() + 20));
}

TEST(Routes, WindowsAndTop1) {
  SMOE_REQUIRE_FIXTURES();
  const std::string dir = test::temp_dir("routes_b");
  const std::string a = test::put_file(dir, "val.txt", test::shakespeare_val(0, 700));
  test::CmdResult r = test::run_smoe("routes -m " + quoted(fixture(test::kModelB)) + " -f " + quoted(a) +
                                     " --ctx 37 --layers 2,0 --out " + quoted(dir + "/out"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(test::read_file(dir + "/out/routes.json"));
  EXPECT_EQ(j["n_experts"], 4);
  EXPECT_EQ(j["experts_per_token"], 1);
  EXPECT_EQ(j["ctx"], 37);
  EXPECT_DOUBLE_EQ(j["random_baseline"]["repeat_first"].get<double>(), 0.25);
  EXPECT_DOUBLE_EQ(j["random_baseline"]["repeat_either"].get<double>(), 0.25);
  auto model = load_model(fixture(test::kModelB));
  const ExpectedRouting x = recompute_routing(*model, {model->tokenizer->encode(test::read_file(a), true)}, 37);
  expect_domain(j["domains"][0], x, "val.txt");
  // K = 1: no second choice; "either" is the first choice.
  EXPECT_TRUE(j["domains"][0]["layers"][0]["second_choice_share"].empty());
  EXPECT_NE(r.out.find("first choice, layer 2 | first choice, layer 0 |"), std::string::npos) << r.out;
  EXPECT_FALSE(std::filesystem::exists(dir + "/out/shares_second.svg"));
}

// Two -f files with the same name stay two domains (the second is named by its path).
TEST(Routes, SameFileNamesStayApart) {
  SMOE_REQUIRE_FIXTURES();
  const std::string dir = test::temp_dir("routes_names");
  std::filesystem::create_directories(dir + "/x");
  std::filesystem::create_directories(dir + "/y");
  const std::string a = test::put_file(dir + "/x", "t.txt", test::shakespeare_val(0, 200));
  const std::string b = test::put_file(dir + "/y", "t.txt", test::shakespeare_val(500, 200));
  test::CmdResult r = test::run_smoe("routes -m " + quoted(fixture(test::kModelB)) + " -f " + quoted(a) + " -f " +
                                     quoted(b) + " --out " + quoted(dir + "/out"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(test::read_file(dir + "/out/routes.json"));
  ASSERT_EQ(j["domains"].size(), 2u);
  EXPECT_EQ(j["domains"][0]["name"], "t.txt");
  EXPECT_EQ(j["domains"][1]["name"], b);
}

// K = 3 of 16 experts on a synthetic model, through the library: "either" is any of the K.
TEST(Routes, ThreeOfSixteenOnSyntheticModel) {
  ModelConfig c = test::tiny_moe_config();
  c.hidden_dim = 32;
  c.vocab_size = 50;
  c.n_experts = 16;
  c.n_experts_used = 3;
  c.max_seq_len = 512;
  auto model = synth_model(c, 3);
  std::vector<int32_t> tokens;
  for (int i = 0; i < 300; ++i) tokens.push_back((i * 7 + i / 5) % 50);
  RoutingStats stats(2, 16, 3);
  route_text(*model, tokens, 120, nullptr, stats);
  const ExpectedRouting x = recompute_routing(*model, {tokens}, 120);
  const json layers = json::parse(stats.layers_json().dump());
  for (size_t l = 0; l < 2; ++l) {
    expect_vectors_near(layers[l]["either_share"], x.either[l], "either");
    expect_vectors_near(layers[l]["second_choice_share"], x.second[l], "second");
    EXPECT_NEAR(layers[l]["repeat_either"].get<double>(), x.repeat_either[l], 1e-12);
    EXPECT_NEAR(layers[l]["repeat_first"].get<double>(), x.repeat_first[l], 1e-12);
    EXPECT_NEAR(layers[l]["repeat_either_independent"].get<double>(), x.independent_either[l], 1e-12);
  }
  EXPECT_EQ(stats.n_tokens(), 300);
  EXPECT_EQ(stats.layer(0).pairs, 300 - 3);  // three windows: no pair across their boundaries
}

}  // namespace
}  // namespace smoe
