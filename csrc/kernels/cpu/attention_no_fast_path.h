// The fast-path hooks of attention_kernels_impl.h for an ISA without a chunk kernel of its own
// (the scalar twin, AVX2): fast_path_ok is always false, so items take the generic fp32 chunk
// path on the ISA's primitives. Included inside the ISA's namespace, before the impl.
#pragma once
// (no include guard effect across namespaces: each ISA file includes this exactly once)

template <typename T>
bool fast_path_ok(int) { return false; }
inline void fast_prepare(const BlockRows&, const float*, int, float*) {}
template <typename T>
void fast_chunk(const BlockRows&, int, const float*, const T* const*, const T* const*, int64_t,
                int64_t, int, float*, float*, float*, float*, const T*, float*, float*, float*,
                const NextRows<T>&) {}
inline void fast_finish(const BlockRows&, float*, int, float*) {}
template <typename T>
bool fast_chunk_heads(const BlockRows&, int, int, const float*, const T* const*, const T* const*,
                      int64_t, int64_t, int, const T*, float*, float*, float*, const NextRows<T>&) {
  return false;
}
