// One decoding step of a Llama-style model whose linear layers are int_dot ones (W4A8/W8A8),
// written out in C++: what llama.cpp does on a CPU, the whole step in compiled code. The why
// and the Python side: groundwork/compress/fused_decode.py (chapter 18, "The whole step in C++").
//
// For one token (batch 1), layer by layer, the arithmetic of groundwork's LlamaBlock:
//
//     h = rms_norm(x) * w_attn          q, k, v = h Wq, h Wk, h Wv  (h quantised once for all 3)
//     q, k rotated by RoPE (the position's cos and sin, computed in Python)
//     k, v written into the layer's cache at `slot`
//     each query head: softmax(q K[0..slot]^T / sqrt(D)) V[0..slot]  (H / H_kv heads share K, V)
//     x += attention Wo
//     h = rms_norm(x) * w_mlp           x += (silu(h Wgate) * h Wup) Wdown  (h quantised once)
//
// then the final norm. Between the operations there is no Python and no dispatcher; the only
// ATen calls are softmax and silu (for their vectorised exp), three a layer.

#include <ATen/ATen.h>

#include <cmath>
#include <cstring>
#include <vector>

#include "int_dot.h"

namespace GW_OP_NAMESPACE {
namespace {

// sum_i a_i b_i
float dot(const float* a, const float* b, int64_t n) {
  int64_t i = 0;
  float sum = 0.f;
#ifdef GW_AVX2
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
  }
  for (; i + 8 <= n; i += 8) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
  }
  float lanes[8];
  _mm256_storeu_ps(lanes, _mm256_add_ps(acc0, acc1));
  for (float lane : lanes) sum += lane;
#endif
  for (; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

// out = w * (x / sqrt(mean(x^2) + eps)): groundwork.nn.RMSNorm
void rms_norm(const float* x, const float* w, int64_t n, float eps, float* out) {
  const float r = 1.f / std::sqrt(dot(x, x, n) / static_cast<float>(n) + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = w[i] * (x[i] * r);
}

// Each head's [x1, x2] -> x * cos + [-x2, x1] * sin (groundwork.nn.positions.apply_rope)
void rope(float* x, int64_t heads, int64_t D, const float* cos, const float* sin) {
  const int64_t half = D / 2;
  for (int64_t h = 0; h < heads; ++h) {
    float* v = x + h * D;
    for (int64_t i = 0; i < half; ++i) {
      const float x1 = v[i], x2 = v[i + half];
      v[i] = x1 * cos[i] - x2 * sin[i];
      v[i + half] = x2 * cos[i + half] + x1 * sin[i + half];
    }
  }
}

struct Projection {  // one IntDotLinear layer's buffers (held, so they stay alive)
  torch::Tensor packed, scales;
  int bits;
  int64_t in, K, out;  // in_features, in_features padded to 64, out_features
};

// y = x W^T with the dequantised weight W = q s + m and x in float, no 8-bit activations: the
// step's float arithmetic alone, for the tests (slow: one weight at a time, read from the tiles
// of int_dot.cpp's layout)
void float_products(const Projection& p, const float* x, float* y) {
  const int64_t G = p.K / kGroup, tile_bytes = 16 * p.K * p.bits / 8;
  const int64_t group_bytes = 16 * kGroup * p.bits / 8;
  const uint8_t* codes = p.packed.data_ptr<uint8_t>();
  const at::Half* scales = p.scales.data_ptr<at::Half>();  // (tiles, G, 2, 16)
  for (int64_t n = 0; n < p.out; ++n) {
    const int64_t t = n / 16, l = n % 16;
    float sum = 0.f;
    for (int64_t k = 0; k < p.K; ++k) {
      const int64_t g = k / kGroup, i = k % kGroup;
      const int32_t q = tile_code(codes + t * tile_bytes + g * group_bytes, p.bits, l, i);
      const at::Half* sg = scales + (t * G + g) * 32;
      sum += (static_cast<float>(q) * static_cast<float>(sg[l]) + static_cast<float>(sg[16 + l])) *
             x[k];
    }
    y[n] = sum;
  }
}

}  // namespace

class FusedLlamaStep {
 public:
  // Per layer, 2 norms then 7 projections (q, k, v, o, gate, up, down); one final norm; the
  // cache's per-layer (1, H_kv, S, D) key and value tensors, written in place
  FusedLlamaStep(std::vector<torch::Tensor> norms, const std::vector<torch::Tensor>& packed,
                 const std::vector<torch::Tensor>& scales, const std::vector<int64_t>& bits,
                 const std::vector<int64_t>& in_features,
                 const std::vector<int64_t>& out_features, std::vector<torch::Tensor> keys,
                 std::vector<torch::Tensor> values, int64_t n_heads, int64_t n_kv_heads,
                 double eps, bool float_products)
      : norms_(std::move(norms)),
        keys_(std::move(keys)),
        values_(std::move(values)),
        L_(static_cast<int64_t>(keys_.size())),
        H_(n_heads),
        Hkv_(n_kv_heads),
        eps_(static_cast<float>(eps)),
        float_products_(float_products) {
    TORCH_CHECK(L_ > 0 && values_.size() == keys_.size(), "FusedLlamaStep: one key and one value "
                "tensor a layer");
    TORCH_CHECK(static_cast<int64_t>(norms_.size()) == 2 * L_ + 1, "FusedLlamaStep: ", 2 * L_ + 1,
                " norm weights expected, got ", norms_.size());
    const auto n = static_cast<size_t>(7 * L_);
    TORCH_CHECK(packed.size() == n && scales.size() == n && bits.size() == n &&
                    in_features.size() == n && out_features.size() == n,
                "FusedLlamaStep: 7 projections a layer");
    TORCH_CHECK(H_ > 0 && Hkv_ > 0 && H_ % Hkv_ == 0, "FusedLlamaStep: n_kv_heads must divide "
                "n_heads");
    const torch::Tensor& k0 = keys_[0];
    TORCH_CHECK(k0.dim() == 4 && k0.size(0) == 1 && k0.size(1) == Hkv_,
                "FusedLlamaStep: caches of shape (1, n_kv_heads, S, D) expected");
    S_ = k0.size(2);
    D_ = k0.size(3);
    TORCH_CHECK(D_ % 2 == 0, "FusedLlamaStep: d_head must be even for RoPE");
    d_ = norms_[0].numel();
    for (const auto& t : norms_) {
      TORCH_CHECK(t.scalar_type() == torch::kFloat32 && t.is_contiguous() && t.numel() == d_,
                  "FusedLlamaStep: norm weights must be contiguous float32 of size ", d_);
    }
    for (int64_t l = 0; l < L_; ++l) {
      for (const auto* t : {&keys_[l], &values_[l]}) {
        TORCH_CHECK(t->sizes() == k0.sizes() && t->scalar_type() == torch::kFloat32 &&
                        t->is_contiguous() && t->device().is_cpu(),
                    "FusedLlamaStep: the caches must be contiguous float32 CPU tensors shaped ",
                    k0.sizes());
      }
    }
    int64_t widest = 0;
    for (size_t i = 0; i < n; ++i) {
      Projection p{packed[i].contiguous(), scales[i].contiguous(), static_cast<int>(bits[i]),
                   in_features[i], 0, out_features[i]};
      TORCH_CHECK(p.bits == 4 || p.bits == 8, "FusedLlamaStep: bits must be 4 or 8");
      TORCH_CHECK(p.packed.scalar_type() == torch::kUInt8 && p.packed.dim() == 2 &&
                      p.scales.scalar_type() == torch::kFloat16 && p.scales.dim() == 4,
                  "FusedLlamaStep: packed (tiles, bytes) uint8, scales (tiles, G, 2, 16) fp16");
      p.K = p.packed.size(1) * 8 / (16 * p.bits);
      TORCH_CHECK(p.K % kGroup == 0 && p.in <= p.K && p.packed.size(0) == (p.out + 15) / 16 &&
                      p.scales.size(0) == p.packed.size(0) && p.scales.size(1) == p.K / kGroup,
                  "FusedLlamaStep: projection ", i, " has inconsistent shapes");
      widest = std::max({widest, p.K, p.out});
      proj_.push_back(std::move(p));
    }
    F_ = proj_[4].out;
    for (int64_t l = 0; l < L_; ++l) {
      const Projection* p = &proj_[7 * l];
      const int64_t want[7][2] = {{d_, H_ * D_}, {d_, Hkv_ * D_}, {d_, Hkv_ * D_}, {H_ * D_, d_},
                                  {d_, F_},      {d_, F_},        {F_, d_}};
      for (int j = 0; j < 7; ++j) {
        TORCH_CHECK(p[j].in == want[j][0] && p[j].out == want[j][1], "FusedLlamaStep: layer ", l,
                    " projection ", j, " maps ", p[j].in, " -> ", p[j].out, ", expected ",
                    want[j][0], " -> ", want[j][1]);
      }
    }
    x_.assign(d_, 0.f);
    h_.assign(widest, 0.f);
    input_.assign(widest, 0.f);
    codes_.assign(widest, 0);
    d_scales_.assign(widest / kGroup + 1, 0.f);
    d_sums_.assign(widest / kGroup + 1, 0.f);
    q_.assign(H_ * D_, 0.f);
    k_.assign(Hkv_ * D_, 0.f);
    v_.assign(Hkv_ * D_, 0.f);
    gate_ = torch::zeros({F_});
    up_ = torch::zeros({F_});
    scores_ = torch::zeros({H_ * S_});
  }

  // x (d,) the token's embedding, cos and sin (D,) of its position; its key and value go to
  // `slot`, and it attends to slots 0..slot. Returns the final hidden state (d,), normalised.
  torch::Tensor step(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                     int64_t slot) {
    TORCH_CHECK(x.scalar_type() == torch::kFloat32 && x.numel() == d_,
                "FusedLlamaStep.step: x must be float32 with ", d_, " values");
    TORCH_CHECK(cos.scalar_type() == torch::kFloat32 && sin.scalar_type() == torch::kFloat32 &&
                    cos.numel() == D_ && sin.numel() == D_,
                "FusedLlamaStep.step: cos and sin must be float32 with ", D_, " values");
    TORCH_CHECK(0 <= slot && slot < S_, "FusedLlamaStep.step: slot ", slot,
                " is outside the cache's ", S_, " positions");
    const torch::Tensor xc = x.contiguous(), cc = cos.contiguous(), sc = sin.contiguous();
    std::memcpy(x_.data(), xc.data_ptr<float>(), d_ * sizeof(float));
    const float* c = cc.data_ptr<float>();
    const float* s = sc.data_ptr<float>();
    for (int64_t l = 0; l < L_; ++l) {
      const Projection* p = &proj_[7 * l];
      // attention
      rms_norm(x_.data(), norms_[2 * l].data_ptr<float>(), d_, eps_, h_.data());
      quantize_input(h_.data(), p[0]);  // q, k and v share their input's quantisation
      products(p[0], q_.data());
      products(p[1], k_.data());
      products(p[2], v_.data());
      rope(q_.data(), H_, D_, c, s);
      rope(k_.data(), Hkv_, D_, c, s);
      attend(l, slot, h_.data());  // (H * D)
      quantize_input(h_.data(), p[3]);
      add_products(p[3]);
      // MLP
      rms_norm(x_.data(), norms_[2 * l + 1].data_ptr<float>(), d_, eps_, h_.data());
      quantize_input(h_.data(), p[4]);  // gate and up share it
      products(p[4], gate_.data_ptr<float>());
      products(p[5], up_.data_ptr<float>());
      at::silu_(gate_);
      gate_.mul_(up_);
      quantize_input(gate_.data_ptr<float>(), p[6]);
      add_products(p[6]);
    }
    torch::Tensor out = torch::empty({d_});
    rms_norm(x_.data(), norms_[2 * L_].data_ptr<float>(), d_, eps_, out.data_ptr<float>());
    return out;
  }

 private:
  // The activation codes of x (p.in values, zero-padded to p.K) for p's products
  void quantize_input(const float* x, const Projection& p) {
    std::memcpy(input_.data(), x, p.in * sizeof(float));
    std::fill(input_.begin() + p.in, input_.begin() + p.K, 0.f);
    if (float_products_) return;
    quantize_activations(input_.data(), 1, p.K, codes_.data(), d_scales_.data(), d_sums_.data());
  }

  // y (p.out) = the quantised input times p's weight
  void products(const Projection& p, float* y) {
    if (float_products_) return float_products(p, input_.data(), y);
    quantized_products(codes_.data(), d_scales_.data(), d_sums_.data(), 1, p.K,
                       p.packed.data_ptr<uint8_t>(),
                       reinterpret_cast<const uint16_t*>(p.scales.data_ptr<at::Half>()), p.out,
                       p.bits, y);
  }

  // The residual stream += the quantised input times p's weight
  void add_products(const Projection& p) {
    products(p, h_.data());
    for (int64_t i = 0; i < d_; ++i) x_[i] += h_[i];
  }

  // Write k_, v_ at `slot` of layer l's cache; out (H * D) = each query head's attention over
  // slots 0..slot
  void attend(int64_t l, int64_t slot, float* out) {
    float* keys = keys_[l].data_ptr<float>();  // (H_kv, S, D)
    float* values = values_[l].data_ptr<float>();
    for (int64_t j = 0; j < Hkv_; ++j) {
      std::memcpy(keys + (j * S_ + slot) * D_, &k_[j * D_], D_ * sizeof(float));
      std::memcpy(values + (j * S_ + slot) * D_, &v_[j * D_], D_ * sizeof(float));
    }
    const int64_t T = slot + 1, group = H_ / Hkv_;
    const float scale = 1.f / std::sqrt(static_cast<float>(D_));
    float* scores = scores_.data_ptr<float>();  // (H, T) in the first H * T values
    for (int64_t h = 0; h < H_; ++h) {
      const float* kh = keys + (h / group) * S_ * D_;
      for (int64_t t = 0; t < T; ++t) scores[h * T + t] = dot(&q_[h * D_], kh + t * D_, D_) * scale;
    }
    const torch::Tensor weights = at::softmax(scores_.narrow(0, 0, H_ * T).view({H_, T}), 1);
    const float* w = weights.data_ptr<float>();
    for (int64_t h = 0; h < H_; ++h) {
      const float* vh = values + (h / group) * S_ * D_;
      float* y = out + h * D_;
      std::fill(y, y + D_, 0.f);
      for (int64_t t = 0; t < T; ++t) {
        const float wt = w[h * T + t];
        const float* v = vh + t * D_;
        for (int64_t i = 0; i < D_; ++i) y[i] += wt * v[i];
      }
    }
  }

  std::vector<torch::Tensor> norms_, keys_, values_;
  std::vector<Projection> proj_;
  int64_t L_, H_, Hkv_, S_ = 0, D_ = 0, d_ = 0, F_ = 0;
  float eps_;
  bool float_products_;
  std::vector<float> x_, h_, input_, d_scales_, d_sums_, q_, k_, v_;
  std::vector<int8_t> codes_;
  torch::Tensor gate_, up_, scores_;
};

void register_fused_decode(pybind11::module& module) {
  pybind11::class_<FusedLlamaStep>(module, "FusedLlamaStep")
      .def(pybind11::init<std::vector<torch::Tensor>, const std::vector<torch::Tensor>&,
                          const std::vector<torch::Tensor>&, const std::vector<int64_t>&,
                          const std::vector<int64_t>&, const std::vector<int64_t>&,
                          std::vector<torch::Tensor>,
                          std::vector<torch::Tensor>, int64_t, int64_t, double, bool>())
      .def("step", &FusedLlamaStep::step, pybind11::call_guard<pybind11::gil_scoped_release>(),
           "one token's decoding step: its final hidden state");
}

}  // namespace GW_OP_NAMESPACE
