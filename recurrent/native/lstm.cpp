// The LSTM layer's whole time loop, forward and backward, for the `bptt` backend (see lstm.py).
//
// Key: T time, B batch, H hidden, G = 4H pre-activations in torch.nn's gate order [i f g o].
// S is the dtype of the states and the pointwise steps (float or double); P the dtype of the
// products (bfloat16 under autocast, otherwise S). Per step, one product and one fused pointwise loop:
//
//   forward   gh = h_{t-1} Wᵀ                                    (B, G)   oneDNN, W packed once
//             i, f, g, o = σ, σ, tanh, σ (gx_t + gh + b)             gx_t = U x_t; b = b_ih + b_hh
//             c_t = f c_{t-1} + i g,  h_t = o tanh(c_t)
//   backward  dc = dc_t + dh o (1 - tanh²(c_t))                   dh = dh_out_t + dG_{t+1} W
//             dG_t = [dc g i(1-i); dc c_{t-1} f(1-f); dc i (1-g²); dh tanh(c_t) o(1-o)]
//             dc_{t-1} = dc f
//   after it  dW = Σ_t dG_tᵀ h_{t-1} (one product), db = Σ_t Σ_b dG_t
//
// At the end: a whole language-model step for generation (lm_step, wrapped by step.py), on weights packed
// for matrix-vector products (gemv_pack).
//
// Built per instruction set (recurrent/hardware.py COMPILE_FLAGS, never -march=native): the matrix-vector
// products have AVX-512 (and AVX512-BF16) and AVX2+FMA paths, chosen by the compiler's macros, and a portable
// loop for the rest (aarch64 included, where g++ vectorises it with NEON). The pointwise loops are written for
// g++ to vectorise under any of those flags. Nothing x86-only may appear outside an #if on its macro.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <thread>
#include <tuple>
#include <type_traits>
#include <vector>

#include <pthread.h>
#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "common.h"  // what lstm.cpp and gru.cpp share: exp_, load/store, Product, pooled_empty, over_rows

namespace {

using at::Tensor;
using namespace recurrent_native;

// --- one step's pointwise part, over every (b, j) ---------------------------------------------------

template <typename S, typename Q>  // Q: how the product dtype is stored (Bits<P>)
void forward_step(const Q* __restrict__ gx, const Q* __restrict__ gh, const S* __restrict__ bias,
                  const S* __restrict__ c_prev, S* __restrict__ act, S* __restrict__ c, S* __restrict__ h,
                  Q* __restrict__ h_low, int64_t b0, int64_t b1, int64_t H) {  // rows b0 .. b1-1
  const int64_t G = 4 * H;
  for (int64_t b = b0; b < b1; ++b) {
    const Q *x = gx + b * G, *r = gh + b * G;
    S* a = act + b * G;
    const int64_t o = b * H;
#pragma GCC ivdep  // the four gate blocks never overlap
    for (int64_t j = 0; j < H; ++j) {
      S i = sigmoid<S>(load(x[j]) + load(r[j]) + bias[j]);
      S f = sigmoid<S>(load(x[H + j]) + load(r[H + j]) + bias[H + j]);
      S g = tanh_<S>(load(x[2 * H + j]) + load(r[2 * H + j]) + bias[2 * H + j]);
      S og = sigmoid<S>(load(x[3 * H + j]) + load(r[3 * H + j]) + bias[3 * H + j]);
      S cn = f * c_prev[o + j] + i * g;
      S t = tanh_<S>(cn);
      a[j] = i, a[H + j] = f, a[2 * H + j] = g, a[3 * H + j] = og;
      c[o + j] = cn, h[o + j] = og * t;
      if constexpr (!std::is_same_v<S, Q>) h_low[o + j] = store<Q>(og * t);
    }
  }
}

template <typename S, typename Q>  // Q: how the product dtype is stored (Bits<P>)
void backward_step(const S* __restrict__ dh_out, const S* __restrict__ dc_out, const Q* __restrict__ dh_rec,
                   const S* __restrict__ act, const S* __restrict__ c_prev, const S* __restrict__ c,
                   S* __restrict__ dc_carry, Q* __restrict__ dG, S* __restrict__ db, int64_t b0, int64_t b1,
                   int64_t H) {  // rows b0 .. b1-1; db: this thread's own sum
  const int64_t G = 4 * H;
  for (int64_t b = b0; b < b1; ++b) {
    const S* a = act + b * G;
    Q* d = dG + b * G;
    const int64_t o = b * H;
#pragma GCC ivdep  // the four gate blocks never overlap
    for (int64_t j = 0; j < H; ++j) {
      S i = a[j], f = a[H + j], g = a[2 * H + j], og = a[3 * H + j];
      S t = tanh_<S>(c[o + j]);  // recomputed: cheaper than saving it
      S dh = dh_out[o + j] + load(dh_rec[o + j]);
      S dc = dc_carry[o + j] + dc_out[o + j] + dh * og * (S(1) - t * t);
      S di = dc * g * i * (S(1) - i), df = dc * c_prev[o + j] * f * (S(1) - f);
      S dg = dc * i * (S(1) - g * g), dog = dh * t * og * (S(1) - og);
      dc_carry[o + j] = dc * f;
      d[j] = store<Q>(di), d[H + j] = store<Q>(df), d[2 * H + j] = store<Q>(dg), d[3 * H + j] = store<Q>(dog);
      db[j] += di, db[H + j] += df, db[2 * H + j] += dg, db[3 * H + j] += dog;
    }
  }
}

// --- the loops ---------------------------------------------------------------------------------------

void check(const Tensor& gx, const Tensor& W, const Tensor& h0) {
  TORCH_CHECK(gx.dim() == 3 && W.dim() == 2 && W.size(0) == gx.size(2) && W.size(0) == 4 * W.size(1),
              "lstm_loop: gx must be (T, B, 4H) and W (4H, H), got ", gx.sizes(), " and ", W.sizes());
  TORCH_CHECK(gx.scalar_type() == W.scalar_type(), "lstm_loop: gx and W must share a dtype, got ",
              gx.scalar_type(), " and ", W.scalar_type());
  TORCH_CHECK(h0.scalar_type() == W.scalar_type() ||
                  (h0.scalar_type() == at::kFloat && W.scalar_type() == at::kBFloat16),
              "lstm_loop: states ", h0.scalar_type(), " with products in ", W.scalar_type(), " are not supported");
}

// gx (T, B, G) in P, W (G, H) in P, bias (G,), h0, c0 (B, H) in S
// -> h (T+1, B, H), c (T+1, B, H) in S, h_low (T+1, B, H) in P (h itself if P == S), act: T gate activations (B, G)
// in S, each a view of one pooled buffer (common.h)
template <typename S, typename P>
std::tuple<Tensor, Tensor, Tensor, std::vector<Tensor>> forward_loop(const Tensor& gx, const Tensor& W,
                                                                     const Tensor& bias, const Tensor& h0,
                                                                     const Tensor& c0, bool onednn) {
  using Q = typename Bits<P>::type;
  const int64_t H = W.size(1);
  const S* b = bias.data_ptr<S>();
  return hc_forward_loop<S, P>(gx, W, h0, c0, 4 * H, onednn,
                               [&](const Q* x, const Q* r, const S* cp, S* a, S* cn, S* hn, Q* hl, int64_t b0,
                                   int64_t b1) { forward_step<S, Q>(x, r, b, cp, a, cn, hn, hl, b0, b1, H); });
}

// dh, dc (T, B, H): gradients from outside at every step -> dgx (T, B, G) in P, dW (G, H) in P, db (G,) in S,
// dh0, dc0 (B, H) in S
template <typename S, typename P>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> backward_loop(const Tensor& dh, const Tensor& dc, const Tensor& W,
                                                                const Tensor& c, const Tensor& h_low,
                                                                at::TensorList act, bool onednn) {
  const int64_t T = dh.size(0), B = dh.size(1), H = W.size(1);
  auto opt = c.options();
  Tensor dG = pooled_empty({T, B, 4 * H}, W.options());
  Tensor acc = at::zeros({at::get_num_threads(), 4 * H}, opt);  // db, one sum per thread (over_rows)
  Tensor dc_carry = at::zeros({B, H}, opt);
  S* const accs = acc.data_ptr<S>();
  Tensor dh_rec = at::zeros({B, H}, W.options());  // dG_{t+1} W: nothing after the last step
  using Q = typename Bits<P>::type;
  Product back(W.t(), B, onednn);
  for (int64_t t = T - 1; t >= 0; --t) {
    const S *dho = dh[t].data_ptr<S>(), *dco = dc[t].data_ptr<S>(), *a = act[t].data_ptr<S>();
    const S *cp = c[t].data_ptr<S>(), *cn = c[t + 1].data_ptr<S>();
    const Q* dr = bits<P>(dh_rec);
    Q* d = bits<P>(dG[t]);
    over_rows(B, 4 * H, [&](int64_t b0, int64_t b1, int thread) {
      backward_step<S, Q>(dho, dco, dr, a, cp, cn, dc_carry.data_ptr<S>(), d, accs + thread * 4 * H, b0, b1, H);
    });
    dh_rec = back(dG[t]).contiguous();  // (B, H)
  }
  Tensor dW = at::mm(dG.view({T * B, 4 * H}).t(), h_low.narrow(0, 0, T).reshape({T * B, H}));  // (G, H)
  return {dG, dW, acc.sum(0), dh_rec.to(c.scalar_type()), dc_carry};
}

// onednn: whether the products may use oneDNN (recurrent.kernels.uses_onednn, decided in lstm.py)
std::tuple<Tensor, Tensor, Tensor, std::vector<Tensor>> lstm_forward(const Tensor& gx, const Tensor& W,
                                                                     const Tensor& bias, const Tensor& h0,
                                                                     const Tensor& c0, bool onednn) {
  check(gx, W, h0);
  Tensor x = gx.contiguous(), b = bias.contiguous(), h = h0.contiguous(), c = c0.contiguous();
  if (h0.scalar_type() == at::kDouble) return forward_loop<double, double>(x, W, b, h, c, onednn);
  if (W.scalar_type() == at::kBFloat16) return forward_loop<float, c10::BFloat16>(x, W, b, h, c, onednn);
  return forward_loop<float, float>(x, W, b, h, c, onednn);
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> lstm_backward(const Tensor& dh, const Tensor& dc, const Tensor& W,
                                                                const Tensor& c, const Tensor& h_low,
                                                                at::TensorList act, bool onednn) {
  Tensor dh_ = dh.contiguous(), dc_ = dc.contiguous();
  if (c.scalar_type() == at::kDouble) return backward_loop<double, double>(dh_, dc_, W, c, h_low, act, onednn);
  if (W.scalar_type() == at::kBFloat16)
    return backward_loop<float, c10::BFloat16>(dh_, dc_, W, c, h_low, act, onednn);
  return backward_loop<float, float>(dh_, dc_, W, c, h_low, act, onednn);
}


// --- generation: a whole LM step for batch 1 (a few rows), used by the Stepper (see step.py) -----------
//
// At batch 1 a product is a matrix-vector product (GEMV) whose cost is reading the weights once; oneDNN's
// GEMM machinery and the dozen torch calls around it cost more than that here. So the step runs on
// weights packed for a GEMV: 16 outputs side by side, K running down,
//   float32   P[n/16][k][16]                  y[n..n+16) += P[n/16][k] * x[k]
//   bfloat16  P[n/16][k/2][16][2]              y[n..n+16) += P[n/16][k/2] · (x[k], x[k+1])  (vdpbf16ps)
// read as one stream from start to end. N and K are padded (zeros) to multiples of 16 and 2. Each path (AVX-512,
// AVX2+FMA, portable) reads the same layout; they differ only in the order of the float32 sums.

constexpr int64_t LANES = 16;

#if defined(__AVX512F__)
// y[0, n) = bias[0, n) + the sum of eight accumulators (eight chains of products: the FMA's latency)
inline void finish(const __m512* a, const float* bias, float* y, int64_t n) {
  __m512 acc = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3])),
                             _mm512_add_ps(_mm512_add_ps(a[4], a[5]), _mm512_add_ps(a[6], a[7])));
  const __mmask16 m = __mmask16((1u << n) - 1);
  _mm512_mask_storeu_ps(y, m, _mm512_add_ps(acc, _mm512_maskz_loadu_ps(m, bias)));
}
#endif

#if defined(__AVX2__) && defined(__FMA__)  // AVX-512 builds too: their bfloat16 product without AVX512-BF16
// y[0, n) = bias[0, n) + the sum of four chains of accumulators, each a 16-output block as two halves: a[2u]
// holds outputs 0-7 of chain u, a[2u + 1] outputs 8-15. Four chains of two FMAs keep eight in flight, enough
// for the FMA's latency (about 4 cycles, two started a cycle).
inline void finish(const __m256* a, const float* bias, float* y, int64_t n) {
  const __m256 lo = _mm256_add_ps(_mm256_add_ps(a[0], a[2]), _mm256_add_ps(a[4], a[6]));
  const __m256 hi = _mm256_add_ps(_mm256_add_ps(a[1], a[3]), _mm256_add_ps(a[5], a[7]));
  if (n == LANES) {
    _mm256_storeu_ps(y, _mm256_add_ps(lo, _mm256_loadu_ps(bias)));
    _mm256_storeu_ps(y + 8, _mm256_add_ps(hi, _mm256_loadu_ps(bias + 8)));
    return;
  }
  alignas(32) float sums[LANES];  // the last block of a size that is no multiple of 16: bias and y end at n
  _mm256_store_ps(sums, lo), _mm256_store_ps(sums + 8, hi);
  for (int64_t l = 0; l < n; ++l) y[l] = sums[l] + bias[l];
}

// a bfloat16 pair per 32-bit lane -> the two halves as float32: the low one (shifted up) and the high one (its
// low 16 bits cleared), since a bfloat16 is the top half of a float32. Each lane keeps its output's place.
inline __m256 low_half(__m256i pairs) { return _mm256_castsi256_ps(_mm256_slli_epi32(pairs, 16)); }
inline __m256 high_half(__m256i pairs) {
  return _mm256_castsi256_ps(_mm256_and_si256(pairs, _mm256_set1_epi32(int(0xFFFF0000u))));
}
#endif

// W = [W_1 ... W_m] (N, K), given as its column blocks W_i (N, K_i), float32 -> the packed layout above, in
// `dtype` (float32 or bfloat16); one pass, as a Stepper is built for each generate call that changes the dtype
Tensor gemv_pack(at::TensorList parts, at::ScalarType dtype) {
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16, "gemv_pack: dtype must be float32 or bfloat16");
  const int64_t N = parts.at(0).size(0);
  int64_t K = 0;
  for (const Tensor& W : parts) {
    TORCH_CHECK(W.dim() == 2 && W.size(0) == N && W.scalar_type() == at::kFloat,
                "gemv_pack: every part must be float32 (N, K_i) with N = ", N, ", got ", W.sizes());
    K += W.size(1);
  }
  const int64_t NB = (N + LANES - 1) / LANES, Kp = K + K % 2;
  const bool bf16 = dtype == at::kBFloat16;
  Tensor P = bf16 ? at::zeros({NB, Kp / 2, LANES, 2}, parts[0].options().dtype(at::kBFloat16))
                  : at::zeros({NB, Kp, LANES}, parts[0].options());
  float* pf = bf16 ? nullptr : P.data_ptr<float>();
  uint16_t* pb = bf16 ? bits<c10::BFloat16>(P) : nullptr;
  int64_t k0 = 0;
  for (const Tensor& part : parts) {
    const Tensor W = part.contiguous();
    const float* w = W.data_ptr<float>();
    const int64_t Ki = W.size(1);
    for (int64_t n = 0; n < N; ++n) {  // a row at a time: reads in sequence, writes within one block (L2)
      const int64_t nb = n / LANES, l = n % LANES;
      const float* row = w + n * Ki;
      if (bf16) {
        uint16_t* out = pb + nb * Kp * LANES + l * 2;
        for (int64_t k = k0; k < k0 + Ki; ++k) out[(k / 2) * 2 * LANES + k % 2] = store<uint16_t>(row[k - k0]);
      } else {
        float* out = pf + nb * Kp * LANES + l;
        for (int64_t k = k0; k < k0 + Ki; ++k) out[k * LANES] = row[k - k0];
      }
    }
    k0 += Ki;
  }
  return P;
}

#if defined(__AVX512F__)
// One 16-output block for R rows at once: each weight load feeds R rows' FMAs, so a batch reads the block from
// cache B/R times, not B times. Each row keeps its own eight chains (k mod 8) and finish()'s sum, so a row's
// outputs are bit for bit those of one row alone: a request's tokens do not depend on the batch it is in. R = 3:
// 24 accumulators, with the weights and a broadcast, fit in the 32 registers. Op: the products' types (below).
template <typename Op, int R>
inline void rows(const typename Op::W* p, const typename Op::X* x, int64_t K, const float* bias, float* y,
                 int64_t ldy, int64_t n) {
  __m512 a[R][8];
#pragma GCC unroll 24
  for (int i = 0; i < R * 8; ++i) a[i / 8][i % 8] = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
#pragma GCC unroll 8
    for (int u = 0; u < 8; ++u) {
      const auto w = Op::load(p + (k + u) * Op::STEP);
#pragma GCC unroll 3
      for (int r = 0; r < R; ++r) a[r][u] = Op::fma(a[r][u], w, x[r * K + k + u]);
    }
  }
  for (; k < K; ++k) {
    const auto w = Op::load(p + k * Op::STEP);
#pragma GCC unroll 3
    for (int r = 0; r < R; ++r) a[r][0] = Op::fma(a[r][0], w, x[r * K + k]);
  }
#pragma GCC unroll 3
  for (int r = 0; r < R; ++r) finish(a[r], bias, y + r * ldy, n);
}

// R-row tiles over a batch: threes, then what is left (two or one)
template <typename Op>
inline void tiled(const typename Op::W* p, const typename Op::X* x, int64_t B, int64_t K, const float* bias,
                  float* y, int64_t ldy, int64_t n) {
  int64_t b = 0;
  for (; b + 3 <= B; b += 3) rows<Op, 3>(p, x + b * K, K, bias, y + b * ldy, ldy, n);
  if (B - b == 2) rows<Op, 2>(p, x + b * K, K, bias, y + b * ldy, ldy, n);
  if (B - b == 1) rows<Op, 1>(p, x + b * K, K, bias, y + b * ldy, ldy, n);
}

struct F32 {  // float32 weights (16 a k) and inputs
  using W = float;
  using X = float;
  static constexpr int64_t STEP = LANES;
  static __m512 load(const float* p) { return _mm512_loadu_ps(p); }
  static __m512 fma(__m512 a, __m512 w, float x) { return _mm512_fmadd_ps(w, _mm512_set1_ps(x), a); }
};
#endif

#if defined(__AVX512BF16__)
struct BF16 {  // bfloat16 weights (16 pairs a k) and input pairs (as uint32), float32 sums
  using W = uint16_t;
  using X = uint32_t;
  static constexpr int64_t STEP = 2 * LANES;
  static __m512bh load(const uint16_t* p) { return (__m512bh)_mm512_loadu_si512(p); }
  static __m512 fma(__m512 a, __m512bh w, uint32_t x) {
    return _mm512_dpbf16_ps(a, w, (__m512bh)_mm512_set1_epi32(int(x)));
  }
};
#endif

// y[b, n] = bias[n] + Σ_k P[n, k] x[b, k] for the 16-output blocks [nb0, nb1); x is (B, K) in float32 for a
// float32 P, or (B, K/2) bfloat16 pairs (as uint32) for a bfloat16 P; y (B, ldy) and bias are float32
void gemv_f32(const float* P, const float* x, const float* bias, float* y, int64_t B, int64_t K, int64_t N,
              int64_t ldy, int64_t nb0, int64_t nb1) {
  for (int64_t nb = nb0; nb < nb1; ++nb) {
    const float* p = P + nb * K * LANES;
    const int64_t n0 = nb * LANES, n = std::min(LANES, N - n0);
#if defined(__AVX512F__)
    tiled<F32>(p, x, B, K, bias + n0, y + n0, ldy, n);  // rows three at a time, each weight load serving three
#else
    for (int64_t b = 0; b < B; ++b) {  // a row at a time
      const float* xb = x + b * K;
#if defined(__AVX2__) && defined(__FMA__)
      __m256 a[8];  // chain u: a[2u] outputs 0-7, a[2u + 1] outputs 8-15
      for (auto& v : a) v = _mm256_setzero_ps();
      int64_t k = 0;
      for (; k + 4 <= K; k += 4)
        for (int u = 0; u < 4; ++u) {
          const __m256 xk = _mm256_set1_ps(xb[k + u]);
          const float* w = p + (k + u) * LANES;
          a[2 * u] = _mm256_fmadd_ps(_mm256_loadu_ps(w), xk, a[2 * u]);
          a[2 * u + 1] = _mm256_fmadd_ps(_mm256_loadu_ps(w + 8), xk, a[2 * u + 1]);
        }
      for (; k < K; ++k) {
        const __m256 xk = _mm256_set1_ps(xb[k]);
        a[0] = _mm256_fmadd_ps(_mm256_loadu_ps(p + k * LANES), xk, a[0]);
        a[1] = _mm256_fmadd_ps(_mm256_loadu_ps(p + k * LANES + 8), xk, a[1]);
      }
      finish(a, bias + n0, y + b * ldy + n0, n);
#else
      float acc[LANES] = {};
      for (int64_t k = 0; k < K; ++k)
        for (int64_t l = 0; l < LANES; ++l) acc[l] += p[k * LANES + l] * xb[k];
      for (int64_t l = 0; l < n; ++l) y[b * ldy + n0 + l] = acc[l] + bias[n0 + l];
#endif
    }
#endif
  }
}

void gemv_bf16(const uint16_t* P, const uint32_t* x, const float* bias, float* y, int64_t B, int64_t K2, int64_t N,
               int64_t ldy, int64_t nb0, int64_t nb1) {
  for (int64_t nb = nb0; nb < nb1; ++nb) {
    const uint16_t* p = P + nb * K2 * 2 * LANES;
    const int64_t n0 = nb * LANES, n = std::min(LANES, N - n0);
#if defined(__AVX512BF16__)
    tiled<BF16>(p, x, B, K2, bias + n0, y + n0, ldy, n);  // rows three at a time, as gemv_f32
#else
    for (int64_t b = 0; b < B; ++b) {  // a row at a time
      const uint32_t* xb = x + b * K2;
#if defined(__AVX2__) && defined(__FMA__)
      // No bfloat16 products: widen each pair of weights to float32 (a shift, a mask) and multiply in float32.
      // Pairs k and k + 1 go to two sets of four accumulators, a[0..3] and a[4..7]: outputs 0-7 and 8-15 times
      // x[2k] (the low halves), then outputs 0-7 and 8-15 times x[2k + 1] (the high halves). So, as in gemv_f32,
      // even places hold outputs 0-7 and odd ones outputs 8-15, which is what finish() sums.
      __m256 a[8];
      for (auto& v : a) v = _mm256_setzero_ps();
      auto pair = [&](int64_t k, __m256* acc) {  // acc[0..3] += the products of pair k
        const __m256i xk = _mm256_set1_epi32(int(xb[k]));
        const __m256 x0 = low_half(xk), x1 = high_half(xk);
        const __m256i w_lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + k * 2 * LANES));
        const __m256i w_hi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + k * 2 * LANES + LANES));
        acc[0] = _mm256_fmadd_ps(low_half(w_lo), x0, acc[0]);
        acc[1] = _mm256_fmadd_ps(low_half(w_hi), x0, acc[1]);
        acc[2] = _mm256_fmadd_ps(high_half(w_lo), x1, acc[2]);
        acc[3] = _mm256_fmadd_ps(high_half(w_hi), x1, acc[3]);
      };
      int64_t k = 0;
      for (; k + 2 <= K2; k += 2) pair(k, a), pair(k + 1, a + 4);
      for (; k < K2; ++k) pair(k, a);
      finish(a, bias + n0, y + b * ldy + n0, n);
#else
      float acc[LANES] = {};
      for (int64_t k = 0; k < K2; ++k) {
        const float x0 = load(uint16_t(xb[k] & 0xFFFF)), x1 = load(uint16_t(xb[k] >> 16));
        for (int64_t l = 0; l < LANES; ++l)
          acc[l] += load(p[(k * LANES + l) * 2]) * x0 + load(p[(k * LANES + l) * 2 + 1]) * x1;
      }
      for (int64_t l = 0; l < n; ++l) y[b * ldy + n0 + l] = acc[l] + bias[n0 + l];
#endif
    }
#endif
  }
}

// One helper thread for the second core. A product is cut into chunks of 16-output blocks, which the caller and
// the helper claim one at a time: if the helper is slow to start (descheduled on a busy machine) the caller
// does them all, rather than wait. torch's OpenMP pool is not used for these products (it is not there at all where
// the library is built without OpenMP, recurrent/native/__init__.py): a batch-1 step is a few tens of microseconds,
// so the helper spins between jobs (about a millisecond, then it sleeps) to start a chunk within a fraction of a
// microsecond.
class Helper {
 public:
  static Helper& get() {
    static const bool registered = (pthread_atfork(nullptr, nullptr, [] { instance() = nullptr; }), true);
    (void)registered;  // a forked child has no helper thread: it starts a new one
    if (!instance()) instance() = new Helper();  // never freed: it lives as long as the process
    return *instance();
  }

  // f(0), ..., f(n - 1), claimed in turn by this thread and the helper; returns when all are done. While
  // another thread's job holds the helper, this one runs alone.
  template <typename F> void run(int64_t n, const F& f) {
    TORCH_CHECK(n < (1 << 15), "Helper::run: too many chunks");
    std::unique_lock<std::mutex> mine_alone(busy_, std::try_to_lock);
    if (!mine_alone.owns_lock()) {
      for (int64_t k = 0; k < n; ++k) f(k);
      return;
    }
    fn_ = [](const void* g, int64_t k) { (*static_cast<const F*>(g))(k); };
    job_ = &f;
    done_.store(0);
    claim_.store(++ticket_ << 32 | uint64_t(n) << 16);  // publishes fn_, job_ and the reset done_
    if (sleeping_.load()) {
      std::lock_guard<std::mutex> lock(mutex_);
      wake_.notify_one();
    }
    int64_t mine = 0;
    for (int64_t k; (k = int64_t(claim_.fetch_add(1) & 0xFFFF)) < n; ++mine) f(k);
    while (done_.load(std::memory_order_acquire) + mine < n) pause();
  }

 private:
  static Helper*& instance() {
    static Helper* p = nullptr;
    return p;
  }
  static void pause() {  // a spin-wait hint: lets the sibling hyperthread run, saves power
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    asm volatile("yield");
#endif
  }
  Helper() { std::thread([this] { loop(); }).detach(); }

  void loop() {
    for (uint64_t seen = 0;;) {
      for (int spin = 0; claim_.load(std::memory_order_acquire) >> 32 == seen; ++spin) {
        if (spin < SPINS) {
          pause();
          continue;
        }
        std::unique_lock<std::mutex> lock(mutex_);
        sleeping_.store(true);
        wake_.wait(lock, [&] { return claim_.load() >> 32 != seen; });
        sleeping_.store(false);
      }
      uint64_t c = claim_.load(std::memory_order_acquire);
      seen = c >> 32;
      // claim chunk k of this job only while unclaimed ones are left: then the job (fn_, job_) is still alive
      while (c >> 32 == seen && (c & 0xFFFF) < ((c >> 16) & 0xFFFF)) {
        if (claim_.compare_exchange_weak(c, c + 1, std::memory_order_acq_rel)) {
          fn_(job_, int64_t(c & 0xFFFF));
          done_.fetch_add(1, std::memory_order_release);
          c = claim_.load(std::memory_order_acquire);
        }
      }
    }
  }

  static constexpr int SPINS = 40000;  // pauses before sleeping: about a millisecond on Zen 4
  void (*fn_)(const void*, int64_t) = nullptr;
  const void* job_ = nullptr;
  uint64_t ticket_ = 0;                 // the caller's count of jobs
  std::atomic<uint64_t> claim_{0};      // ticket << 32 | chunks << 16 | next unclaimed chunk
  std::atomic<int64_t> done_{0};        // chunks the helper has finished
  std::atomic<bool> sleeping_{false};
  std::mutex busy_, mutex_;  // busy_: held by the thread whose job the helper serves
  std::condition_variable wake_;
};

// x (B, K) float32 rows -> what the product reads: the same for float32 weights, bfloat16 pairs for bfloat16
struct Input {
  std::vector<float> f32;
  std::vector<uint32_t> pairs;
  int64_t K = 0;

  void set(bool bf16, int64_t B, int64_t K_, const float* const* parts, const int64_t* sizes, int n_parts,
           const int64_t* strides) {
    K = K_ + K_ % 2;
    f32.assign(B * K, 0.f);
    for (int64_t b = 0; b < B; ++b) {
      float* row = f32.data() + b * K;
      for (int i = 0; i < n_parts; ++i) {
        std::memcpy(row, parts[i] + b * strides[i], sizes[i] * sizeof(float));
        row += sizes[i];
      }
    }
    if (!bf16) return;
    pairs.resize(B * K / 2);
    for (int64_t i = 0; i < B * K / 2; ++i)
      pairs[i] = uint32_t(store<uint16_t>(f32[2 * i])) | uint32_t(store<uint16_t>(f32[2 * i + 1])) << 16;
  }
};

// y (B, N) = bias + x Pᵀ, in chunks shared with the helper thread when `threads` > 1
constexpr int64_t CHUNK = 8;  // blocks of 16 outputs: 256 KiB of bfloat16 weights at K = 1024
void product(const Tensor& P, const Input& x, const float* bias, float* y, int64_t B, int64_t N, int64_t threads) {
  const int64_t NB = P.size(0);
  const bool bf16 = P.scalar_type() == at::kBFloat16;
  TORCH_CHECK(P.is_contiguous() && NB * LANES >= N && P.size(1) * (bf16 ? 2 : 1) == x.K,
              "lm_step: packed weights of shape ", P.sizes(), " do not take ", N, " outputs from ", x.K, " inputs");
  auto part = [&](int64_t nb0, int64_t nb1) {
    if (bf16)
      gemv_bf16(reinterpret_cast<const uint16_t*>(P.data_ptr()), x.pairs.data(), bias, y, B, x.K / 2, N, N, nb0, nb1);
    else
      gemv_f32(P.data_ptr<float>(), x.f32.data(), bias, y, B, x.K, N, N, nb0, nb1);
  };
  if (threads < 2 || NB < 2 * CHUNK) return part(0, NB);
  Helper::get().run((NB + CHUNK - 1) / CHUNK, [&](int64_t k) { part(k * CHUNK, std::min(NB, (k + 1) * CHUNK)); });
}

// LSTMCell.step's pointwise part for one row: pre (G,) -> c, h (H,). Not inlined: g++ vectorises it on its own,
// with restrict pointers, not inside lm_step
__attribute__((noinline)) void lstm_gates(const float* __restrict__ pre, const float* __restrict__ c_prev,
                                          float* __restrict__ c, float* __restrict__ h, int64_t H) {
  for (int64_t j = 0; j < H; ++j) {
    const float i = sigmoid<float>(pre[j]), f = sigmoid<float>(pre[H + j]);
    const float g = tanh_<float>(pre[2 * H + j]), o = sigmoid<float>(pre[3 * H + j]);
    c[j] = f * c_prev[j] + i * g;
    h[j] = o * tanh_<float>(c[j]);
  }
}

// table (V0, G0) float32: layer 0's U e_v + b_ih; tokens (B,) int64; P[l]: layer l's packed weights (W_hh for
// layer 0, [U W] above it); bias[l] (G_l,) float32 (b_hh for layer 0, b_ih + b_hh above); h[l], c[l] (B, H_l)
// float32; dec_P, dec_b: the decoder packed, and its bias (V,) -> logits (B, V), new h, new c
std::tuple<Tensor, std::vector<Tensor>, std::vector<Tensor>> lm_step(
    const Tensor& table, const Tensor& tokens, at::TensorList P, at::TensorList bias, at::TensorList h,
    at::TensorList c, const Tensor& dec_P, const Tensor& dec_b, int64_t threads) {
  const int64_t L = P.size(), B = tokens.size(0), V0 = table.size(0);
  TORCH_CHECK(bias.size() == L && h.size() == L && c.size() == L, "lm_step: one weight, bias, h and c per layer");
  TORCH_CHECK(table.scalar_type() == at::kFloat && table.is_contiguous(), "lm_step: table must be contiguous float32");
  thread_local Input x;
  thread_local std::vector<float> pre;
  const Tensor tokens_ = tokens.to(at::kLong).contiguous();
  const int64_t* tok = tokens_.data_ptr<int64_t>();
  std::vector<Tensor> h_new, c_new;
  for (int64_t l = 0; l < L; ++l) {
    const int64_t H = h[l].size(1), G = 4 * H;
    TORCH_CHECK(h[l].scalar_type() == at::kFloat && c[l].scalar_type() == at::kFloat && h[l].stride(1) == 1 &&
                    c[l].stride(1) == 1 && h[l].size(0) == B && c[l].sizes() == h[l].sizes() &&
                    bias[l].scalar_type() == at::kFloat && bias[l].is_contiguous() && bias[l].numel() == G &&
                    (l > 0 || table.size(1) == G),
                "lm_step: layer ", l, " has states, bias or table of the wrong dtype or shape");
    if (l == 0) {
      const float* parts[] = {h[0].data_ptr<float>()};
      const int64_t sizes[] = {H}, strides[] = {h[0].stride(0)};
      x.set(P[0].scalar_type() == at::kBFloat16, B, H, parts, sizes, 1, strides);
    } else {
      const int64_t I = h_new[l - 1].size(1);
      const float* parts[] = {h_new[l - 1].data_ptr<float>(), h[l].data_ptr<float>()};
      const int64_t sizes[] = {I, H}, strides[] = {I, h[l].stride(0)};
      x.set(P[l].scalar_type() == at::kBFloat16, B, I + H, parts, sizes, 2, strides);
    }
    pre.resize(B * G);
    product(P[l], x, bias[l].data_ptr<float>(), pre.data(), B, G, threads);
    Tensor hl = at::empty({B, H}, h[l].options()), cl = at::empty({B, H}, c[l].options());
    const float* cp = c[l].data_ptr<float>();
    for (int64_t b = 0; b < B; ++b) {
      float* r = pre.data() + b * G;
      if (l == 0) {
        TORCH_CHECK(0 <= tok[b] && tok[b] < V0, "lm_step: token ", tok[b], " is not in 0..", V0 - 1);
        const float* row = table.data_ptr<float>() + tok[b] * G;
        for (int64_t j = 0; j < G; ++j) r[j] += row[j];
      }
      const float* c_prev = cp + b * c[l].stride(0);
      lstm_gates(r, c_prev, cl.data_ptr<float>() + b * H, hl.data_ptr<float>() + b * H, H);
    }
    h_new.push_back(hl), c_new.push_back(cl);
  }
  const int64_t Hl = h_new.back().size(1), V = dec_b.numel();
  TORCH_CHECK(dec_b.scalar_type() == at::kFloat && dec_b.is_contiguous(), "lm_step: dec_b must be contiguous float32");
  const float* parts[] = {h_new.back().data_ptr<float>()};
  const int64_t sizes[] = {Hl}, strides[] = {Hl};
  x.set(dec_P.scalar_type() == at::kBFloat16, B, Hl, parts, sizes, 1, strides);
  Tensor logits = at::empty({B, V}, h[0].options());
  product(dec_P, x, dec_b.data_ptr<float>(), logits.data_ptr<float>(), B, V, threads);
  return {logits, h_new, c_new};
}

// lm_step with the products on oneDNN: W[l] and dec_W packed by Python (kernels.linear: mkldnn's
// _reorder_linear_weight, in the products' dtype). For larger batches where oneDNN beats the matrix-vector kernel
// above (AMX: from 16 rows at 2x512, native/step.py); the rest (the table, bias, gates, the decoder's bias) as
// lm_step does, with no torch op per gate.
std::tuple<Tensor, std::vector<Tensor>, std::vector<Tensor>> lm_step_onednn(
    const Tensor& table, const Tensor& tokens, at::TensorList W, at::TensorList bias, at::TensorList h,
    at::TensorList c, const Tensor& dec_W, const Tensor& dec_b) {
  const int64_t L = W.size(), B = tokens.size(0), V0 = table.size(0);
  TORCH_CHECK(Product::linear, "lm_step_onednn: torch was built without oneDNN");
  TORCH_CHECK(bias.size() == L && h.size() == L && c.size() == L, "lm_step_onednn: one weight, bias, h and c per layer");
  TORCH_CHECK(table.scalar_type() == at::kFloat && table.is_contiguous(), "lm_step_onednn: table must be contiguous float32");
  const at::ScalarType low = W[0].scalar_type();
  auto linear = [&](const Tensor& x, const Tensor& packed) {  // x (B, K) float32 -> (B, N) float32
    return call(*Product::linear, {x.to(low), packed, c10::IValue(), std::string("none"),
                                   c10::List<std::optional<at::Scalar>>(), c10::IValue()}).to(at::kFloat);
  };
  const Tensor tokens_ = tokens.to(at::kLong).contiguous();
  const int64_t* tok = tokens_.data_ptr<int64_t>();
  for (int64_t b = 0; b < B; ++b)
    TORCH_CHECK(0 <= tok[b] && tok[b] < V0, "lm_step_onednn: token ", tok[b], " is not in 0..", V0 - 1);
  std::vector<Tensor> h_new, c_new;
  for (int64_t l = 0; l < L; ++l) {
    const int64_t H = h[l].size(1), G = 4 * H;
    TORCH_CHECK(h[l].scalar_type() == at::kFloat && c[l].scalar_type() == at::kFloat && h[l].size(0) == B &&
                    c[l].sizes() == h[l].sizes() && bias[l].scalar_type() == at::kFloat && bias[l].is_contiguous() &&
                    bias[l].numel() == G && (l > 0 || table.size(1) == G),
                "lm_step_onednn: layer ", l, " has states, bias or table of the wrong dtype or shape");
    const Tensor x = l == 0 ? h[0] : at::cat({h_new[l - 1], h[l]}, 1);
    Tensor pre = linear(x, W[l]).contiguous();  // (B, G)
    TORCH_CHECK(pre.size(1) == G, "lm_step_onednn: layer ", l, " gives ", pre.size(1), " pre-activations, not ", G);
    const Tensor cp = c[l].contiguous();
    Tensor hl = at::empty({B, H}, h[l].options()), cl = at::empty({B, H}, c[l].options());
    const float* bl = bias[l].data_ptr<float>();
    at::parallel_for(0, B, 4, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        float* r = pre.data_ptr<float>() + b * G;
        if (l == 0) {  // two loops, not a select per element: each vectorises on its own
          const float* row = table.data_ptr<float>() + tok[b] * G;
          for (int64_t j = 0; j < G; ++j) r[j] += bl[j] + row[j];
        } else {
          for (int64_t j = 0; j < G; ++j) r[j] += bl[j];
        }
        lstm_gates(r, cp.data_ptr<float>() + b * H, cl.data_ptr<float>() + b * H, hl.data_ptr<float>() + b * H, H);
      }
    });
    h_new.push_back(hl), c_new.push_back(cl);
  }
  TORCH_CHECK(dec_b.scalar_type() == at::kFloat && dec_b.is_contiguous(), "lm_step_onednn: dec_b must be contiguous float32");
  Tensor logits = at::addmm(dec_b, h_new.back(), dec_W.t());  // (B, V): small, float32 as the Python step
  return {logits, h_new, c_new};
}

}  // namespace

TORCH_LIBRARY(recurrent_native, m) {
  m.def("lstm_forward(Tensor gx, Tensor W, Tensor bias, Tensor h0, Tensor c0, bool onednn) "
        "-> (Tensor, Tensor, Tensor, Tensor[])");
  m.def("lstm_backward(Tensor dh, Tensor dc, Tensor W, Tensor c, Tensor h_low, Tensor[] act, bool onednn) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("gemv_pack(Tensor[] parts, ScalarType dtype) -> Tensor");
  m.def("pool_bytes() -> int[]", [] { return BlockPool::get().bytes(); });  // common.h's buffer pool
  m.def("pooled_empty(int[] sizes, ScalarType dtype) -> Tensor",  // a buffer from it, for the Python loops
        [](at::IntArrayRef sizes, at::ScalarType dtype) {
          return pooled_empty(sizes, at::TensorOptions().dtype(dtype));
        });
  m.def("lm_step_onednn(Tensor table, Tensor tokens, Tensor[] W, Tensor[] bias, Tensor[] h, Tensor[] c, "
        "Tensor dec_W, Tensor dec_b) -> (Tensor, Tensor[], Tensor[])");
  m.def("lm_step(Tensor table, Tensor tokens, Tensor[] P, Tensor[] bias, Tensor[] h, Tensor[] c, Tensor dec_P, "
        "Tensor dec_b, int threads) -> (Tensor, Tensor[], Tensor[])");
}

TORCH_LIBRARY_IMPL(recurrent_native, CPU, m) {
  m.impl("lstm_forward", lstm_forward);
  m.impl("lstm_backward", lstm_backward);
  m.impl("gemv_pack", gemv_pack);
  m.impl("lm_step", lm_step);
  m.impl("lm_step_onednn", lm_step_onednn);
}

// lm_step_onednn's weights are oneDNN-packed tensors (MkldnnCPU), which pick the dispatch key
TORCH_LIBRARY_IMPL(recurrent_native, MkldnnCPU, m) { m.impl("lm_step_onednn", lm_step_onednn); }
