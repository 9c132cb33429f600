// Integer dot-product linear layer for CPU decoding: 4- or 8-bit weights times 8-bit activations.
// The algorithm and its Python side: groundwork/compress/int_dot.py (chapter 18, "Fast CPU
// decoding"); the same arithmetic, written with PyTorch operations, is int_dot_reference there.
//
// Weights: groups of 32 consecutive inputs of a row share a scale s and an offset m (fp16), the
// codes q are unsigned (0..15 or 0..255) and w = q * s + m.
// Activations: each group of 32 inputs of a row becomes int8 codes a with a scale d = max|x| / 127,
// x = a * d. Then for one output
//
//     y = sum_g s_g d_g (sum_i q_i a_i) + sum_g m_g (d_g sum_i a_i)
//
// the inner sum is exact integer arithmetic on unsigned-times-signed bytes (the VNNI instruction
// vpdpbusd, or vpmaddubsw + vpmaddwd on plain AVX2); the float work is per group.
//
// The layout (llama.cpp's repacked "Q4_0 8x8" GEMV has the same idea): rows come in tiles of 16,
// interleaved 4 inputs at a time, so that one 64-byte load holds 4 consecutive codes of each of
// the 16 rows. With 4 activation codes broadcast to all lanes, one vpdpbusd then advances 16
// outputs by 4 products each: the lanes are the rows, no sum across lanes is ever needed, and a
// group's constants for the 16 rows are one 16-wide load. Per tile and group of 32 inputs:
//   8 bits: 8 chunks of 64 bytes, chunk j: byte 4l + i = row l's code of input 4j + i;
//   4 bits: 4 chunks of 64 bytes, chunk c: byte 4l + i holds row l's code of input 4c + i in
//           its low nibble and of input 16 + 4c + i in its high one;
// the constants (G, 2, 16) fp16 per tile: the 16 rows' scales, then their offsets, per group.

#include "int_dot.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace GW_OP_NAMESPACE {
namespace {

[[maybe_unused]] float half_to_float(uint16_t h) {
#ifdef GW_AVX2
  return _cvtsh_ss(h);
#else
  return static_cast<float>(c10::Half(h, c10::Half::from_bits()));
#endif
}

}  // namespace

void quantize_activations(const float* x, int64_t M, int64_t K, int8_t* a, float* d, float* da) {
  const int64_t G = K / kGroup;
  for (int64_t r = 0; r < M; ++r) {
    for (int64_t g = 0; g < G; ++g) {
      const float* v = x + r * K + g * kGroup;
      float amax = 0.f;
      for (int64_t i = 0; i < kGroup; ++i) amax = std::max(amax, std::fabs(v[i]));
      const float scale = amax / 127.f;
      const float inv = amax > 0.f ? 127.f / amax : 0.f;
      int8_t* codes = a + r * K + g * kGroup;
      int32_t sum = 0;
      for (int64_t i = 0; i < kGroup; ++i) {
        const int32_t c = static_cast<int32_t>(std::nearbyint(v[i] * inv));  // |c| <= 127
        codes[i] = static_cast<int8_t>(c);
        sum += c;
      }
      d[r * G + g] = scale;
      da[r * G + g] = scale * static_cast<float>(sum);
    }
  }
}

namespace {

inline int32_t four_codes(const int8_t* a) {  // 4 activation codes, as one int32 to broadcast
  int32_t v;
  std::memcpy(&v, a, sizeof(v));
  return v;
}

// --8<-- [start:tile_dot]
// tile_dot<Bits, R>: out[r][l] (16 floats a row) = sum_g s_l d_rg (sum_i q_li a_ri) + m_l da_rg
// for the 16 weight rows l of one tile and R activation rows r (lda codes and ldd scales apart):
// w the tile's codes (G groups of kGroupBytes), sc its constants (G, 2, 16) fp16 bits.
#if defined(GW_AVX512)
// The 8 quads of a group: lane l (4 bytes) of q[j] = row l's codes of inputs 4j..4j+3
template <int Bits>
inline void group_codes(const uint8_t* w, __m512i (&q)[8]) {
  if constexpr (Bits == 4) {  // chunk c: quad c in the low nibbles, quad c + 4 in the high
    const __m512i nibble = _mm512_set1_epi8(0x0F);
    for (int c = 0; c < 4; ++c) {
      const __m512i v = _mm512_loadu_si512(w + 64 * c);
      q[c] = _mm512_and_si512(v, nibble);
      q[c + 4] = _mm512_and_si512(_mm512_srli_epi16(v, 4), nibble);
    }
  } else {
    for (int j = 0; j < 8; ++j) q[j] = _mm512_loadu_si512(w + 64 * j);
  }
}

constexpr int kRows = 4;  // activation rows sharing each loaded group (prefill, batches)

template <int Bits, int R>
void tile_dot(const uint8_t* w, const uint16_t* sc, const int8_t* a, int64_t lda, const float* d,
              const float* da, int64_t ldd, int64_t G, float* out) {
  constexpr int64_t kGroupBytes = 16 * kGroup * Bits / 8;
  __m512 acc[R], off[R];  // 16 lanes: the tile's 16 rows
  for (int r = 0; r < R; ++r) acc[r] = off[r] = _mm512_setzero_ps();
  for (int64_t g = 0; g < G; ++g) {
    __m512i q[8];
    group_codes<Bits>(w + g * kGroupBytes, q);
    const __m512 s = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(sc)));
    const __m512 m = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(sc + 16)));
    sc += 32;
    for (int r = 0; r < R; ++r) {
      const int8_t* ar = a + r * lda + g * kGroup;
      // each lane: 4 products a quad, 8 quads, in two chains; exact int32 (|sum| <= 32*255*127)
      __m512i even = _mm512_setzero_si512(), odd = _mm512_setzero_si512();
      for (int j = 0; j < 8; j += 2) {
        even = _mm512_dpbusd_epi32(even, q[j], _mm512_set1_epi32(four_codes(ar + 4 * j)));
        odd = _mm512_dpbusd_epi32(odd, q[j + 1], _mm512_set1_epi32(four_codes(ar + 4 * j + 4)));
      }
      const __m512 dot = _mm512_cvtepi32_ps(_mm512_add_epi32(even, odd));
      acc[r] = _mm512_fmadd_ps(dot, _mm512_mul_ps(s, _mm512_set1_ps(d[r * ldd + g])), acc[r]);
      off[r] = _mm512_fmadd_ps(m, _mm512_set1_ps(da[r * ldd + g]), off[r]);
    }
  }
  for (int r = 0; r < R; ++r) _mm512_storeu_ps(out + 16 * r, _mm512_add_ps(acc[r], off[r]));
}
// --8<-- [end:tile_dot]

#elif defined(GW_AVX2)
template <int Bits>
inline __m256i quad_dot(__m256i u, __m256i s) {  // 8 int32 lanes: 4 products each, summed
#if defined(__AVXVNNI__)
  return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, s);
#else
  const __m256i ones = _mm256_set1_epi16(1);
  if constexpr (Bits == 4) {  // pairs of 15 * 127 fit the int16 that vpmaddubsw adds them in
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), ones);
  } else {  // 2 * 255 * 127 would not: the codes' two nibbles separately, then 16 hi + lo
    const __m256i nibble = _mm256_set1_epi8(0x0F);
    const __m256i lo = _mm256_and_si256(u, nibble);
    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(u, 4), nibble);
    const __m256i lo_dot = _mm256_madd_epi16(_mm256_maddubs_epi16(lo, s), ones);
    const __m256i hi_dot = _mm256_madd_epi16(_mm256_maddubs_epi16(hi, s), ones);
    return _mm256_add_epi32(lo_dot, _mm256_slli_epi32(hi_dot, 4));
  }
#endif
}

constexpr int kRows = 2;  // 16 ymm registers: the 8 quads, the constants, 2 rows' sums

template <int Bits, int R>
void tile_dot(const uint8_t* w, const uint16_t* sc, const int8_t* a, int64_t lda, const float* d,
              const float* da, int64_t ldd, int64_t G, float* out) {
  constexpr int64_t kGroupBytes = 16 * kGroup * Bits / 8;
  for (int half = 0; half < 2; ++half) {  // rows 0-7 in bytes 0-31 of each 64, rows 8-15 after
    __m256 acc[R], off[R];
    for (int r = 0; r < R; ++r) acc[r] = off[r] = _mm256_setzero_ps();
    for (int64_t g = 0; g < G; ++g) {
      const uint8_t* wg = w + g * kGroupBytes + 32 * half;
      __m256i q[8];
      if constexpr (Bits == 4) {
        const __m256i nibble = _mm256_set1_epi8(0x0F);
        for (int c = 0; c < 4; ++c) {
          const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wg + 64 * c));
          q[c] = _mm256_and_si256(v, nibble);
          q[c + 4] = _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble);
        }
      } else {
        for (int j = 0; j < 8; ++j) {
          q[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wg + 64 * j));
        }
      }
      const uint16_t* sg = sc + g * 32 + 8 * half;
      const __m256 s = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sg)));
      const __m256 m = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(sg + 16)));
      for (int r = 0; r < R; ++r) {
        const int8_t* ar = a + r * lda + g * kGroup;
        __m256i sum = _mm256_setzero_si256();
        for (int j = 0; j < 8; ++j) {
          const __m256i aj = _mm256_set1_epi32(four_codes(ar + 4 * j));
          sum = _mm256_add_epi32(sum, quad_dot<Bits>(q[j], aj));
        }
        const __m256 dot = _mm256_cvtepi32_ps(sum);
        acc[r] = _mm256_fmadd_ps(dot, _mm256_mul_ps(s, _mm256_set1_ps(d[r * ldd + g])), acc[r]);
        off[r] = _mm256_fmadd_ps(m, _mm256_set1_ps(da[r * ldd + g]), off[r]);
      }
    }
    for (int r = 0; r < R; ++r) {
      _mm256_storeu_ps(out + 16 * r + 8 * half, _mm256_add_ps(acc[r], off[r]));
    }
  }
}

#else
constexpr int kRows = 1;

template <int Bits, int R>
void tile_dot(const uint8_t* w, const uint16_t* sc, const int8_t* a, int64_t lda, const float* d,
              const float* da, int64_t ldd, int64_t G, float* out) {
  constexpr int64_t kGroupBytes = 16 * kGroup * Bits / 8;
  for (int r = 0; r < R; ++r) {
    for (int l = 0; l < 16; ++l) {
      float total = 0.f;
      for (int64_t g = 0; g < G; ++g) {
        const uint8_t* wg = w + g * kGroupBytes;
        int32_t dot = 0;
        const int8_t* ag = a + r * lda + g * kGroup;
        for (int64_t i = 0; i < kGroup; ++i) dot += tile_code(wg, Bits, l, i) * ag[i];
        const float s = half_to_float(sc[g * 32 + l]), m = half_to_float(sc[g * 32 + 16 + l]);
        total += static_cast<float>(dot) * (s * d[r * ldd + g]) + m * da[r * ldd + g];
      }
      out[16 * r + l] = total;
    }
  }
}
#endif

template <int Bits>
void products(const int8_t* a, const float* d, const float* da, int64_t M, int64_t K,
              const uint8_t* codes, const uint16_t* scales, int64_t N, float* y) {
  const int64_t G = K / kGroup;
  const int64_t tile_bytes = 16 * K * Bits / 8, tiles = (N + 15) / 16;
  // a task takes whole tiles: 4 tiles (64 rows) of SmolLM2-135M's 576 inputs are 18 KB at 4 bits
  at::parallel_for(0, tiles, 4, [&](int64_t begin, int64_t end) {
    float out[kRows * 16];
    for (int64_t t = begin; t < end; ++t) {
      const uint8_t* w = codes + t * tile_bytes;
      const uint16_t* sc = scales + t * G * 32;
      const int64_t cols = std::min<int64_t>(16, N - 16 * t);  // the last tile may be partial
      int64_t r = 0;
      for (; r + kRows <= M; r += kRows) {  // the tile's codes stay in L1 from row to row
        tile_dot<Bits, kRows>(w, sc, a + r * K, K, d + r * G, da + r * G, G, G, out);
        for (int i = 0; i < kRows; ++i) {
          std::memcpy(y + (r + i) * N + 16 * t, out + 16 * i, cols * sizeof(float));
        }
      }
      for (; r < M; ++r) {
        tile_dot<Bits, 1>(w, sc, a + r * K, K, d + r * G, da + r * G, G, G, out);
        std::memcpy(y + r * N + 16 * t, out, cols * sizeof(float));
      }
    }
  });
}

}  // namespace

void quantized_products(const int8_t* a, const float* d, const float* da, int64_t M, int64_t K,
                        const uint8_t* codes, const uint16_t* scales, int64_t N, int bits,
                        float* y) {
  if (bits == 4) {
    products<4>(a, d, da, M, K, codes, scales, N, y);
  } else {
    products<8>(a, d, da, M, K, codes, scales, N, y);
  }
}

torch::Tensor int_dot_linear(const torch::Tensor& x, const torch::Tensor& codes,
                             const torch::Tensor& scales, int64_t bits, int64_t out_features) {
  TORCH_CHECK(bits == 4 || bits == 8, "int_dot_linear: bits must be 4 or 8, got ", bits);
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kFloat32 && x.device().is_cpu(),
              "int_dot_linear: x must be a 2-D float32 CPU tensor");
  TORCH_CHECK(codes.dim() == 2 && codes.scalar_type() == torch::kUInt8, "codes: 2-D uint8");
  TORCH_CHECK(scales.dim() == 4 && scales.scalar_type() == torch::kFloat16, "scales: 4-D fp16");
  const int64_t M = x.size(0), K = x.size(1), N = out_features, tiles = (N + 15) / 16;
  TORCH_CHECK(N > 0 && K % kGroup == 0, "int_dot_linear: in_features must be a multiple of ",
              kGroup, ", got ", K);
  TORCH_CHECK(codes.size(0) == tiles && codes.size(1) * 8 == 16 * K * bits, "codes: expected (",
              tiles, ", ", 16 * K * bits / 8, ") for ", N, " outputs of ", K, " inputs at ", bits,
              " bits");
  TORCH_CHECK(scales.size(0) == tiles && scales.size(1) == K / kGroup && scales.size(2) == 2 &&
                  scales.size(3) == 16,
              "scales: expected (", tiles, ", ", K / kGroup, ", 2, 16)");
  const torch::Tensor xc = x.contiguous(), wc = codes.contiguous(), sc = scales.contiguous();
  torch::Tensor y = torch::empty({M, N}, x.options());
  std::vector<int8_t> a(M * K);
  std::vector<float> d(M * K / kGroup), da(M * K / kGroup);
  quantize_activations(xc.data_ptr<float>(), M, K, a.data(), d.data(), da.data());
  quantized_products(a.data(), d.data(), da.data(), M, K, wc.data_ptr<uint8_t>(),
                     reinterpret_cast<const uint16_t*>(sc.data_ptr<at::Half>()), N,
                     static_cast<int>(bits), y.data_ptr<float>());
  return y;
}

std::string isa() {
#if defined(GW_AVX512)
  return "avx512-vnni";
#elif defined(GW_AVX2) && defined(__AVXVNNI__)
  return "avx2-vnni";
#elif defined(GW_AVX2)
  return "avx2";
#else
  return "scalar";
#endif
}

}  // namespace GW_OP_NAMESPACE

#define GW_STRINGIFY2(x) #x
#define GW_STRINGIFY(x) GW_STRINGIFY2(x)

// Also an operator of the dispatcher (torch.ops.<namespace>.int_dot_linear), which a compiled
// graph calls without going through Python; each build has its own namespace (-DGW_OP_NAMESPACE)
TORCH_LIBRARY(GW_OP_NAMESPACE, library) {
  library.def(
      "int_dot_linear(Tensor x, Tensor packed, Tensor scales, int bits, int out_features) -> "
      "Tensor");
}

TORCH_LIBRARY_IMPL(GW_OP_NAMESPACE, CPU, library) {
  library.impl("int_dot_linear", &GW_OP_NAMESPACE::int_dot_linear);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.def("int_dot_linear", &GW_OP_NAMESPACE::int_dot_linear,
             "y = x @ W.T, W 4/8-bit, x quantised to 8 bits");
  module.def("isa", &GW_OP_NAMESPACE::isa, "the instruction set this build uses");
  GW_OP_NAMESPACE::register_fused_decode(module);
  module.def("op_namespace", [] { return std::string(GW_STRINGIFY(GW_OP_NAMESPACE)); });
}
