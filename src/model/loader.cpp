// loader.cpp: builds a Model from GGUF files, Hugging Face folders and Mistral
// consolidated folders. Weights stay in the mapped files (unless LoadOptions moves them into
// memory); only HF q/k projections (whose rows HF permutes for rotate-half RoPE) are
// copied, un-permuted, into owned buffers.
#include <cstdlib>
#include <cstring>
#include <filesystem>

#include "core/error.h"
#include "core/mapped_file.h"
#include "formats/gguf.h"
#include "formats/safetensors.h"
#include "model/model.h"

namespace smoe {

namespace fs = std::filesystem;

const uint8_t* Model::own(const uint8_t* data, size_t n) {
  uint8_t* p = own_zeroed(n);
  if (n) std::memcpy(p, data, n);
  return p;
}

uint8_t* Model::own_zeroed(size_t n) {
  // 64-byte aligned: keep a buffer with slack and hand out an aligned pointer into it.
  owned.emplace_back(n + 64, 0);
  uint8_t* base = owned.back().data();
  return base + (64 - reinterpret_cast<uintptr_t>(base) % 64) % 64;
}

std::vector<const TensorView*> Model::all_tensors() const {
  std::vector<const TensorView*> all{&tok_embd, &out_norm};
  if (!config.tie_embeddings) all.push_back(&output);
  for (const LayerWeights& l : layers) {
    for (const TensorView* t : {&l.attn_norm, &l.wq, &l.wk, &l.wv, &l.wo, &l.ffn_norm})
      all.push_back(t);
    if (config.has_router) all.push_back(&l.router);
    for (const ExpertWeights& e : l.experts)
      for (const TensorView* t : {&e.w1, &e.w2, &e.w3}) all.push_back(t);
  }
  return all;
}

void expect_shape(const TensorView& t, const std::vector<int64_t>& shape, const std::string& where) {
  SMOE_CHECK(t.shape == shape, where, ": tensor '", t.name, "' has shape ", shape_str(t.shape),
             ", expected ", shape_str(shape));
}

std::string detect_format(const std::string& path) {
  SMOE_CHECK(fs::exists(path), path, ": no such file or directory");
  if (fs::is_directory(path)) {
    if (fs::exists(fs::path(path) / "config.json")) return "hf";
    if (fs::exists(fs::path(path) / "params.json")) return "mistral";
    fail(path, ": folder has neither config.json (Hugging Face) nor params.json (Mistral)");
  }
  const std::string name = fs::path(path).filename().string();
  if (name.size() > 5 && name.substr(name.size() - 5) == ".json") {
    // Mistral's params.json says "dim"; Hugging Face's config.json says "hidden_size".
    const std::string text = read_text_file(path);
    return text.find("\"hidden_size\"") == std::string::npos && text.find("\"dim\"") != std::string::npos
               ? "mistral-config"
               : "hf-config";
  }
  char magic[4] = {};
  FILE* f = std::fopen(path.c_str(), "rb");
  SMOE_CHECK(f, path, ": cannot open");
  size_t got = std::fread(magic, 1, 4, f);
  std::fclose(f);
  if (got == 4 && std::memcmp(magic, "GGUF", 4) == 0) return "gguf";
  fail(path, ": not a GGUF file (no GGUF magic), nor a model folder or config file");
}

namespace {

// Keeps a GGUF file or safetensors set alive inside the model.
template <typename T>
struct Holder : ModelStorage {
  explicit Holder(T v) : value(std::move(v)) {}
  T value;
};

// Un-permutes the rows of an HF q/k projection [n_heads*hd, D]: HF stores, within each
// head, the even RoPE components first then the odd ones (rotate-half order).
TensorView unpermute_hf_rows(Model& m, const TensorView& t, int64_t n_heads, int64_t head_dim) {
  const int64_t D = t.shape[1];
  const size_t rb = row_bytes(t.dtype, D);
  uint8_t* out = m.own_zeroed(t.nbytes);
  for (int64_t h = 0; h < n_heads; ++h)
    for (int64_t i = 0; i < head_dim / 2; ++i)
      for (int64_t half = 0; half < 2; ++half) {
        const int64_t src = h * head_dim + half * (head_dim / 2) + i;
        const int64_t dst = h * head_dim + 2 * i + half;
        std::memcpy(out + dst * rb, t.data + src * rb, rb);
      }
  TensorView r = t;
  r.data = out;
  return r;
}

void check_layer_shapes(const Model& m, const std::string& where) {
  const ModelConfig& c = m.config;
  expect_shape(m.tok_embd, {c.vocab_size, c.dim}, where);
  expect_shape(m.out_norm, {c.dim}, where);
  expect_shape(m.output, {c.vocab_size, c.dim}, where);
  for (const LayerWeights& l : m.layers) {
    expect_shape(l.attn_norm, {c.dim}, where);
    expect_shape(l.ffn_norm, {c.dim}, where);
    expect_shape(l.wq, {c.q_dim(), c.dim}, where);
    expect_shape(l.wk, {c.kv_dim(), c.dim}, where);
    expect_shape(l.wv, {c.kv_dim(), c.dim}, where);
    expect_shape(l.wo, {c.dim, c.q_dim()}, where);
    if (c.has_router) expect_shape(l.router, {c.n_experts, c.dim}, where);
    for (const ExpertWeights& e : l.experts) {
      expect_shape(e.w1, {c.hidden_dim, c.dim}, where);
      expect_shape(e.w3, {c.hidden_dim, c.dim}, where);
      expect_shape(e.w2, {c.dim, c.hidden_dim}, where);
    }
  }
}

void check_tokenizer(const Model& m) {
  if (!m.tokenizer) return;
  SMOE_CHECK(m.tokenizer->vocab_size() <= m.config.vocab_size, m.path, ": the tokenizer has ",
             m.tokenizer->vocab_size(), " pieces but the model's vocabulary has only ",
             m.config.vocab_size, " rows: tokenizer and weights do not belong together");
}

// Expert e's matrix inside a stacked [E, rows, cols] tensor.
TensorView expert_slice(const TensorView& stacked, int64_t e) {
  TensorView t;
  t.name = cat(stacked.name, "[", e, "]");
  t.dtype = stacked.dtype;
  t.shape = {stacked.shape[1], stacked.shape[2]};
  t.nbytes = stacked.nbytes / static_cast<size_t>(stacked.shape[0]);
  t.data = stacked.data + static_cast<size_t>(e) * t.nbytes;
  return t;
}

std::unique_ptr<Model> load_gguf(const std::string& path) {
  auto model = std::make_unique<Model>();
  auto holder = std::make_unique<Holder<GGUFFile>>(GGUFFile(path));
  const GGUFFile& g = holder->value;
  Model& m = *model;
  m.path = path;
  m.format = "gguf";
  m.file_bytes = g.file_size();
  m.config = config_from_gguf(g);
  const ModelConfig& c = m.config;
  m.tok_embd = g.tensor("token_embd.weight");
  m.out_norm = g.tensor("output_norm.weight");
  if (g.find_tensor("output.weight")) {
    m.output = g.tensor("output.weight");
  } else {
    m.output = m.tok_embd;
    m.config.tie_embeddings = true;
  }
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const std::string b = cat("blk.", l, ".");
    LayerWeights lw;
    lw.attn_norm = g.tensor(b + "attn_norm.weight");
    lw.wq = g.tensor(b + "attn_q.weight");
    lw.wk = g.tensor(b + "attn_k.weight");
    lw.wv = g.tensor(b + "attn_v.weight");
    lw.wo = g.tensor(b + "attn_output.weight");
    lw.ffn_norm = g.tensor(b + "ffn_norm.weight");
    if (c.has_router) {
      lw.router = g.tensor(b + "ffn_gate_inp.weight");
      if (g.find_tensor(b + "ffn_gate_exps.weight")) {
        TensorView g1 = g.tensor(b + "ffn_gate_exps.weight");
        TensorView g2 = g.tensor(b + "ffn_down_exps.weight");
        TensorView g3 = g.tensor(b + "ffn_up_exps.weight");
        expect_shape(g1, {c.n_experts, c.hidden_dim, c.dim}, path);
        expect_shape(g3, {c.n_experts, c.hidden_dim, c.dim}, path);
        expect_shape(g2, {c.n_experts, c.dim, c.hidden_dim}, path);
        for (int64_t e = 0; e < c.n_experts; ++e)
          lw.experts.push_back({expert_slice(g1, e), expert_slice(g2, e), expert_slice(g3, e)});
      } else {  // older layout: one tensor per expert
        for (int64_t e = 0; e < c.n_experts; ++e)
          lw.experts.push_back({g.tensor(cat(b, "ffn_gate.", e, ".weight")),
                                g.tensor(cat(b, "ffn_down.", e, ".weight")),
                                g.tensor(cat(b, "ffn_up.", e, ".weight"))});
      }
    } else {
      lw.experts.push_back({g.tensor(b + "ffn_gate.weight"), g.tensor(b + "ffn_down.weight"),
                            g.tensor(b + "ffn_up.weight")});
    }
    m.layers.push_back(std::move(lw));
  }
  check_layer_shapes(m, path);
  if (g.has("tokenizer.ggml.model")) m.tokenizer = Tokenizer::from_gguf(g);
  m.storage.push_back(std::move(holder));
  check_tokenizer(m);
  return model;
}

std::string tokenizer_path(const fs::path& dir) {
  for (const char* name : {"tokenizer.model", "tokenizer.model.v1"})
    if (fs::exists(dir / name)) return (dir / name).string();
  return "";
}

// Tensor names of a safetensors checkpoint layout ("{l}" is the layer, "{e}" the expert).
struct SafetensorsNames {
  const char *embed, *norm, *output, *attn_norm, *ffn_norm, *wq, *wk, *wv, *wo, *router;
  const char *expert_w1, *expert_w2, *expert_w3;  // MoE experts
  const char *dense_w1, *dense_w2, *dense_w3;     // dense feed-forward
  bool qk_rotate_half;                            // HF: q/k rows permuted for rotate-half RoPE
};

const SafetensorsNames kHfNames = {
    "model.embed_tokens.weight", "model.norm.weight", "lm_head.weight",
    "model.layers.{l}.input_layernorm.weight", "model.layers.{l}.post_attention_layernorm.weight",
    "model.layers.{l}.self_attn.q_proj.weight", "model.layers.{l}.self_attn.k_proj.weight",
    "model.layers.{l}.self_attn.v_proj.weight", "model.layers.{l}.self_attn.o_proj.weight",
    "model.layers.{l}.block_sparse_moe.gate.weight",
    "model.layers.{l}.block_sparse_moe.experts.{e}.w1.weight",
    "model.layers.{l}.block_sparse_moe.experts.{e}.w2.weight",
    "model.layers.{l}.block_sparse_moe.experts.{e}.w3.weight",
    "model.layers.{l}.mlp.gate_proj.weight", "model.layers.{l}.mlp.down_proj.weight",
    "model.layers.{l}.mlp.up_proj.weight", true};

const SafetensorsNames kMistralNames = {
    "tok_embeddings.weight", "norm.weight", "output.weight",
    "layers.{l}.attention_norm.weight", "layers.{l}.ffn_norm.weight",
    "layers.{l}.attention.wq.weight", "layers.{l}.attention.wk.weight",
    "layers.{l}.attention.wv.weight", "layers.{l}.attention.wo.weight",
    "layers.{l}.feed_forward.gate.weight",
    "layers.{l}.feed_forward.experts.{e}.w1.weight",
    "layers.{l}.feed_forward.experts.{e}.w2.weight",
    "layers.{l}.feed_forward.experts.{e}.w3.weight",
    "layers.{l}.feed_forward.w1.weight", "layers.{l}.feed_forward.w2.weight",
    "layers.{l}.feed_forward.w3.weight", false};

std::string expand(const char* pattern, int64_t layer, int64_t expert = -1) {
  std::string s = pattern;
  for (auto [key, value] : {std::pair<const char*, int64_t>{"{l}", layer}, {"{e}", expert}}) {
    const size_t at = s.find(key);
    if (at != std::string::npos) s.replace(at, 3, std::to_string(value));
  }
  return s;
}

// Fills m's weights from a safetensors checkpoint with the given names, then loads the
// tokenizer.model beside it, if any. m.config must be set.
std::unique_ptr<Model> build_from_safetensors(std::unique_ptr<Model> model,
                                              std::unique_ptr<Holder<SafetensorsSet>> holder,
                                              const SafetensorsNames& n) {
  Model& m = *model;
  const ModelConfig& c = m.config;
  const SafetensorsSet& st = holder->value;
  m.file_bytes = st.total_bytes();
  m.tok_embd = st.get(n.embed);
  m.out_norm = st.get(n.norm);
  if (const TensorView* out = st.find(n.output)) {
    m.output = *out;
  } else {
    SMOE_CHECK(c.tie_embeddings, "tensor '", n.output, "' not found in ", st.where(),
               " and the config does not tie the output to the embeddings");
    m.output = m.tok_embd;
  }
  for (int64_t l = 0; l < c.n_layers; ++l) {
    auto get = [&](const char* pattern, int64_t e = -1) { return st.get(expand(pattern, l, e)); };
    LayerWeights lw;
    lw.attn_norm = get(n.attn_norm);
    lw.ffn_norm = get(n.ffn_norm);
    lw.wq = get(n.wq);
    lw.wk = get(n.wk);
    lw.wv = get(n.wv);
    lw.wo = get(n.wo);
    if (n.qk_rotate_half) {
      expect_shape(lw.wq, {c.q_dim(), c.dim}, st.where());
      expect_shape(lw.wk, {c.kv_dim(), c.dim}, st.where());
      lw.wq = unpermute_hf_rows(m, lw.wq, c.n_heads, c.head_dim);
      lw.wk = unpermute_hf_rows(m, lw.wk, c.n_kv_heads, c.head_dim);
    }
    if (c.has_router) {
      lw.router = get(n.router);
      for (int64_t e = 0; e < c.n_experts; ++e)
        lw.experts.push_back({get(n.expert_w1, e), get(n.expert_w2, e), get(n.expert_w3, e)});
    } else {
      lw.experts.push_back({get(n.dense_w1), get(n.dense_w2), get(n.dense_w3)});
    }
    m.layers.push_back(std::move(lw));
  }
  check_layer_shapes(m, st.where());
  if (std::string tok = tokenizer_path(m.path); !tok.empty()) m.tokenizer = Tokenizer::from_spm_file(tok);
  m.storage.push_back(std::move(holder));
  check_tokenizer(m);
  return model;
}

std::unique_ptr<Model> load_hf(const std::string& dir) {
  auto model = std::make_unique<Model>();
  const fs::path d(dir);
  model->path = dir;
  model->format = "hf";
  model->config = config_from_hf_json((d / "config.json").string());
  std::unique_ptr<Holder<SafetensorsSet>> holder;
  if (fs::exists(d / "model.safetensors.index.json")) {
    holder = std::make_unique<Holder<SafetensorsSet>>(
        SafetensorsSet::open_index((d / "model.safetensors.index.json").string()));
  } else if (fs::exists(d / "model.safetensors")) {
    holder = std::make_unique<Holder<SafetensorsSet>>(
        SafetensorsSet::open_files({(d / "model.safetensors").string()}));
  } else {
    fail(dir, ": no model.safetensors.index.json or model.safetensors (only safetensors "
              "checkpoints are supported)");
  }
  return build_from_safetensors(std::move(model), std::move(holder), kHfNames);
}

std::unique_ptr<Model> load_mistral(const std::string& dir) {
  auto model = std::make_unique<Model>();
  const fs::path d(dir);
  model->path = dir;
  model->format = "mistral";
  model->config = config_from_mistral_json((d / "params.json").string());
  const fs::path weights = d / "consolidated.safetensors";
  SMOE_CHECK(fs::exists(weights), dir, ": no consolidated.safetensors (only the safetensors "
                                        "form of Mistral's consolidated format is supported)");
  return build_from_safetensors(
      std::move(model),
      std::make_unique<Holder<SafetensorsSet>>(SafetensorsSet::open_files({weights.string()})),
      kMistralNames);
}

}  // namespace

std::unique_ptr<Model> load_model(const std::string& path, const LoadOptions& opts) {
  const std::string format = detect_format(path);
  std::unique_ptr<Model> m;
  if (format == "gguf") m = load_gguf(path);
  else if (format == "hf") m = load_hf(path);
  else if (format == "mistral") m = load_mistral(path);
  else fail(path, ": is a config file without weights; give the model folder or a GGUF file");
  if (resolve_weight_placement(opts.weights, weight_bytes(*m), available_memory_bytes()) ==
      WeightPlacement::kMemory)
    move_weights_to_memory(*m, opts.repack, opts.progress);
  return m;
}

}  // namespace smoe
