// Integer dot-product linear layer for CPU decoding: 4- or 8-bit weights times 8-bit activations.
// The algorithm and its Python side: groundwork/compress/int_dot.py (chapter 18, "Fast CPU
// decoding"); the same arithmetic, written with PyTorch operations, is int_dot_reference there.
//
// Weights: groups of 32 consecutive inputs of a row share a scale s and an offset m (fp16), the
// codes q are unsigned (0..15 or 0..255) and w = q * s + m. Two groups make a 64-weight block; at
// 4 bits its 32 bytes hold group 2i in their low nibbles and group 2i+1 in their high ones, so the
// two masks of one load give the codes of two whole groups, in input order.
// Activations: each group of 32 inputs of a row becomes int8 codes a with a scale d = max|x| / 127,
// x = a * d. Then for one output
//
//     y = sum_g s_g d_g (sum_i q_i a_i) + sum_g m_g (d_g sum_i a_i)
//
// the inner sum is exact integer arithmetic on unsigned-times-signed bytes (the VNNI instruction
// vpdpbusd, or vpmaddubsw + vpmaddwd on plain AVX2); only one float multiply-add per group.

#include "int_dot.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace GW_OP_NAMESPACE {
namespace {

float half_to_float(uint16_t h) {
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

// The per-group factors of one output: comb_g = s_g * d_g; returns sum_g m_g * (d_g sum a)
float group_factors(const uint16_t* s, const uint16_t* m, const float* d, const float* da,
                    int64_t G, float* comb) {
  float offset = 0.f;
  int64_t g = 0;
#ifdef GW_AVX2
  __m256 acc = _mm256_setzero_ps();
  for (; g + 8 <= G; g += 8) {
    const __m256 s8 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + g)));
    const __m256 m8 = _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(m + g)));
    _mm256_storeu_ps(comb + g, _mm256_mul_ps(s8, _mm256_loadu_ps(d + g)));
    acc = _mm256_fmadd_ps(m8, _mm256_loadu_ps(da + g), acc);
  }
  float lanes[8];
  _mm256_storeu_ps(lanes, acc);
  for (float lane : lanes) offset += lane;
#endif
  for (; g < G; ++g) {
    comb[g] = half_to_float(s[g]) * d[g];
    offset += half_to_float(m[g]) * da[g];
  }
  return offset;
}

#if defined(GW_AVX512)
// The 64 codes of a block, one byte each: group 2i in the low 256 bits, group 2i+1 in the high.
template <int Bits>
inline __m512i block_codes(const uint8_t* w) {
  if constexpr (Bits == 4) {
    const __m256i nibble = _mm256_set1_epi8(0x0F);
    const __m256i packed = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w));
    const __m256i low = _mm256_and_si256(packed, nibble);
    const __m256i high = _mm256_and_si256(_mm256_srli_epi16(packed, 4), nibble);
    return _mm512_inserti64x4(_mm512_castsi256_si512(low), high, 1);
  } else {
    return _mm512_loadu_si512(w);
  }
}

// --8<-- [start:block_dot]
// For R activation rows at once (each weight block is loaded and unpacked once):
// out[r] = sum_g comb[r][g] * (sum_i q_i a[r]_i) over G groups (G even); rows lda bytes apart,
// factors ldc floats apart
template <int Bits, int R>
void block_dot(const uint8_t* w, const int8_t* a, int64_t lda, const float* comb, int64_t ldc,
               int64_t G, float* out) {
  constexpr int64_t kBlockBytes = 2 * kGroup * Bits / 8;
  // lanes 0-7 take comb[g], lanes 8-15 comb[g + 1]: the two groups of a block
  const __m512i halves = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  auto step = [&](int64_t g, __m512 (&acc)[R]) {
    const __m512i q = block_codes<Bits>(w + (g / 2) * kBlockBytes);
    for (int r = 0; r < R; ++r) {
      double pair;  // comb[r][g], comb[r][g + 1]
      std::memcpy(&pair, comb + r * ldc + g, sizeof(pair));
      const __m512 f =
          _mm512_permutexvar_ps(halves, _mm512_castps128_ps512(_mm_castpd_ps(_mm_set_sd(pair))));
      const __m512i p = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q,
                                            _mm512_loadu_si512(a + r * lda + g * kGroup));
      acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(p), f, acc[r]);  // 8 lanes a group
    }
  };
  __m512 even[R], odd[R];  // two chains a row, for the latency of the multiply-add
  for (int r = 0; r < R; ++r) even[r] = odd[r] = _mm512_setzero_ps();
  int64_t g = 0;
  for (; g + 4 <= G; g += 4) {
    step(g, even);
    step(g + 2, odd);
  }
  if (g < G) step(g, even);
  for (int r = 0; r < R; ++r) out[r] = _mm512_reduce_add_ps(_mm512_add_ps(even[r], odd[r]));
}
// --8<-- [end:block_dot]

#elif defined(GW_AVX2)
template <int Bits>
inline __m256i group_codes(const uint8_t* block, int half) {  // group 2i (half 0) or 2i+1
  if constexpr (Bits == 4) {
    const __m256i packed = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block));
    const __m256i shifted = half ? _mm256_srli_epi16(packed, 4) : packed;
    return _mm256_and_si256(shifted, _mm256_set1_epi8(0x0F));
  } else {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + half * kGroup));
  }
}

template <int Bits>
inline __m256i dot_u8_s8(__m256i u, __m256i s) {  // 8 int32 sums of 4 products each
#if defined(__AVXVNNI__)
  return _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, s);
#else
  if constexpr (Bits == 4) {  // pairs of 15 * 127 fit the int16 that vpmaddubsw adds them in
    return _mm256_madd_epi16(_mm256_maddubs_epi16(u, s), _mm256_set1_epi16(1));
  } else {  // 255 * 127 * 2 would not: widen both to int16 first
    const __m256i u0 = _mm256_cvtepu8_epi16(_mm256_castsi256_si128(u));
    const __m256i u1 = _mm256_cvtepu8_epi16(_mm256_extracti128_si256(u, 1));
    const __m256i s0 = _mm256_cvtepi8_epi16(_mm256_castsi256_si128(s));
    const __m256i s1 = _mm256_cvtepi8_epi16(_mm256_extracti128_si256(s, 1));
    return _mm256_add_epi32(_mm256_madd_epi16(u0, s0), _mm256_madd_epi16(u1, s1));
  }
#endif
}

template <int Bits, int R>
void block_dot(const uint8_t* w, const int8_t* a, int64_t lda, const float* comb, int64_t ldc,
               int64_t G, float* out) {
  constexpr int64_t kBlockBytes = 2 * kGroup * Bits / 8;
  auto step = [&](int64_t g, int half, __m256 (&acc)[R]) {  // group g + half of block g / 2
    const __m256i q = group_codes<Bits>(w + (g / 2) * kBlockBytes, half);
    for (int r = 0; r < R; ++r) {
      const int8_t* ar = a + r * lda + (g + half) * kGroup;
      const __m256i p = dot_u8_s8<Bits>(q, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ar)));
      acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_broadcast_ss(comb + r * ldc + g + half),
                               acc[r]);
    }
  };
  __m256 even[R], odd[R];
  for (int r = 0; r < R; ++r) even[r] = odd[r] = _mm256_setzero_ps();
  for (int64_t g = 0; g < G; g += 2) {
    step(g, 0, even);
    step(g, 1, odd);
  }
  for (int r = 0; r < R; ++r) {
    float lanes[8];
    _mm256_storeu_ps(lanes, _mm256_add_ps(even[r], odd[r]));
    out[r] = 0.f;
    for (float lane : lanes) out[r] += lane;
  }
}

#else
template <int Bits, int R>
void block_dot(const uint8_t* w, const int8_t* a, int64_t lda, const float* comb, int64_t ldc,
               int64_t G, float* out) {
  constexpr int64_t kBlockBytes = 2 * kGroup * Bits / 8;
  for (int r = 0; r < R; ++r) {
    out[r] = 0.f;
    for (int64_t g = 0; g < G; ++g) {
      const uint8_t* block = w + (g / 2) * kBlockBytes;
      const int half = static_cast<int>(g % 2);
      int32_t dot = 0;
      for (int64_t i = 0; i < kGroup; ++i) {
        const int32_t q = Bits == 4 ? (block[i] >> (4 * half)) & 0x0F : block[half * kGroup + i];
        dot += q * a[r * lda + g * kGroup + i];
      }
      out[r] += comb[r * ldc + g] * static_cast<float>(dot);
    }
  }
}
#endif

template <int Bits>
void products(const int8_t* a, const float* d, const float* da, int64_t M, int64_t K,
              const uint8_t* codes, const uint16_t* scales, int64_t N, float* y) {
  constexpr int kRows = 4;  // activation rows sharing each unpacked weight block (prefill)
  const int64_t G = K / kGroup;
  const int64_t row_bytes = K * Bits / 8;
  // each task takes whole rows of the weight: 64 rows of SmolLM2-135M's 576 inputs are 20 KB
  at::parallel_for(0, N, 64, [&](int64_t begin, int64_t end) {
    std::vector<float> comb(kRows * G);
    float offset[kRows], dot[kRows];
    for (int64_t n = begin; n < end; ++n) {
      const uint16_t* s = scales + n * 2 * G;  // (2, G): scales, then offsets
      const uint8_t* w = codes + n * row_bytes;
      int64_t r = 0;
      for (; r + kRows <= M; r += kRows) {
        for (int i = 0; i < kRows; ++i) {
          const int64_t row = r + i;
          offset[i] = group_factors(s, s + G, &d[row * G], &da[row * G], G, &comb[i * G]);
        }
        block_dot<Bits, kRows>(w, &a[r * K], K, comb.data(), G, G, dot);
        for (int i = 0; i < kRows; ++i) y[(r + i) * N + n] = dot[i] + offset[i];
      }
      for (; r < M; ++r) {
        offset[0] = group_factors(s, s + G, &d[r * G], &da[r * G], G, comb.data());
        block_dot<Bits, 1>(w, &a[r * K], K, comb.data(), G, G, dot);
        y[r * N + n] = dot[0] + offset[0];
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
                             const torch::Tensor& scales, int64_t bits) {
  TORCH_CHECK(bits == 4 || bits == 8, "int_dot_linear: bits must be 4 or 8, got ", bits);
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kFloat32 && x.device().is_cpu(),
              "int_dot_linear: x must be a 2-D float32 CPU tensor");
  TORCH_CHECK(codes.dim() == 2 && codes.scalar_type() == torch::kUInt8, "codes: 2-D uint8");
  TORCH_CHECK(scales.dim() == 3 && scales.scalar_type() == torch::kFloat16, "scales: 3-D fp16");
  const int64_t M = x.size(0), K = x.size(1), N = codes.size(0);
  TORCH_CHECK(K % (2 * kGroup) == 0, "int_dot_linear: in_features must be a multiple of 64, got ",
              K);
  TORCH_CHECK(codes.size(1) * 8 == K * bits, "codes: ", codes.size(1), " bytes a row for ", K,
              " inputs at ", bits, " bits");
  TORCH_CHECK(scales.size(0) == N && scales.size(1) == 2 && scales.size(2) == K / kGroup,
              "scales: expected (", N, ", 2, ", K / kGroup, ")");
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
  library.def("int_dot_linear(Tensor x, Tensor packed, Tensor scales, int bits) -> Tensor");
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
