// analysis_bad_input_test.cpp: the analysis and evaluation commands on bad input (missing
// or empty files, malformed task lines, absurd --ctx/--stride/--lengths, mismatched
// models) exit non-zero with a message naming what was wrong and what was expected.
#include "analysis/mc.h"
#include "analysis_util.h"
#include "core/error.h"

namespace smoe {
namespace {

using test::fixture;
using test::quoted;

// Runs `args`, expects exit code 1 and every one of `needles` in stderr.
void expect_error(const std::string& args, const std::vector<std::string>& needles) {
  test::CmdResult r = test::run_smoe(args);
  EXPECT_EQ(r.exit_code, 1) << args << "\n" << r.out << r.err;
  for (const std::string& n : needles) EXPECT_NE(r.err.find(n), std::string::npos) << args << "\nstderr: " << r.err;
}

struct Files {
  std::string dir, text, empty, missing;
};

Files make_files(const std::string& name) {
  Files f;
  f.dir = test::temp_dir(name);
  f.text = test::put_file(f.dir, "t.txt", "ROMEO:\nBut soft, what light through yonder window breaks?\n");
  f.empty = test::put_file(f.dir, "empty.txt", "");
  f.missing = f.dir + "/no-such.txt";
  return f;
}

TEST(AnalysisBadInput, Routes) {
  SMOE_REQUIRE_FIXTURES();
  const Files f = make_files("bad_routes");
  const std::string m = " -m " + quoted(fixture(test::kModelA));
  const std::string out = " --out " + quoted(f.dir + "/out");
  expect_error("routes" + m + " -f " + quoted(f.missing) + out, {f.missing, "no such file"});
  expect_error("routes" + m + " -f " + quoted(f.empty) + out, {f.empty, "empty"});
  expect_error("routes" + m + out, {"no text given"});
  expect_error("routes" + m + " --domain " + quoted(f.text) + out, {"--domain", "NAME=FILE"});
  expect_error("routes" + m + " --domain =x" + out, {"NAME=FILE"});
  expect_error("routes" + m + " -f " + quoted(f.text) + " --ctx 100000000" + out, {"--ctx", "expected 1..32768"});
  expect_error("routes" + m + " -f " + quoted(f.text) + " --ctx -4" + out, {"--ctx", "out of range"});
  expect_error("routes" + m + " -f " + quoted(f.text) + " --layers 2" + out, {"--layers", "layer 2", "expected 0..1"});
  expect_error("routes" + m + " -f " + quoted(f.text) + " --split dev" + out, {"dev", "all, train or val"});
  // The output folder is a file.
  expect_error("routes" + m + " -f " + quoted(f.text) + " --out " + quoted(f.text), {f.text, "output folder"});
  // A text that tokenizes to nothing.
  const std::string blank = test::put_file(f.dir, "blank.txt", "   ");
  test::CmdResult r = test::run_smoe("routes" + m + " -f " + quoted(blank) + out);
  if (r.exit_code != 0) EXPECT_NE(r.err.find("blank.txt"), std::string::npos) << r.err;
}

TEST(AnalysisBadInput, Perplexity) {
  SMOE_REQUIRE_FIXTURES();
  const Files f = make_files("bad_ppl");
  const std::string m = " -m " + quoted(fixture(test::kModelB));
  const std::string t = " -f " + quoted(f.text);
  expect_error("perplexity" + m + " -f " + quoted(f.missing), {f.missing, "no such file"});
  expect_error("perplexity" + m + " -f " + quoted(f.empty), {f.empty, "empty"});
  expect_error("perplexity" + m + " -f " + quoted(f.dir), {"directory"});
  expect_error("perplexity" + m + t + " --ctx 1", {"--ctx 1", "expected 2..32768"});
  expect_error("perplexity" + m + t + " --ctx 99999999", {"--ctx 99999999", "out of range"});
  expect_error("perplexity" + m + t + " --ctx -3", {"--ctx -3"});
  expect_error("perplexity" + m + t + " --ctx 16 --stride 17", {"--stride 17", "expected 1..15"});
  expect_error("perplexity" + m + t + " --ctx 16 --stride 16", {"--stride 16", "expected 1..15"});
  expect_error("perplexity" + m + t + " --stride -1", {"--stride -1"});
  expect_error("perplexity" + m + t + " --sweep 8,x", {"--sweep", "\"x\" is not a number"});
  expect_error("perplexity" + m + t + " --sweep 1", {"--sweep", "window length 1"});
  expect_error("perplexity" + m + t + " --max-tokens 1", {"--max-tokens 1", "nothing to score"});
  expect_error("perplexity" + m + t + " --split nope", {"nope", "all, train or val"});
  expect_error("perplexity -m " + quoted(f.missing) + t, {f.missing});
}

TEST(AnalysisBadInput, Compare) {
  SMOE_REQUIRE_FIXTURES();
  const Files f = make_files("bad_compare");
  const std::string a = " -m " + quoted(fixture(test::kModelA));
  const std::string t = " -f " + quoted(f.text);
  expect_error("compare" + a + " --vs " + quoted(fixture(test::kModelB)) + t, {"vocabulary of 32000", "1024"});
  expect_error("compare" + a + " --vs " + quoted(f.missing) + t, {f.missing});
  expect_error("compare" + a + " --vs " + quoted(fixture(test::kModelA)) + " -f " + quoted(f.empty), {"empty"});
  expect_error("compare" + a + " --vs " + quoted(fixture(test::kModelA)) + t + " --ctx 40000", {"--ctx 40000"});
  test::CmdResult r = test::run_smoe("compare" + a + t);  // --vs is required
  EXPECT_NE(r.exit_code, 0);
}

TEST(AnalysisBadInput, Passkey) {
  SMOE_REQUIRE_FIXTURES();
  const std::string m = " -m " + quoted(fixture(test::kModelB));
  expect_error("passkey" + m + " --lengths 10", {"length 10 is too short", "expected at least"});
  expect_error("passkey" + m + " --lengths 99999999", {"--lengths", "99999999", "out of range"});
  expect_error("passkey" + m + " --lengths 0", {"--lengths", "out of range"});
  expect_error("passkey" + m + " --lengths 100 --positions 1.5", {"--positions", "1.5", "0..1"});
  expect_error("passkey" + m + " --lengths 100 --positions half", {"--positions", "not a number"});
  expect_error("passkey" + m + " --lengths 100 --trials 0", {"--trials 0"});
  expect_error("passkey" + m + " --lengths 100 --digits 40", {"--digits 40"});
}

TEST(AnalysisBadInput, MultipleChoiceTaskFiles) {
  SMOE_REQUIRE_FIXTURES();
  const Files f = make_files("bad_mc");
  const std::string m = " -m " + quoted(fixture(test::kModelB));
  const std::string good = "{\"context\": \"a\", \"choices\": [\" b\", \" c\"], \"label\": 0}\n";
  struct Case {
    std::string line, needle;
  };
  const std::vector<Case> cases = {
      {"{\"context\": \"a\", \"choices\": [\" b\"", "not valid JSON"},
      {"[1, 2]", "expected a JSON object"},
      {"{\"choices\": [\" b\", \" c\"], \"label\": 0}", "\"context\""},
      {"{\"context\": 3, \"choices\": [\" b\", \" c\"], \"label\": 0}", "\"context\""},
      {"{\"context\": \"a\", \"label\": 0}", "\"choices\""},
      {"{\"context\": \"a\", \"choices\": [\" b\"], \"label\": 0}", "expected at least 2"},
      {"{\"context\": \"a\", \"choices\": [\" b\", 7], \"label\": 0}", "must be a string"},
      {"{\"context\": \"a\", \"choices\": [\" b\", \"\"], \"label\": 0}", "choice 1 is empty"},
      {"{\"context\": \"a\", \"choices\": [\" b\", \" c\"]}", "\"label\""},
      {"{\"context\": \"a\", \"choices\": [\" b\", \" c\"], \"label\": 2}", "label 2 is out of range"},
      {"{\"context\": \"a\", \"choices\": [\" b\", \" c\"], \"label\": -1}", "out of range"},
      {"{\"context\": \"a\", \"choices\": [\" b\", \" c\"], \"answer\": \"Z\"}", "out of range"},
      {"{\"context\": \"a\", \"choices\": [\" b\", \" c\"], \"label\": 0.5}", "0-based index"},
  };
  for (const Case& c : cases) {
    const std::string path = test::put_file(f.dir, "task.jsonl", good + "\n" + c.line + "\n");
    expect_error("mc" + m + " -f " + quoted(path), {path + ": line 3", c.needle});
    EXPECT_THROW(parse_mc_jsonl(good + c.line, "t"), Error) << c.line;
  }
  expect_error("mc" + m + " -f " + quoted(f.missing), {f.missing, "no such file"});
  expect_error("mc" + m + " -f " + quoted(f.empty), {f.empty, "empty"});
  const std::string blank = test::put_file(f.dir, "blank.jsonl", "\n  \n");
  expect_error("mc" + m + " -f " + quoted(blank), {"no questions"});
  const std::string ok = test::put_file(f.dir, "ok.jsonl", good);
  expect_error("mc" + m + " -f " + quoted(ok) + " --limit -1", {"--limit -1"});
}

}  // namespace
}  // namespace smoe
