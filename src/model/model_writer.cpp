// model_writer.cpp: save_gguf and save_hf (see model_writer.h). Tensors are handed to the
// file writers as spans of the model's own memory: stacked experts are the experts'
// matrices one after another, and HF's permuted q/k projections are the model's rows in
// another order, so nothing is copied. Legend: D dim, F expert hidden, E experts, V vocab.
#include "model/model_writer.h"

#include <charconv>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/out_file.h"
#include "formats/gguf_writer.h"
#include "formats/safetensors_writer.h"
#include "kernels/dequant.h"
#include "kernels/quantize.h"
#include "tokenizer/spm_vocab.h"

namespace smoe {

namespace fs = std::filesystem;
using Chunks = std::vector<std::span<const uint8_t>>;

namespace {

std::span<const uint8_t> bytes_of(const TensorView& t) { return {t.data, t.nbytes}; }

// The dtype most of the weights have (the experts'), for general.file_type / torch_dtype.
DType main_dtype(const Model& m) { return m.layers.at(0).experts.at(0).w1.dtype; }

// llama.cpp's llama_ftype for a model whose weights are mostly `t`.
uint32_t llama_file_type(DType t) {
  switch (t) {
    case DType::F32:
      return 0;  // ALL_F32
    case DType::F16:
      return 1;  // MOSTLY_F16
    case DType::Q4_0:
      return 2;  // MOSTLY_Q4_0
    case DType::Q8_0:
      return 7;  // MOSTLY_Q8_0
    case DType::BF16:
      return 32;  // MOSTLY_BF16
    case DType::Q2_K:
      return 10;  // MOSTLY_Q2_K
    case DType::Q3_K:
      return 12;  // MOSTLY_Q3_K_M (output q6_K, attn_k/v q8_0 with 8+ experts, as llama.cpp's M mix)
    case DType::Q4_K:
      return 15;  // MOSTLY_Q4_K_M
    case DType::Q5_K:
      return 17;  // MOSTLY_Q5_K_M
    case DType::Q6_K:
      return 18;  // MOSTLY_Q6_K
  }
  fail("internal: no llama file type for ", dtype_name(t));
}

uint32_t u32(int64_t v, const char* field) {
  SMOE_CHECK(v >= 0 && v <= static_cast<int64_t>(UINT32_MAX), "GGUF writer: ", field, " = ", v,
             " does not fit in a u32");
  return static_cast<uint32_t>(v);
}

// Model-level checks shared by both writers.
void check_model(const Model& m, const std::string& where) {
  const ModelConfig& c = m.config;
  c.validate(where);
  SMOE_CHECK(static_cast<int64_t>(m.layers.size()) == c.n_layers, where, ": the model has ",
             m.layers.size(), " layers but its config says ", c.n_layers);
  for (size_t l = 0; l < m.layers.size(); ++l) {
    const LayerWeights& lw = m.layers[l];
    SMOE_CHECK(static_cast<int64_t>(lw.experts.size()) == c.n_experts, where, ": layer ", l,
               " has ", lw.experts.size(), " experts but the config says ", c.n_experts);
    SMOE_CHECK(!c.has_router || lw.router.data || !lw.router.shape.empty(), where, ": layer ", l, " has no router weights");
  }
  for (const TensorView* t : m.all_tensors())
    SMOE_CHECK(!t->x16, where, ": tensor ", t->name, " is repacked for the int8 kernels; load the "
               "model with its weights mapped (--load mmap) to write it");
}

void add_vocab(const Model& m, GGUFWriter& w, const std::string& path) {
  const std::string source = cat("GGUF ", path, ": the model's tokenizer");
  const SpmVocab v = parse_spm_vocab(m.tokenizer->serialized_model(), source);
  SMOE_CHECK(v.model_type == 2, source, " is a SentencePiece model of type ", v.model_type,
             " (1 unigram, 3 word, 4 char), but GGUF's 'llama' vocabulary holds BPE models (type 2)"
             "; save without the vocabulary (embed_vocab = false)");
  w.set_string("tokenizer.ggml.model", "llama");
  w.set_string("tokenizer.ggml.pre", "default");
  w.set_string_array("tokenizer.ggml.tokens", v.pieces);
  w.set_array("tokenizer.ggml.scores", v.scores);
  w.set_array("tokenizer.ggml.token_type", v.types);
  if (v.unk_id >= 0) w.set_u32("tokenizer.ggml.unknown_token_id", static_cast<uint32_t>(v.unk_id));
  if (v.pad_id >= 0) w.set_u32("tokenizer.ggml.padding_token_id", static_cast<uint32_t>(v.pad_id));
  w.set_bool("tokenizer.ggml.add_space_prefix", v.add_dummy_prefix);
  w.set_bool("tokenizer.ggml.remove_extra_whitespaces", v.remove_extra_whitespaces);
}

void add_gguf_metadata(const Model& m, GGUFWriter& w, const GGUFSaveOptions& o,
                       const std::string& path) {
  const ModelConfig& c = m.config;
  w.set_string("general.architecture", "llama");
  w.set_string("general.type", "model");
  w.set_string("general.name", o.name.empty() ? std::string("smoe model") : o.name);
  w.set_u32("general.file_type", llama_file_type(o.file_type ? *o.file_type : main_dtype(m)));
  w.set_u32("general.quantization_version", 2);
  w.set_u32("llama.vocab_size", u32(c.vocab_size, "vocab_size"));
  w.set_u32("llama.context_length", u32(c.max_seq_len, "max_seq_len"));
  w.set_u32("llama.embedding_length", u32(c.dim, "dim"));
  w.set_u32("llama.block_count", u32(c.n_layers, "n_layers"));
  w.set_u32("llama.feed_forward_length", u32(c.hidden_dim, "hidden_dim"));
  w.set_u32("llama.attention.head_count", u32(c.n_heads, "n_heads"));
  w.set_u32("llama.attention.head_count_kv", u32(c.n_kv_heads, "n_kv_heads"));
  w.set_u32("llama.attention.key_length", u32(c.head_dim, "head_dim"));
  w.set_u32("llama.attention.value_length", u32(c.head_dim, "head_dim"));
  w.set_u32("llama.rope.dimension_count", u32(c.head_dim, "head_dim"));
  w.set_f32("llama.rope.freq_base", c.rope_theta);
  w.set_f32("llama.attention.layer_norm_rms_epsilon", c.norm_eps);
  if (c.sliding_window > 0)
    w.set_u32("llama.attention.sliding_window", u32(c.sliding_window, "sliding_window"));
  if (c.has_router) {
    w.set_u32("llama.expert_count", u32(c.n_experts, "n_experts"));
    w.set_u32("llama.expert_used_count", u32(c.n_experts_used, "n_experts_used"));
  }
  if (m.tokenizer && o.embed_vocab) add_vocab(m, w, path);
  w.set_u32("tokenizer.ggml.bos_token_id", u32(c.bos_id, "bos_id"));
  w.set_u32("tokenizer.ggml.eos_token_id", u32(c.eos_id, "eos_id"));
}

// Writes `parts` (one tensor, or the experts of a stacked one, all of one shape) as one
// tensor of type `target` [parts.size(), rows, cols] (or the part's shape for one part),
// converting rows through float32 in parallel.
void add_converted(GGUFWriter& w, const std::string& name, std::vector<const TensorView*> parts,
                   DType target, const GGUFSaveOptions& o) {
  const TensorView& first = *parts[0];
  const int64_t cols = first.shape.back(), rows = first.numel() / cols;
  const size_t out_rb = row_bytes(target, cols);
  std::vector<int64_t> shape = first.shape;
  if (parts.size() > 1) shape.insert(shape.begin(), static_cast<int64_t>(parts.size()));
  w.add_tensor(name, target, shape, [parts, target, cols, rows, out_rb, &o](uint8_t* dst, size_t) {
    for (size_t p = 0; p < parts.size(); ++p) {
      const TensorView& t = *parts[p];
      uint8_t* out = dst + p * static_cast<size_t>(rows) * out_rb;
      const size_t in_rb = o.source_rows ? 0 : row_bytes(t.dtype, cols);
      parallel_for(o.pool, rows, 16, [&](int64_t r0, int64_t r1) {
        thread_local std::vector<float> buf;
        buf.resize(static_cast<size_t>(cols));
        for (int64_t r = r0; r < r1; ++r) {
          if (o.source_rows) o.source_rows(t, r, 1, buf.data());
          else dequantize_row(t.dtype, t.data + static_cast<size_t>(r) * in_rb, buf.data(), cols);
          quantize_row(target, buf.data(), out + static_cast<size_t>(r) * out_rb, cols);
        }
      });
    }
  });
}

bool converting(const GGUFSaveOptions& o) { return o.target_type || o.source_rows; }

void add_view(GGUFWriter& w, const std::string& name, const TensorView& t,
              const GGUFSaveOptions& o) {
  if (converting(o)) {
    const DType target = o.target_type ? o.target_type(name, t) : t.dtype;
    if (target != t.dtype || o.source_rows) return add_converted(w, name, {&t}, target, o);
  }
  w.add_tensor(name, t.dtype, t.shape, t.data, t.nbytes);
}

// One of a layer's three expert matrices, stacked over the experts: [E, rows, cols].
void add_stacked(GGUFWriter& w, const std::string& name, const LayerWeights& lw,
                 TensorView ExpertWeights::*which, const GGUFSaveOptions& o) {
  const TensorView& first = lw.experts[0].*which;
  if (converting(o)) {
    const DType target = o.target_type ? o.target_type(name, first) : first.dtype;
    if (target != first.dtype || o.source_rows) {
      std::vector<const TensorView*> parts;
      for (const ExpertWeights& e : lw.experts) parts.push_back(&(e.*which));
      return add_converted(w, name, std::move(parts), target, o);
    }
  }
  Chunks chunks;
  for (size_t e = 0; e < lw.experts.size(); ++e) {
    const TensorView& t = lw.experts[e].*which;
    SMOE_CHECK(t.dtype == first.dtype && t.shape == first.shape, "GGUF writer: cannot stack '",
               name, "': expert ", e, " is ", dtype_name(t.dtype), " ", shape_str(t.shape),
               " but expert 0 is ", dtype_name(first.dtype), " ", shape_str(first.shape),
               " (save with per_expert_tensors)");
    chunks.push_back(bytes_of(t));
  }
  std::vector<int64_t> shape{static_cast<int64_t>(lw.experts.size())};
  shape.insert(shape.end(), first.shape.begin(), first.shape.end());
  w.add_tensor(name, first.dtype, shape, std::move(chunks));
}

}  // namespace

void save_gguf(const Model& m, const std::string& path, const GGUFSaveOptions& o) {
  check_model(m, cat("GGUF ", path));
  const ModelConfig& c = m.config;
  GGUFWriter w;
  add_gguf_metadata(m, w, o, path);
  add_view(w, "token_embd.weight", m.tok_embd, o);                   // [V, D]
  add_view(w, "output_norm.weight", m.out_norm, o);                  // [D]
  if (!c.tie_embeddings) add_view(w, "output.weight", m.output, o);  // [V, D]
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const LayerWeights& lw = m.layers[static_cast<size_t>(l)];
    const std::string b = cat("blk.", l, ".");
    add_view(w, b + "attn_norm.weight", lw.attn_norm, o);
    add_view(w, b + "attn_q.weight", lw.wq, o);       // [H*hd, D], interleaved RoPE order
    add_view(w, b + "attn_k.weight", lw.wk, o);       // [KV*hd, D]
    add_view(w, b + "attn_v.weight", lw.wv, o);       // [KV*hd, D]
    add_view(w, b + "attn_output.weight", lw.wo, o);  // [D, H*hd]
    add_view(w, b + "ffn_norm.weight", lw.ffn_norm, o);
    if (!c.has_router) {
      const ExpertWeights& e = lw.experts[0];
      add_view(w, b + "ffn_gate.weight", e.w1, o);  // [F, D]
      add_view(w, b + "ffn_down.weight", e.w2, o);  // [D, F]
      add_view(w, b + "ffn_up.weight", e.w3, o);    // [F, D]
      continue;
    }
    add_view(w, b + "ffn_gate_inp.weight", lw.router, o);  // [E, D]
    if (o.per_expert_tensors) {
      for (size_t e = 0; e < lw.experts.size(); ++e) {
        add_view(w, cat(b, "ffn_gate.", e, ".weight"), lw.experts[e].w1, o);
        add_view(w, cat(b, "ffn_down.", e, ".weight"), lw.experts[e].w2, o);
        add_view(w, cat(b, "ffn_up.", e, ".weight"), lw.experts[e].w3, o);
      }
    } else {
      add_stacked(w, b + "ffn_gate_exps.weight", lw, &ExpertWeights::w1, o);  // [E, F, D]
      add_stacked(w, b + "ffn_down_exps.weight", lw, &ExpertWeights::w2, o);  // [E, D, F]
      add_stacked(w, b + "ffn_up_exps.weight", lw, &ExpertWeights::w3, o);    // [E, F, D]
    }
  }
  w.write(path);
}

namespace {

// The rows of a q/k projection [n_heads*hd, D] in HF's order: within each head, the even
// RoPE components (2i) first, then the odd ones (2i+1). Inverse of the loader's
// unpermute_hf_rows: HF row h*hd + half*hd/2 + i is our row h*hd + 2i + half.
Chunks hf_permuted_rows(const TensorView& t, int64_t n_heads, int64_t head_dim) {
  const size_t rb = row_bytes(t.dtype, t.shape[1]);
  Chunks rows;
  rows.reserve(static_cast<size_t>(n_heads * head_dim));
  for (int64_t h = 0; h < n_heads; ++h)
    for (int64_t half = 0; half < 2; ++half)
      for (int64_t i = 0; i < head_dim / 2; ++i) {
        const int64_t src = h * head_dim + 2 * i + half;
        rows.emplace_back(t.data + static_cast<size_t>(src) * rb, rb);
      }
  return rows;
}

const char* torch_dtype(DType t) {
  switch (t) {
    case DType::F16:
      return "float16";
    case DType::BF16:
      return "bfloat16";
    default:
      return "float32";
  }
}

// A float as the shortest decimal that reads back as the same float (1e-05, not
// 9.999999747378752e-06), as a JSON number.
nlohmann::ordered_json json_float(float f) {
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof buf, f);
  return std::stod(std::string(buf, r.ptr));
}

std::string hf_config_json(const Model& m) {
  const ModelConfig& c = m.config;
  nlohmann::ordered_json j;
  j["architectures"] = {c.has_router ? "MixtralForCausalLM" : "MistralForCausalLM"};
  j["model_type"] = c.has_router ? "mixtral" : "mistral";
  j["hidden_size"] = c.dim;
  j["num_hidden_layers"] = c.n_layers;
  j["num_attention_heads"] = c.n_heads;
  j["num_key_value_heads"] = c.n_kv_heads;
  j["head_dim"] = c.head_dim;
  j["intermediate_size"] = c.hidden_dim;
  j["vocab_size"] = c.vocab_size;
  if (c.has_router) {
    j["num_local_experts"] = c.n_experts;
    j["num_experts_per_tok"] = c.n_experts_used;
  }
  j["max_position_embeddings"] = c.max_seq_len;
  j["sliding_window"] = c.sliding_window > 0 ? nlohmann::ordered_json(c.sliding_window) : nullptr;
  j["rms_norm_eps"] = json_float(c.norm_eps);
  j["rope_theta"] = json_float(c.rope_theta);
  j["hidden_act"] = "silu";
  j["tie_word_embeddings"] = c.tie_embeddings;
  j["bos_token_id"] = c.bos_id;
  j["eos_token_id"] = c.eos_id;
  j["torch_dtype"] = torch_dtype(main_dtype(m));
  return j.dump(2) + "\n";
}

void write_text(const std::string& path, const std::string& what, const std::string& text) {
  OutFile out(path, what);
  out.write(text.data(), text.size());
  out.close();
}

}  // namespace

void save_hf(const Model& m, const std::string& dir) {
  check_model(m, dir);
  const ModelConfig& c = m.config;
  // Everything is checked (dtypes included) before anything is written.
  SafetensorsWriter st;
  st.set_metadata("format", "pt");
  auto add = [&](const std::string& name, const TensorView& t) {
    st.add_tensor(name, t.dtype, t.shape, {bytes_of(t)});
  };
  add("model.embed_tokens.weight", m.tok_embd);
  add("model.norm.weight", m.out_norm);
  if (!c.tie_embeddings) add("lm_head.weight", m.output);
  for (int64_t l = 0; l < c.n_layers; ++l) {
    const LayerWeights& lw = m.layers[static_cast<size_t>(l)];
    const std::string b = cat("model.layers.", l, ".");
    add(b + "input_layernorm.weight", lw.attn_norm);
    add(b + "post_attention_layernorm.weight", lw.ffn_norm);
    expect_shape(lw.wq, {c.q_dim(), c.dim}, dir);
    expect_shape(lw.wk, {c.kv_dim(), c.dim}, dir);
    st.add_tensor(b + "self_attn.q_proj.weight", lw.wq.dtype, lw.wq.shape,
                  hf_permuted_rows(lw.wq, c.n_heads, c.head_dim));
    st.add_tensor(b + "self_attn.k_proj.weight", lw.wk.dtype, lw.wk.shape,
                  hf_permuted_rows(lw.wk, c.n_kv_heads, c.head_dim));
    add(b + "self_attn.v_proj.weight", lw.wv);
    add(b + "self_attn.o_proj.weight", lw.wo);
    if (c.has_router) {
      add(b + "block_sparse_moe.gate.weight", lw.router);
      for (size_t e = 0; e < lw.experts.size(); ++e) {
        const std::string x = cat(b, "block_sparse_moe.experts.", e, ".");
        add(x + "w1.weight", lw.experts[e].w1);
        add(x + "w2.weight", lw.experts[e].w2);
        add(x + "w3.weight", lw.experts[e].w3);
      }
    } else {
      add(b + "mlp.gate_proj.weight", lw.experts[0].w1);
      add(b + "mlp.down_proj.weight", lw.experts[0].w2);
      add(b + "mlp.up_proj.weight", lw.experts[0].w3);
    }
  }

  const fs::path d(dir);
  std::error_code ec;
  if (!fs::exists(d, ec)) {
    const fs::path parent = d.has_parent_path() ? d.parent_path() : fs::path(".");
    SMOE_CHECK(fs::is_directory(parent, ec), dir, ": cannot create the model folder: its parent ",
               parent.string(), " does not exist");
    SMOE_CHECK(fs::create_directory(d, ec) || fs::is_directory(d), dir,
               ": cannot create the model folder (", ec.message(), ")");
  }
  SMOE_CHECK(fs::is_directory(d, ec), dir, ": exists and is not a folder");
  SMOE_CHECK(!fs::exists(d / "model.safetensors.index.json", ec), dir,
             ": already holds a sharded checkpoint (model.safetensors.index.json), which would "
             "shadow the model.safetensors written here; use an empty folder");
  st.write((d / "model.safetensors").string());
  write_text((d / "config.json").string(), "config", hf_config_json(m));
  if (m.tokenizer)
    write_text((d / "tokenizer.model").string(), "tokenizer", m.tokenizer->serialized_model());
}

}  // namespace smoe
