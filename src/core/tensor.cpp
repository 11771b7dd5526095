// tensor.cpp: helpers for TensorView (shape formatting for messages).
#include "core/tensor.h"

namespace smoe {

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) s += ", ";
    s += std::to_string(shape[i]);
  }
  s += "]";
  return s;
}

}  // namespace smoe
