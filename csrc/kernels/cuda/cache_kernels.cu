// KV-cache kernels: one CTA per token (reshape_and_cache) or per (layer, pair, K|V) block
// (copy_blocks); threads stride over the bytes in the widest unit the alignment allows.
#include "kernels/cuda/cache_kernels.cuh"

namespace pagedinfer::cuda {
namespace {

template <int kUnit> struct UnitType;
template <> struct UnitType<16> { using type = uint4; };
template <> struct UnitType<8> { using type = uint2; };
template <> struct UnitType<4> { using type = uint32_t; };
template <> struct UnitType<2> { using type = uint16_t; };
template <> struct UnitType<1> { using type = uint8_t; };

template <int kUnit>
__global__ void reshape_and_cache_kernel(CacheWriteArgs a) {
  using U = typename UnitType<kUnit>::type;
  const int64_t t = blockIdx.x;
  const int64_t slot = a.slot_mapping[t];
  if (slot < 0 || slot >= a.num_slots) return;  // -1 = skip; out of range was refused on the host
  const int64_t units_per_head = a.head_bytes / kUnit;
  const int64_t units = a.num_kv_heads * units_per_head;
  const int64_t row = slot_row_offset(slot, a.num_kv_heads, a.head_bytes);
  for (int64_t i = threadIdx.x; i < units; i += blockDim.x) {
    const int64_t h = i / units_per_head;
    const int64_t byte = (i % units_per_head) * kUnit;
    const U k = *reinterpret_cast<const U*>(a.key + t * a.key_stride_token + h * a.key_stride_head + byte);
    const U v = *reinterpret_cast<const U*>(a.value + t * a.value_stride_token + h * a.value_stride_head + byte);
    *reinterpret_cast<U*>(a.key_cache + row + h * a.head_bytes + byte) = k;
    *reinterpret_cast<U*>(a.value_cache + row + h * a.head_bytes + byte) = v;
  }
}

template <int kUnit>
__global__ void copy_blocks_kernel(char* const* layer_bases, const int64_t* layer_block_bytes,
                                   const int64_t* block_mapping, int64_t num_pairs) {
  using U = typename UnitType<kUnit>::type;
  const int64_t pair = blockIdx.x;
  const int64_t layer = blockIdx.y;
  char* base = layer_bases[2 * layer + blockIdx.z];
  const int64_t bytes = layer_block_bytes[layer];
  const int64_t src = block_mapping[2 * pair], dst = block_mapping[2 * pair + 1];
  if (src == dst) return;
  const U* from = reinterpret_cast<const U*>(base + src * bytes);
  U* to = reinterpret_cast<U*>(base + dst * bytes);
  for (int64_t i = threadIdx.x; i < bytes / kUnit; i += blockDim.x) to[i] = from[i];
}

uint64_t or_bits(std::initializer_list<uint64_t> values) {
  uint64_t bits = 0;
  for (auto v : values) bits |= v;
  return bits;
}

}  // namespace

cudaError_t launch_reshape_and_cache(const CacheWriteArgs& a, cudaStream_t stream) {
  if (a.num_tokens == 0) return cudaSuccess;
  const int unit = copy_unit_bytes(or_bits({
      reinterpret_cast<uint64_t>(a.key), reinterpret_cast<uint64_t>(a.value),
      reinterpret_cast<uint64_t>(a.key_cache), reinterpret_cast<uint64_t>(a.value_cache),
      static_cast<uint64_t>(a.key_stride_token), static_cast<uint64_t>(a.key_stride_head),
      static_cast<uint64_t>(a.value_stride_token), static_cast<uint64_t>(a.value_stride_head),
      static_cast<uint64_t>(a.head_bytes)}));
  const dim3 grid(static_cast<unsigned>(a.num_tokens));
  const int64_t units = a.num_kv_heads * a.head_bytes / unit;
  const dim3 block(static_cast<unsigned>(units < 256 ? ((units + 31) / 32) * 32 : 256));
  switch (unit) {
    case 16: reshape_and_cache_kernel<16><<<grid, block, 0, stream>>>(a); break;
    case 8: reshape_and_cache_kernel<8><<<grid, block, 0, stream>>>(a); break;
    case 4: reshape_and_cache_kernel<4><<<grid, block, 0, stream>>>(a); break;
    case 2: reshape_and_cache_kernel<2><<<grid, block, 0, stream>>>(a); break;
    default: reshape_and_cache_kernel<1><<<grid, block, 0, stream>>>(a); break;
  }
  return cudaGetLastError();
}

cudaError_t launch_copy_blocks(char* const* layer_bases, const int64_t* layer_block_bytes,
                               int64_t num_layers, const int64_t* block_mapping, int64_t num_pairs,
                               uint64_t block_bytes_or, cudaStream_t stream) {
  if (num_layers == 0 || num_pairs == 0) return cudaSuccess;
  // Cache tensors come from the caching allocator (256-byte aligned) and block sizes in bytes are
  // multiples of 16 for every head_dim that is a multiple of 8; block_bytes_or (every layer's block
  // bytes OR-ed together) picks the widest unit that divides them all.
  const int unit = copy_unit_bytes(block_bytes_or);
  const dim3 grid(static_cast<unsigned>(num_pairs), static_cast<unsigned>(num_layers), 2);
  const dim3 block(256);
  switch (unit) {
    case 16: copy_blocks_kernel<16><<<grid, block, 0, stream>>>(layer_bases, layer_block_bytes, block_mapping, num_pairs); break;
    case 8: copy_blocks_kernel<8><<<grid, block, 0, stream>>>(layer_bases, layer_block_bytes, block_mapping, num_pairs); break;
    case 4: copy_blocks_kernel<4><<<grid, block, 0, stream>>>(layer_bases, layer_block_bytes, block_mapping, num_pairs); break;
    case 2: copy_blocks_kernel<2><<<grid, block, 0, stream>>>(layer_bases, layer_block_bytes, block_mapping, num_pairs); break;
    default: copy_blocks_kernel<1><<<grid, block, 0, stream>>>(layer_bases, layer_block_bytes, block_mapping, num_pairs); break;
  }
  return cudaGetLastError();
}

}  // namespace pagedinfer::cuda
