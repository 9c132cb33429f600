// Shared by the two halves of the int_dot extension: int_dot.cpp (the integer dot-product
// kernel of a linear layer) and fused_decode.cpp (a whole Llama decoding step built on it).
// Python side: groundwork/compress/int_dot.py and fused_decode.py (chapter 18).
#pragma once

#include <torch/extension.h>

#include <cstdint>
#include <string>

#if defined(__x86_64__) && defined(__AVX2__) && defined(__F16C__) && defined(__FMA__)
#include <immintrin.h>
#define GW_AVX2 1
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#define GW_AVX512 1
#endif
#endif

// Each build (one per CPU kind and flag set) gets a namespace of its own (-DGW_OP_NAMESPACE),
// for its functions and for its dispatcher operators, so several builds can share a process
#ifndef GW_OP_NAMESPACE
#define GW_OP_NAMESPACE groundwork_int_dot
#endif

namespace GW_OP_NAMESPACE {

constexpr int64_t kGroup = 32;  // inputs per scale, of weights and activations alike

// The code of row l (0..15) of a tile for input i (0..31) of a group, whose bytes start at wg
// (int_dot.cpp's layout: quads of 4 inputs, 16 rows a 64-byte chunk; at 4 bits inputs i and
// 16 + i share a byte)
inline int32_t tile_code(const uint8_t* wg, int bits, int64_t l, int64_t i) {
  if (bits == 4) {
    const uint8_t byte = wg[64 * ((i % 16) / 4) + 4 * l + i % 4];
    return i < 16 ? byte & 0x0F : byte >> 4;
  }
  return wg[64 * (i / 4) + 4 * l + i % 4];
}

// x (M, K) float -> codes a (M, K) int8, scales d (M, K/32), d * sum(a) (M, K/32)
void quantize_activations(const float* x, int64_t M, int64_t K, int8_t* a, float* d, float* da);

// y (M, N) = quantised activations (from quantize_activations) times N weight rows of K inputs
// (K a multiple of 32) at `bits` bits, packed in tiles of 16 rows (int_dot.cpp's layout):
// codes (ceil(N/16), 16 K bits/8) bytes, scales (ceil(N/16), K/32, 2, 16) fp16 bits
void quantized_products(const int8_t* a, const float* d, const float* da, int64_t M, int64_t K,
                        const uint8_t* codes, const uint16_t* scales, int64_t N, int bits,
                        float* y);

// x (M, K) @ W.T (M, out_features) for a packed W: quantises x, then quantized_products
torch::Tensor int_dot_linear(const torch::Tensor& x, const torch::Tensor& codes,
                             const torch::Tensor& scales, int64_t bits, int64_t out_features);

std::string isa();

// Adds the FusedLlamaStep class to the Python module (fused_decode.cpp)
void register_fused_decode(pybind11::module& module);

}  // namespace GW_OP_NAMESPACE
