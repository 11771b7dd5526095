// tensor.h: a non-owning view of a stored tensor (in a mapped file or an owned buffer).
// Shapes are row-major, outermost first, as in numpy and safetensors: a linear layer's
// weight is {out, in}; GGUF's ne[] order is reversed into this order by the reader.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "core/dtype.h"

namespace smoe {

struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;  // outermost first
  const uint8_t* data = nullptr;
  size_t nbytes = 0;
  // q8_0/q4_0/K-quant rows repacked in 16-row groups for the VNNI kernels (kernels/gemm_x16.h,
  // done when weights move into memory): only matmul and embedding_row read such a view.
  bool x16 = false;

  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

// "[4096, 14336]"
std::string shape_str(const std::vector<int64_t>& shape);

}  // namespace smoe
