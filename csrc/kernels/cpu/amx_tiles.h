// AMX tile configuration, shared by the AMX kernel files (compiled with AMX flags).
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace pagedinfer::cpu {

struct alignas(64) TileConfig {
  uint8_t palette_id = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};
static_assert(sizeof(TileConfig) == 64, "AMX tile configuration is 64 bytes");

// Palette 1 with tile t of rows[t] rows of colsb[t] bytes, t < 8.
inline void load_tile_config(const uint8_t* rows, const uint16_t* colsb) {
  TileConfig cfg;
  for (int t = 0; t < 8; ++t) {
    cfg.rows[t] = rows[t];
    cfg.colsb[t] = colsb[t];
  }
  // GCC does not model ldtilecfg's read of the whole 64 bytes: without this barrier it dropped
  // the rows / colsb stores of a non-inlined copy of this function (tilezero then faulted).
  asm volatile("" : : "r"(&cfg) : "memory");
  _tile_loadconfig(&cfg);
}

// Every tile 16 rows x 64 bytes.
inline void load_full_tile_config() {
  const uint8_t rows[8] = {16, 16, 16, 16, 16, 16, 16, 16};
  const uint16_t colsb[8] = {64, 64, 64, 64, 64, 64, 64, 64};
  load_tile_config(rows, colsb);
}

}  // namespace pagedinfer::cpu
