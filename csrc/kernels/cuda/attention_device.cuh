// Device helpers shared by the paged attention kernels (attention_kernels.cu, attention_prefill.cu).
#pragma once

#include <cstdint>

namespace pagedinfer::cuda {

// Block id of position p of a sequence, or -1 when the table holds an id outside the cache (the
// host checks the ids when it may synchronize; during CUDA graph capture such keys are skipped).
__device__ __forceinline__ int64_t block_of(const int32_t* table_row, int64_t p, int block_size,
                                            int64_t num_blocks) {
  const int64_t b = table_row[p / block_size];
  return (b >= 0 && b < num_blocks) ? b : -1;
}

}  // namespace pagedinfer::cuda
