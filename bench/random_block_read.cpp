// What one thread can read from scattered cache blocks with plain vector loads and nothing else
// to do (a paged decode attention kernel's K/V blocks lie at random places in the pool). The
// AMX decode kernel's tile loads, 16 slots a line each, read such blocks faster (README,
// Performance): this is the vector loads' figure, not a ceiling for the kernel.
//
//   g++ -O2 -mavx512f bench/random_block_read.cpp -o /tmp/random_block_read
//   /tmp/random_block_read 32768        # the attention bench's blocks: 16 slots x 8 heads x 128 x 2 B
//   /tmp/random_block_read 32768 2 16   # two blocks at once, interleaved 16 lines (1 KiB) at a time
//   (run two copies at once for both cores)
//
// Arguments: block bytes, blocks read at once (default 1), lines per turn when interleaving
// (default 1). A 1 GiB pool on 2 MiB pages (as pagedinfer's KV cache), blocks visited in a
// shuffled order; each line is read once per pass with 64-byte loads. Prints GB/s of 3 passes.
#include <immintrin.h>
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

int main(int argc, char** argv) {
  const size_t block = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 32768;
  const size_t streams = argc > 2 ? std::strtoull(argv[2], nullptr, 10) : 1;
  const size_t turn = argc > 3 ? std::strtoull(argv[3], nullptr, 10) : 1;
  const size_t lines = block / 64;
  if (block < 64 || block % 64 != 0 || streams < 1 || streams > 16 || turn < 1 || lines % turn != 0) {
    std::fprintf(stderr, "usage: %s BLOCK_BYTES (multiple of 64) [STREAMS 1-16] [LINES_PER_TURN]\n", argv[0]);
    return 2;
  }
  const size_t pool = size_t{1} << 30, count = pool / block;
  char* base = static_cast<char*>(std::aligned_alloc(size_t{1} << 21, count * block));
  madvise(base, count * block, MADV_HUGEPAGE);
  std::memset(base, 1, count * block);
  std::vector<size_t> order(count);
  for (size_t i = 0; i < count; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), std::mt19937(1));

  __m512i acc = _mm512_setzero_si512();
  for (int pass = 0; pass < 3; ++pass) {
    const auto t0 = std::chrono::steady_clock::now();
    for (size_t b = 0; b + streams <= count; b += streams) {
      const char* blocks[16];
      for (size_t s = 0; s < streams; ++s) blocks[s] = base + order[b + s] * block;
      if (streams == 1) {  // the tightest loop: the fewer instructions between the loads, the
        // more of them the core keeps in flight (the nest below reads ~12 % slower here)
        for (size_t i = 0; i < lines; ++i) acc = _mm512_add_epi32(acc, _mm512_load_si512(blocks[0] + i * 64));
        continue;
      }
      for (size_t line = 0; line < lines; line += turn)
        for (size_t s = 0; s < streams; ++s)
          for (size_t i = line; i < line + turn; ++i)
            acc = _mm512_add_epi32(acc, _mm512_load_si512(blocks[s] + i * 64));
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double bytes = static_cast<double>(count / streams * streams * block);
    std::printf("blocks of %zu B, %zu at once, %zu lines a turn: %.1f GB/s\n", block, streams, turn,
                bytes / seconds / 1e9);
  }
  alignas(64) int lanes[16];
  _mm512_store_si512(lanes, acc);
  return lanes[0] == 42;  // keeps the loads
}
