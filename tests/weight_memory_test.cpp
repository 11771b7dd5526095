// weight_memory_test.cpp: weight placement (model/weight_memory.cpp): models whose weights
// were moved into huge-page memory hold the same bytes and give the same logits as mapped
// ones, for GGUF (stacked and per-expert, quantized, tied embeddings) and HF folders; the
// auto policy; the CLI's --load option.
#include <cstring>
#include <fstream>

#include "core/error.h"
#include "core/mapped_file.h"
#include "model/model_writer.h"
#include "model/synth.h"
#include "model/transformer.h"
#include "test_util.h"

namespace smoe {
namespace {

std::vector<float> logits_of(const Model& m) {
  const std::vector<int32_t> tokens = {1, 5, 9, 33, 2, 66, 17, 40, 3, 12, 7, 0};
  Session s(m, 64);
  std::vector<float> logits;
  s.forward(tokens, /*all_logits=*/true, logits);
  return logits;
}

// Loads `path` both ways and checks the in-memory copy against the mapped model.
void expect_same_in_memory(const std::string& path) {
  std::unique_ptr<Model> mapped = load_model(path, {WeightPlacement::kMapped});
  std::unique_ptr<Model> mem = load_model(path, {WeightPlacement::kMemory});
  EXPECT_FALSE(mapped->weights_in_memory);
  ASSERT_TRUE(mem->weights_in_memory);
  const std::vector<const TensorView*> a = mapped->all_tensors(), b = mem->all_tensors();
  ASSERT_EQ(a.size(), b.size());
  for (size_t k = 0; k < a.size(); ++k) {
    SCOPED_TRACE(a[k]->name);
    ASSERT_EQ(a[k]->nbytes, b[k]->nbytes);
    ASSERT_EQ(a[k]->data == nullptr, b[k]->data == nullptr);
    if (!a[k]->data) continue;
    EXPECT_NE(a[k]->data, b[k]->data);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(b[k]->data) % 64, 0u);
    EXPECT_EQ(std::memcmp(a[k]->data, b[k]->data, a[k]->nbytes), 0);
  }
  if (mem->config.tie_embeddings) {
    EXPECT_EQ(mem->output.data, mem->tok_embd.data);
  }
  EXPECT_EQ(weight_bytes(*mapped), weight_bytes(*mem));
  // Bit for bit: the same kernels read the same bytes.
  const std::vector<float> want = logits_of(*mapped), got = logits_of(*mem);
  ASSERT_EQ(want.size(), got.size());
  EXPECT_EQ(std::memcmp(want.data(), got.data(), want.size() * sizeof(float)), 0);
  // Moving twice is a no-op.
  const uint8_t* before = mem->tok_embd.data;
  move_weights_to_memory(*mem);
  EXPECT_EQ(mem->tok_embd.data, before);
}

TEST(WeightMemory, InMemoryModelsMatchMappedOnes) {
  const std::string dir = test::temp_dir("weight_memory");
  for (bool tied : {false, true}) {
    ModelConfig c = test::tiny_moe_config();
    c.dim = 64;  // two q8_0 blocks per row
    c.hidden_dim = 64;
    c.tie_embeddings = tied;
    std::unique_ptr<Model> m = synth_model(c, tied ? 7 : 8);
    for (bool per_expert : {false, true}) {
      SCOPED_TRACE(std::string(tied ? "tied" : "untied") + (per_expert ? ", per-expert" : ", stacked"));
      GGUFSaveOptions o;
      o.per_expert_tensors = per_expert;
      // Experts q8_0 (the int8 kernels), everything else f32.
      o.target_type = [](const std::string& name, const TensorView&) {
        return name.find("ffn_") != std::string::npos && name.find("inp") == std::string::npos
                   ? DType::Q8_0
                   : DType::F32;
      };
      const std::string path = dir + "/m" + std::to_string(tied) + std::to_string(per_expert) + ".gguf";
      save_gguf(*m, path, o);
      expect_same_in_memory(path);
    }
    SCOPED_TRACE("hf");  // q/k projections live in owned buffers (un-permuted at load)
    const std::string hf = dir + "/hf" + std::to_string(tied);
    save_hf(*m, hf);
    expect_same_in_memory(hf);
  }
}

TEST(WeightMemory, AutoChoosesMemoryOnlyWhenItFits) {
  const size_t gib = size_t{1} << 30;
  EXPECT_EQ(resolve_weight_placement(WeightPlacement::kAuto, 3 * gib, 4 * gib), WeightPlacement::kMemory);
  EXPECT_EQ(resolve_weight_placement(WeightPlacement::kAuto, 3 * gib + 1, 4 * gib), WeightPlacement::kMapped);
  EXPECT_EQ(resolve_weight_placement(WeightPlacement::kAuto, 1, 0), WeightPlacement::kMapped);
  EXPECT_EQ(resolve_weight_placement(WeightPlacement::kMapped, 1, 4 * gib), WeightPlacement::kMapped);
  EXPECT_EQ(resolve_weight_placement(WeightPlacement::kMemory, 8 * gib, 0), WeightPlacement::kMemory);
  EXPECT_GT(available_memory_bytes(), 0u);  // Linux: /proc/meminfo
  for (WeightPlacement p : {WeightPlacement::kMapped, WeightPlacement::kMemory, WeightPlacement::kAuto})
    EXPECT_EQ(parse_weight_placement(weight_placement_name(p)), p);
  try {
    parse_weight_placement("ram");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("'ram'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("mmap, memory or auto"), std::string::npos) << e.what();
  }
}

TEST(WeightMemory, CliLoadOption) {
  const std::string dir = test::temp_dir("weight_memory_cli");
  std::string out[2];
  for (int k = 0; k < 2; ++k) {
    const std::string f = dir + "/logits" + std::to_string(k);
    test::CmdResult r = test::run_smoe(std::string("logits --tokens 1,20,30,40 -t 2 --out ") + f +
                                       (k ? " --load memory" : " --load mmap"));
    ASSERT_EQ(r.exit_code, 0) << r.err;
    out[k] = test::read_file(f);
  }
  EXPECT_FALSE(out[0].empty());
  EXPECT_EQ(out[0], out[1]);
  test::CmdResult r = test::run_smoe("logits --tokens 1,2 --out " + dir + "/x --load ram");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--load"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("ram"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace smoe
