// weight_memory_test.cpp: weight placement (model/weight_memory.cpp): models whose weights
// were moved into huge-page memory (q8_0 and K-quant matrices repacked or not) hold the same
// rows and give the same logits as mapped ones, for GGUF (stacked and per-expert, quantized,
// tied embeddings) and HF folders; the auto policy; the CLI's --load and --no-repack options.
#include <cmath>
#include <cstring>
#include <fstream>

#include <unistd.h>

#include "core/error.h"
#include "core/mapped_file.h"
#include "kernels/gemm_int8.h"
#include "kernels/gemm_x16.h"
#include "model/model_writer.h"
#include "model/synth.h"
#include "model/transformer.h"
#include "test_util.h"

namespace smoe {
namespace {

// Loads `path` mapped and in memory (repacked or not) and checks the copy against the
// mapped model: the same bytes (row by row where repacked), the same logits (bit for bit
// unless repacked: the repacked kernels sum in another order, and K-quant batches use int8
// activations only when repacked: within rel_tol of the largest logit), and progress
// reports that end with (all, all).
void expect_same_in_memory(const std::string& path, bool repack, bool packable, float rel_tol = 1e-4f) {
  std::unique_ptr<Model> mapped = load_model(path, {WeightPlacement::kMapped});
  LoadOptions lo{WeightPlacement::kMemory, repack};
  std::vector<std::pair<size_t, size_t>> calls;  // worker 0 and, after the join, the caller
  lo.progress = [&](size_t done, size_t total) { calls.emplace_back(done, total); };
  std::unique_ptr<Model> mem = load_model(path, lo);
  ASSERT_FALSE(calls.empty());
  EXPECT_EQ(calls.back().first, calls.back().second);
  EXPECT_GE(calls.back().second, weight_bytes(*mapped));
  for (size_t i = 1; i < calls.size(); ++i) EXPECT_LE(calls[i - 1].first, calls[i].first);
  EXPECT_FALSE(mapped->weights_in_memory);
  ASSERT_TRUE(mem->weights_in_memory);
  const std::vector<const TensorView*> a = mapped->all_tensors(), b = mem->all_tensors();
  ASSERT_EQ(a.size(), b.size());
  int n_packed = 0;
  for (size_t k = 0; k < a.size(); ++k) {
    SCOPED_TRACE(a[k]->name);
    ASSERT_EQ(a[k]->nbytes, b[k]->nbytes);
    ASSERT_EQ(a[k]->data == nullptr, b[k]->data == nullptr);
    EXPECT_FALSE(a[k]->x16);
    if (!a[k]->data) continue;
    EXPECT_NE(a[k]->data, b[k]->data);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(b[k]->data) % 64, 0u);
    if (b[k]->x16) {
      ++n_packed;
      const int64_t D = a[k]->shape.back(), N = a[k]->numel() / D;
      const size_t rb = row_bytes(a[k]->dtype, D);
      std::vector<uint8_t> row(rb);
      for (int64_t r = 0; r < N; ++r) {
        unpack_x16_row(b[k]->dtype, b[k]->data, D, r, row.data());
        ASSERT_EQ(std::memcmp(row.data(), a[k]->data + r * rb, rb), 0) << "row " << r;
      }
    } else {
      EXPECT_EQ(std::memcmp(a[k]->data, b[k]->data, a[k]->nbytes), 0);
    }
  }
  // Repacked exactly where asked and possible: the q8_0 / K-quant matrices.
  EXPECT_EQ(n_packed > 0, repack && packable && int8_gemm_fast());
  if (mem->config.tie_embeddings) {
    EXPECT_EQ(mem->output.data, mem->tok_embd.data);
  }
  EXPECT_EQ(weight_bytes(*mapped), weight_bytes(*mem));
  const std::vector<float> want = test::prompt_logits(*mapped), got = test::prompt_logits(*mem);
  ASSERT_EQ(want.size(), got.size());
  if (n_packed == 0) {
    EXPECT_EQ(std::memcmp(want.data(), got.data(), want.size() * sizeof(float)), 0);
  } else {
    float scale = 0, diff = 0;
    for (size_t i = 0; i < want.size(); ++i) {
      scale = std::max(scale, std::fabs(want[i]));
      diff = std::max(diff, std::fabs(want[i] - got[i]));
    }
    EXPECT_LE(diff, rel_tol * scale);
  }
  // Moving twice is a no-op.
  const uint8_t* before = mem->tok_embd.data;
  move_weights_to_memory(*mem);
  EXPECT_EQ(mem->tok_embd.data, before);
  // A repacked model cannot be written out (its rows are not in file order).
  if (n_packed > 0) {
    try {
      save_gguf(*mem, path + ".out.gguf");
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("--load mmap"), std::string::npos) << e.what();
    }
  }
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
      expect_same_in_memory(path, false, true);
      expect_same_in_memory(path, true, true);
    }
    if (!tied) {  // K-quants: dims of whole 256-value super-blocks
      SCOPED_TRACE("k-quants");
      ModelConfig ck = test::tiny_moe_config();
      ck.dim = 256;
      ck.hidden_dim = 256;
      std::unique_ptr<Model> mk = synth_model(ck, 9);
      // Matrices of whole super-blocks: ffn_down `down`, the other expert matrices `ffn`,
      // attention `attn`; the rest (router, norms, embeddings) f32.
      auto k_mix = [](DType down, DType ffn, DType attn) {
        return [=](const std::string& name, const TensorView& t) {
          if (t.shape.size() != 2 || t.shape.back() % 256 || name.find("inp") != std::string::npos) return DType::F32;
          if (name.find("ffn_down") != std::string::npos) return down;
          if (name.find("ffn_") != std::string::npos) return ffn;
          return name.find("attn") != std::string::npos ? attn : DType::F32;
        };
      };
      GGUFSaveOptions o;
      o.target_type = k_mix(DType::Q6_K, DType::Q4_K, DType::Q5_K);
      const std::string path = dir + "/k.gguf";
      save_gguf(*mk, path, o);
      expect_same_in_memory(path, false, true);
      expect_same_in_memory(path, true, true, 0.05f);
      // The 2- and 3-bit K-quants: experts q2_K (down q3_K), attention q3_K.
      o.target_type = k_mix(DType::Q3_K, DType::Q2_K, DType::Q3_K);
      const std::string low = dir + "/k23.gguf";
      save_gguf(*mk, low, o);
      expect_same_in_memory(low, false, true);
      // Mapped, q2_K/q3_K batches use float activations, repacked int8 ones: the max
      // |logit difference| measured 7.5e-3 of the largest logit (q4_K-q6_K above: 1.1e-2).
      expect_same_in_memory(low, true, true, 0.02f);
      std::unique_ptr<Model> mem = load_model(low, {WeightPlacement::kMemory, true});
      const ExpertWeights& e = mem->layers[0].experts[0];
      EXPECT_EQ(e.w1.dtype, DType::Q2_K);
      EXPECT_EQ(e.w2.dtype, DType::Q3_K);
      EXPECT_EQ(mem->layers[0].wq.dtype, DType::Q3_K);
      for (const TensorView* w : {&e.w1, &e.w2, &e.w3, static_cast<const TensorView*>(&mem->layers[0].wq)})
        EXPECT_EQ(w->x16, int8_gemm_fast()) << w->name;
    }
    SCOPED_TRACE("hf");  // q/k projections live in owned buffers (un-permuted at load)
    const std::string hf = dir + "/hf" + std::to_string(tied);
    save_hf(*m, hf);
    expect_same_in_memory(hf, true, false);  // f32: nothing to repack
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

// Resident memory of this process, from /proc/self/statm.
size_t resident_bytes() {
  std::ifstream in("/proc/self/statm");
  size_t total = 0, resident = 0;
  in >> total >> resident;
  return resident * static_cast<size_t>(sysconf(_SC_PAGESIZE));
}

// The copy into memory releases the file's pages as it goes (peak memory near the weights'
// size, not twice it): released pages leave the process's resident memory, still read back
// correctly, and memory that is not a file mapping is never discarded.
TEST(WeightMemory, ReleasedFilePagesLeaveTheProcessNotTheData) {
  const std::string path = test::temp_dir("release_pages") + "/data.bin";
  constexpr size_t kN = size_t{32} << 20;
  {
    std::vector<uint8_t> bytes(kN);
    for (size_t i = 0; i < kN; ++i) bytes[i] = static_cast<uint8_t>(i * 2654435761u >> 13);
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()), kN);
  }
  MappedFile f(path);
  ASSERT_EQ(f.size(), kN);
  uint64_t sum = 0;
  for (size_t i = 0; i < kN; i += 64) sum += f.data()[i];  // every page mapped in
  const size_t before = resident_bytes();
  release_file_pages(f.data() + 1, kN - 1);  // all but the first, partial page
  const size_t after = resident_bytes();
  EXPECT_GE(before, after + kN * 3 / 4) << "before " << before << " after " << after;
  uint64_t again = 0;
  for (size_t i = 0; i < kN; i += 64) again += f.data()[i];
  EXPECT_EQ(again, sum);
  for (size_t i : {size_t{0}, size_t{4097}, kN / 2 + 3, kN - 1})
    EXPECT_EQ(f.data()[i], static_cast<uint8_t>(i * 2654435761u >> 13)) << i;
  // Anonymous memory and ranges outside the mapping are left alone.
  std::vector<uint8_t> heap(size_t{1} << 20, 7);
  release_file_pages(heap.data(), heap.size());
  release_file_pages(f.data() + kN, 1 << 20);
  for (size_t i = 0; i < heap.size(); i += 4096) ASSERT_EQ(heap[i], 7) << i;
}

TEST(WeightMemory, CliLoadOption) {
  const std::string dir = test::temp_dir("weight_memory_cli");
  // The default model is f32: nothing to repack, so every placement gives the same bytes.
  const char* opts[] = {" --load mmap", " --load memory", " --load memory --no-repack", ""};
  std::string out[4];
  for (int k = 0; k < 4; ++k) {
    const std::string f = dir + "/logits" + std::to_string(k);
    test::CmdResult r = test::run_smoe("logits --tokens 1,20,30,40 -t 2 --out " + f + opts[k]);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    out[k] = test::read_file(f);
    EXPECT_EQ(out[k], out[0]) << opts[k];
  }
  EXPECT_FALSE(out[0].empty());
  test::CmdResult r = test::run_smoe("logits --tokens 1,2 --out " + dir + "/x --load ram");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--load"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("ram"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace smoe
