// The GRU layer's and the LayerNorm LSTM layer's whole time loops, forward and backward, for the `bptt` backend
// (see gru.py and layernorm_lstm.py), and the minGRU/minLSTM scan (at the end). Compiled into the same library as
// lstm.cpp (recurrent/native/__init__.py SOURCES), with the same build flags, dtypes and products; read lstm.cpp's header first.
//
// Key: T time, B batch, H hidden. S is the dtype of the states and the pointwise steps (float or double); P the
// dtype of the products (bfloat16 under autocast, otherwise S). Per step, one product and one fused pointwise loop.
//
// GRU (cells/gru.py), G = 3H in torch.nn's gate order [r z n]; b_hn stays inside the reset gate, as in torch.nn:
//   forward   gh = h_{t-1} Wᵀ                                     (B, G)   oneDNN, W packed once
//             r, z = σ(gx + b_ih + gh + b_hh) for the r, z blocks      gx_t = U x_t
//             hn = gh_n + b_hn,  n = tanh(gx_n + b_in + r hn),  h_t = n + z (h_{t-1} - n)
//   backward  dh = dh_out_t + dgh_{t+1} W + dh_{t+1} z_{t+1}
//             dn = dh (1 - z)(1 - n²),  dr = dn hn r(1 - r),  dz = dh (h_{t-1} - n) z(1 - z)
//             dgx_t = [dr; dz; dn],  dgh_t = [dr; dz; dn r]
//   after it  dW = Σ_t dgh_tᵀ h_{t-1} (one product), db_ih = Σ dgx, db_hh = Σ dgh
//
// LayerNorm LSTM (cells/layernorm_lstm.py), G = 4H in the order [i f g o]; LN(v) = (v - mean v) / σ(v) per row:
//   forward   gh = h_{t-1} Wᵀ;  a = γ_x LN(ux_t) + β_x + γ_h LN(gh)   ux_t = U x_t, from one product for all t
//             i, f, o = σ(a_i, a_f, a_o),  g = tanh(a_g),  c_t = f c_{t-1} + i g
//             tc = tanh(γ_c LN(c_t) + β_c),  h_t = o tc
//   backward  dh = dh_out_t + dgh_{t+1} W;  dl = dh o (1 - tc²)
//             dc = dc_out_t + dc_{t+1} f_{t+1} + LN'(γ_c dl);   LN'(d) = (d - mean d - x̂ mean(d x̂)) / σ
//             da = [dc g i(1-i); dc c_{t-1} f(1-f); dc i (1-g²); dh tc o(1-o)]  = dgx_t
//             dgh_t = LN'(γ_h da);  dγ_h += da LN(gh),  dγ_c += dl LN(c_t),  dβ_c += dl
//             dux_t = LN'(γ_x da);  dγ_x += da LN(ux_t),  dβ_x += da     (the input's layer norm, in the loop too:
//             it saves two passes over (T, B, 4H) tensors and two fresh buffers that size)
//   after it  dW = Σ_t dgh_tᵀ h_{t-1} (one product)
//
// The helpers (exp_, bfloat16 bits, Product, pooled_empty, over_rows) are in common.h, shared with lstm.cpp. The
// pointwise loops are written for g++ to vectorise under
// every instruction set's flags; nothing x86-only appears here.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <vector>

#include "common.h"  // what lstm.cpp and gru.cpp share: exp_, load/store, Product, pooled_empty, over_rows

namespace {

using at::Tensor;
using namespace recurrent_native;

void check(const char* name, const Tensor& gx, const Tensor& W, const Tensor& h0, int64_t gates) {
  TORCH_CHECK(gx.dim() == 3 && W.dim() == 2 && W.size(0) == gx.size(2) && W.size(0) == gates * W.size(1) &&
                  h0.dim() == 2 && h0.size(0) == gx.size(1) && h0.size(1) == W.size(1),
              name, ": gx must be (T, B, ", gates, "H), W (", gates, "H, H) and h0 (B, H), got ", gx.sizes(), ", ",
              W.sizes(), " and ", h0.sizes());
  TORCH_CHECK(gx.scalar_type() == W.scalar_type(), name, ": gx and W must share a dtype, got ", gx.scalar_type(),
              " and ", W.scalar_type());
  TORCH_CHECK(h0.scalar_type() == W.scalar_type() ||
                  (h0.scalar_type() == at::kFloat && W.scalar_type() == at::kBFloat16),
              name, ": states ", h0.scalar_type(), " with products in ", W.scalar_type(), " are not supported");
}

// h (T+1, B, H) in S and h_low, the same in P (h itself if P == S), with h0 at t = 0
std::pair<Tensor, Tensor> states(const Tensor& h0, const Tensor& W, int64_t T, bool same) {
  const int64_t B = h0.size(0), H = h0.size(1);
  Tensor h = pooled_empty({T + 1, B, H}, h0.options());
  Tensor h_low = same ? h : pooled_empty({T + 1, B, H}, W.options());
  h[0].copy_(h0), h_low[0].copy_(h0);
  return {h, h_low};
}

// --- GRU: one step's pointwise part, over every (b, j) ------------------------------------------------

// act (B, 4H) per step: r, z, n and hn = gh_n + b_hn, what the backward step reads
template <typename S, typename Q>
void gru_forward_step(const Q* __restrict__ gx, const Q* __restrict__ gh, const S* __restrict__ b_ih,
                      const S* __restrict__ b_hh, const S* __restrict__ h_prev, S* __restrict__ act,
                      S* __restrict__ h, Q* __restrict__ h_low, int64_t b0, int64_t b1, int64_t H) {
  const int64_t G = 3 * H;
  for (int64_t b = b0; b < b1; ++b) {
    const Q *x = gx + b * G, *g = gh + b * G;
    S* a = act + b * 4 * H;
    const int64_t o = b * H;
#pragma GCC ivdep  // the gate blocks never overlap
    for (int64_t j = 0; j < H; ++j) {
      S r = sigmoid<S>(load(x[j]) + b_ih[j] + load(g[j]) + b_hh[j]);
      S z = sigmoid<S>(load(x[H + j]) + b_ih[H + j] + load(g[H + j]) + b_hh[H + j]);
      S hn = load(g[2 * H + j]) + b_hh[2 * H + j];
      S n = tanh_<S>(load(x[2 * H + j]) + b_ih[2 * H + j] + r * hn);
      S hv = n + z * (h_prev[o + j] - n);
      a[j] = r, a[H + j] = z, a[2 * H + j] = n, a[3 * H + j] = hn;
      h[o + j] = hv;
      if constexpr (!std::is_same_v<S, Q>) h_low[o + j] = store<Q>(hv);
    }
  }
}

template <typename S, typename Q>
void gru_backward_step(const S* __restrict__ dh_out, const Q* __restrict__ dh_rec, const S* __restrict__ act,
                       const S* __restrict__ h_prev, S* __restrict__ dh_carry, Q* __restrict__ dgx,
                       Q* __restrict__ dgh, S* __restrict__ db_ih, S* __restrict__ db_hh, int64_t b0, int64_t b1, int64_t H) {
  const int64_t G = 3 * H;
  for (int64_t b = b0; b < b1; ++b) {
    const S* a = act + b * 4 * H;
    Q *dx = dgx + b * G, *dg = dgh + b * G;
    const int64_t o = b * H;
#pragma GCC ivdep  // the gate blocks never overlap
    for (int64_t j = 0; j < H; ++j) {
      S r = a[j], z = a[H + j], n = a[2 * H + j], hn = a[3 * H + j];
      S dh = dh_out[o + j] + load(dh_rec[o + j]) + dh_carry[o + j];
      S dn = dh * (S(1) - z) * (S(1) - n * n);
      S dr = dn * hn * r * (S(1) - r), dz = dh * (h_prev[o + j] - n) * z * (S(1) - z);
      dh_carry[o + j] = dh * z;
      dx[j] = store<Q>(dr), dx[H + j] = store<Q>(dz), dx[2 * H + j] = store<Q>(dn);
      dg[j] = store<Q>(dr), dg[H + j] = store<Q>(dz), dg[2 * H + j] = store<Q>(dn * r);
      db_ih[j] += dr, db_ih[H + j] += dz, db_ih[2 * H + j] += dn;
      db_hh[2 * H + j] += dn * r;
    }
  }
}

// gx (T, B, 3H) in P, W (3H, H) in P, b_ih, b_hh (3H,) and h0 (B, H) in S
// -> h (T+1, B, H) in S, h_low (T+1, B, H) in P, act: T tensors (B, 4H) in S (one per step: see lstm.cpp)
template <typename S, typename P>
std::tuple<Tensor, Tensor, std::vector<Tensor>> gru_forward_loop(const Tensor& gx, const Tensor& W,
                                                                 const Tensor& b_ih, const Tensor& b_hh,
                                                                 const Tensor& h0, bool onednn) {
  const int64_t T = gx.size(0), B = gx.size(1), H = W.size(1);
  using Q = typename Bits<P>::type;
  Tensor h, h_low;
  std::tie(h, h_low) = states(h0, W, T, std::is_same_v<S, P>);
  std::vector<Tensor> act;
  const Tensor acts = pooled_empty({T, B, 4 * H}, h0.options());  // one buffer: act[t] is a view of it
  Product recur(W, B, onednn);
  for (int64_t t = 0; t < T; ++t) {
    Tensor gh = recur(h_low[t]).contiguous();  // (B, 3H)
    act.push_back(acts[t]);
    const Q *x = bits<P>(gx[t]), *r = bits<P>(gh);
    S *a = act[t].data_ptr<S>(), *hn = h[t + 1].data_ptr<S>();
    const S* hp = h[t].data_ptr<S>();
    Q* hl = bits<P>(h_low[t + 1]);
    over_rows(B, 3 * H, [&](int64_t b0, int64_t b1, int) {
      gru_forward_step<S, Q>(x, r, b_ih.data_ptr<S>(), b_hh.data_ptr<S>(), hp, a, hn, hl, b0, b1, H);
    });
  }
  return {h, h_low, act};
}

// dh (T, B, H): gradients from outside at every step -> dgx (T, B, 3H) in P, dW (3H, H) in P, db_ih, db_hh (3H,)
// and dh0 (B, H) in S
template <typename S, typename P>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> gru_backward_loop(const Tensor& dh, const Tensor& W,
                                                                    const Tensor& h, const Tensor& h_low,
                                                                    at::TensorList act, bool onednn) {
  const int64_t T = dh.size(0), B = dh.size(1), H = W.size(1);
  using Q = typename Bits<P>::type;
  auto opt = h.options();
  Tensor dgx = pooled_empty({T, B, 3 * H}, W.options()), dgh = pooled_empty({T, B, 3 * H}, W.options());
  Tensor dh_carry = at::zeros({B, H}, opt);
  Tensor acc = at::zeros({at::get_num_threads(), 6 * H}, opt);  // per thread: db_ih, db_hh
  Tensor dh_rec = at::zeros({B, H}, W.options());  // dgh_{t+1} W: nothing after the last step
  Product back(W.t(), B, onednn);
  S* const accs = acc.data_ptr<S>();
  for (int64_t t = T - 1; t >= 0; --t) {
    const S *dho = dh[t].data_ptr<S>(), *a = act[t].data_ptr<S>(), *hp = h[t].data_ptr<S>();
    const Q* dr = bits<P>(dh_rec);
    Q *dx = bits<P>(dgx[t]), *dg = bits<P>(dgh[t]);
    over_rows(B, 3 * H, [&](int64_t b0, int64_t b1, int thread) {
      S* own = accs + thread * 6 * H;
      gru_backward_step<S, Q>(dho, dr, a, hp, dh_carry.data_ptr<S>(), dx, dg, own, own + 3 * H, b0, b1, H);
    });
    dh_rec = back(dgh[t]).contiguous();  // (B, H)
  }
  Tensor sums = acc.sum(0);
  Tensor db_ih = sums.narrow(0, 0, 3 * H).clone(), db_hh = sums.narrow(0, 3 * H, 3 * H).clone();
  db_hh.narrow(0, 0, 2 * H).copy_(db_ih.narrow(0, 0, 2 * H));  // the r and z blocks of dgh are dgx's
  Tensor dW = at::mm(dgh.view({T * B, 3 * H}).t(), h_low.narrow(0, 0, T).reshape({T * B, H}));  // (3H, H)
  return {dgx, dW, db_ih, db_hh, dh_carry.add_(dh_rec.to(h.scalar_type()))};
}

// onednn: whether the products may use oneDNN (recurrent.kernels.uses_onednn, decided in gru.py)
std::tuple<Tensor, Tensor, std::vector<Tensor>> gru_forward(const Tensor& gx, const Tensor& W, const Tensor& b_ih,
                                                            const Tensor& b_hh, const Tensor& h0, bool onednn) {
  check("gru_loop", gx, W, h0, 3);
  TORCH_CHECK(b_ih.numel() == W.size(0) && b_hh.numel() == W.size(0) &&
                  b_ih.scalar_type() == h0.scalar_type() && b_hh.scalar_type() == h0.scalar_type(),
              "gru_loop: b_ih and b_hh must be (3H,) in the states' dtype");
  Tensor x = gx.contiguous(), bi = b_ih.contiguous(), bh = b_hh.contiguous(), h = h0.contiguous();
  if (h0.scalar_type() == at::kDouble) return gru_forward_loop<double, double>(x, W, bi, bh, h, onednn);
  if (W.scalar_type() == at::kBFloat16) return gru_forward_loop<float, c10::BFloat16>(x, W, bi, bh, h, onednn);
  return gru_forward_loop<float, float>(x, W, bi, bh, h, onednn);
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> gru_backward(const Tensor& dh, const Tensor& W, const Tensor& h,
                                                               const Tensor& h_low, at::TensorList act,
                                                               bool onednn) {
  Tensor dh_ = dh.contiguous();
  if (h.scalar_type() == at::kDouble) return gru_backward_loop<double, double>(dh_, W, h, h_low, act, onednn);
  if (W.scalar_type() == at::kBFloat16)
    return gru_backward_loop<float, c10::BFloat16>(dh_, W, h, h_low, act, onednn);
  return gru_backward_loop<float, float>(dh_, W, h, h_low, act, onednn);
}


// --- LayerNorm LSTM: one step's pointwise part, row by row -------------------------------------------------

// Σ_k f(k) for k < n, in 16 partial sums: g++ vectorises this (one sum in order it may not, without -ffast-math)
template <typename S, typename F> [[gnu::always_inline]] inline S lane_sum(int64_t n, const F& f) {
  S acc[16] = {};
  int64_t k = 0;
  for (; k + 16 <= n; k += 16)
    for (int l = 0; l < 16; ++l) acc[l] += f(k + l);
  S s = 0;
  for (; k < n; ++k) s += f(k);
  for (int l = 0; l < 16; ++l) s += acc[l];
  return s;
}

// the mean and σ = sqrt(var + eps) of v[0, n), the variance biased, in two passes as torch's
template <typename S, typename V> inline std::pair<S, S> moments(const V* __restrict__ v, int64_t n, S eps) {
  const S mu = lane_sum<S>(n, [&](int64_t k) { return S(load(v[k])); }) / S(n);
  const S var = lane_sum<S>(n, [&](int64_t k) { S d = S(load(v[k])) - mu; return d * d; }) / S(n);
  return {mu, std::sqrt(var + eps)};
}

// act (B, 10H + 4) per step, what the backward step reads: i, f, g, o (4H), LN(gh) (4H), tc (H), LN(c_t) (H), then
// σ(gh), σ(c_t), and the mean and σ of ux_t
constexpr int64_t LN_EXTRA = 4;
template <typename S> struct LnAct {
  S *i, *f, *g, *o, *nh, *tc, *nc, *sh, *sc, *mx, *sx;
  LnAct(S* a, int64_t H)
      : i(a), f(a + H), g(a + 2 * H), o(a + 3 * H), nh(a + 4 * H), tc(a + 8 * H), nc(a + 9 * H), sh(a + 10 * H),
        sc(a + 10 * H + 1), mx(a + 10 * H + 2), sx(a + 10 * H + 3) {}
};

template <typename S, typename Q>
void ln_forward_step(const Q* __restrict__ ux, const Q* __restrict__ gh, const S* __restrict__ g_x,
                     const S* __restrict__ b_x, const S* __restrict__ g_h,
                     const S* __restrict__ g_c, const S* __restrict__ b_c, const S* __restrict__ c_prev,
                     S* __restrict__ act, S* __restrict__ c, S* __restrict__ h, Q* __restrict__ h_low, int64_t b0,
                     int64_t b1, int64_t H, S eps) {
  const int64_t G = 4 * H;
  for (int64_t b = b0; b < b1; ++b) {
    const Q *x = ux + b * G, *r = gh + b * G;
    LnAct<S> a(act + b * (10 * H + LN_EXTRA), H);
    const int64_t o = b * H;
    auto [mu, sh] = moments<S>(r, G, eps);
    auto [mu_x, sx] = moments<S>(x, G, eps);
    const S inv = S(1) / sh, inv_x = S(1) / sx;
#pragma GCC ivdep
    for (int64_t k = 0; k < G; ++k) a.nh[k] = (S(load(r[k])) - mu) * inv;
    // γ_x LN(ux) + β_x, rounded to the products' dtype as the Python path's autocast rounds it (as_q)
    auto lx = [&](int64_t k) { return as_q<S, Q>((S(load(x[k])) - mu_x) * inv_x * g_x[k] + b_x[k]); };
#pragma GCC ivdep  // the gate blocks never overlap
    for (int64_t j = 0; j < H; ++j) {
      S i = sigmoid<S>(lx(j) + a.nh[j] * g_h[j]);
      S f = sigmoid<S>(lx(H + j) + a.nh[H + j] * g_h[H + j]);
      S g = tanh_<S>(lx(2 * H + j) + a.nh[2 * H + j] * g_h[2 * H + j]);
      S og = sigmoid<S>(lx(3 * H + j) + a.nh[3 * H + j] * g_h[3 * H + j]);
      a.i[j] = i, a.f[j] = f, a.g[j] = g, a.o[j] = og;
      c[o + j] = f * c_prev[o + j] + i * g;
    }
    auto [mu_c, sc] = moments<S>(c + o, H, eps);
    const S inv_c = S(1) / sc;
#pragma GCC ivdep
    for (int64_t j = 0; j < H; ++j) {
      S nc = (c[o + j] - mu_c) * inv_c;
      S tc = tanh_<S>(nc * g_c[j] + b_c[j]);
      a.nc[j] = nc, a.tc[j] = tc;
      h[o + j] = a.o[j] * tc;
      if constexpr (!std::is_same_v<S, Q>) h_low[o + j] = store<Q>(a.o[j] * tc);
    }
    *a.sh = sh, *a.sc = sc, *a.mx = mu_x, *a.sx = sx;
  }
}

// tmp: 6H values of scratch. dextras: dγ_h (4H), dγ_c (H), dβ_c (H), summed over the batch and the steps
template <typename S, typename Q>
void ln_backward_step(const S* __restrict__ dh_out, const S* __restrict__ dc_out, const Q* __restrict__ dh_rec,
                      const S* __restrict__ act, const Q* __restrict__ ux, const S* __restrict__ c_prev,
                      const S* __restrict__ g_x, const S* __restrict__ g_h, const S* __restrict__ g_c,
                      S* __restrict__ dc_carry, Q* __restrict__ dux, Q* __restrict__ dgh, S* __restrict__ dg_x,
                      S* __restrict__ db_x, S* __restrict__ dg_h, S* __restrict__ dg_c, S* __restrict__ db_c,
                      S* __restrict__ tmp, int64_t b0, int64_t b1, int64_t H) {
  const int64_t G = 4 * H;
  S *dh = tmp, *dnc = tmp + H, *dnh = tmp + 2 * H, *dp = tmp + 6 * H;  // dnh, dp: 4H each
  for (int64_t b = b0; b < b1; ++b) {
    LnAct<S> a(const_cast<S*>(act) + b * (10 * H + LN_EXTRA), H);
    const int64_t o = b * H;
#pragma GCC ivdep
    for (int64_t j = 0; j < H; ++j) {  // through h = o tanh(γ_c LN(c) + β_c), as far as LN(c)
      S d = dh_out[o + j] + load(dh_rec[o + j]);
      S dl = d * a.o[j] * (S(1) - a.tc[j] * a.tc[j]);
      dh[j] = d, dnc[j] = dl * g_c[j];
      dg_c[j] += dl * a.nc[j], db_c[j] += dl;
    }
    const S m1 = lane_sum<S>(H, [&](int64_t j) { return dnc[j]; }) / S(H);
    const S m2 = lane_sum<S>(H, [&](int64_t j) { return dnc[j] * a.nc[j]; }) / S(H);
    const S inv_c = S(1) / *a.sc;
#pragma GCC ivdep  // the gate blocks never overlap
    for (int64_t j = 0; j < H; ++j) {
      S i = a.i[j], f = a.f[j], g = a.g[j], og = a.o[j];
      S dc = dc_carry[o + j] + dc_out[o + j] + (dnc[j] - m1 - a.nc[j] * m2) * inv_c;
      S di = dc * g * i * (S(1) - i), df = dc * c_prev[o + j] * f * (S(1) - f);
      S dg = dc * i * (S(1) - g * g), dog = dh[j] * a.tc[j] * og * (S(1) - og);
      dc_carry[o + j] = dc * f;
      dp[j] = di, dp[H + j] = df, dp[2 * H + j] = dg, dp[3 * H + j] = dog;
      dnh[j] = di * g_h[j], dnh[H + j] = df * g_h[H + j];
      dnh[2 * H + j] = dg * g_h[2 * H + j], dnh[3 * H + j] = dog * g_h[3 * H + j];
      dg_h[j] += di * a.nh[j], dg_h[H + j] += df * a.nh[H + j];
      dg_h[2 * H + j] += dg * a.nh[2 * H + j], dg_h[3 * H + j] += dog * a.nh[3 * H + j];
    }
    const S M1 = lane_sum<S>(G, [&](int64_t k) { return dnh[k]; }) / S(G);
    const S M2 = lane_sum<S>(G, [&](int64_t k) { return dnh[k] * a.nh[k]; }) / S(G);
    const S inv = S(1) / *a.sh;
    Q* dg_row = dgh + b * G;
#pragma GCC ivdep
    for (int64_t k = 0; k < G; ++k) dg_row[k] = store<Q>((dnh[k] - M1 - a.nh[k] * M2) * inv);
    // the input's layer norm: da = dp (rounded as the Python path's autocast rounds it), through γ_x LN(ux_t) + β_x
    // (dnh is reused for x̂, the normalised ux_t)
    const Q* x = ux + b * G;
    const S mu_x = *a.mx, inv_x = S(1) / *a.sx;
#pragma GCC ivdep
    for (int64_t k = 0; k < G; ++k) {
      const S xh = (S(load(x[k])) - mu_x) * inv_x;
      dp[k] = as_q<S, Q>(dp[k]);
      dnh[k] = xh;
      dg_x[k] += dp[k] * xh, db_x[k] += dp[k];
    }
    const S X1 = lane_sum<S>(G, [&](int64_t k) { return dp[k] * g_x[k]; }) / S(G);
    const S X2 = lane_sum<S>(G, [&](int64_t k) { return dp[k] * g_x[k] * dnh[k]; }) / S(G);
    Q* dx_row = dux + b * G;
#pragma GCC ivdep
    for (int64_t k = 0; k < G; ++k) dx_row[k] = store<Q>((dp[k] * g_x[k] - X1 - dnh[k] * X2) * inv_x);
  }
}

// ux (T, B, 4H) = U x_t for all t and W (4H, H) in P; γ_x, β_x, γ_h (4H,), γ_c, β_c (H,), h0, c0 (B, H) in S
// -> h, c (T+1, B, H) in S, h_low (T+1, B, H) in P, act: T tensors (B, 10H + 4) in S
template <typename S, typename P>
std::tuple<Tensor, Tensor, Tensor, std::vector<Tensor>> ln_forward_loop(const Tensor& ux, const Tensor& W,
                                                                        at::TensorList ps, const Tensor& h0,
                                                                        const Tensor& c0, double eps, bool onednn) {
  using Q = typename Bits<P>::type;
  const int64_t H = W.size(1);
  const S *g_x = ps[0].data_ptr<S>(), *b_x = ps[1].data_ptr<S>(), *g_h = ps[2].data_ptr<S>();
  const S *g_c = ps[3].data_ptr<S>(), *b_c = ps[4].data_ptr<S>();
  return hc_forward_loop<S, P>(ux, W, h0, c0, 10 * H + LN_EXTRA, onednn,
                               [&](const Q* x, const Q* r, const S* cp, S* a, S* cn, S* hn, Q* hl, int64_t b0,
                                   int64_t b1) {
                                 ln_forward_step<S, Q>(x, r, g_x, b_x, g_h, g_c, b_c, cp, a, cn, hn, hl, b0, b1, H,
                                                       S(eps));
                               });
}

// dh, dc (T, B, H) from outside -> dux (T, B, 4H) and dW (4H, H) in P; dγ_x, dβ_x, dγ_h, dγ_c, dβ_c, dh0, dc0 in S
template <typename S, typename P>
std::vector<Tensor> ln_backward_loop(const Tensor& dh, const Tensor& dc, const Tensor& W, const Tensor& ux,
                                     at::TensorList ps, const Tensor& c, const Tensor& h_low, at::TensorList act,
                                     bool onednn) {
  const int64_t T = dh.size(0), B = dh.size(1), H = W.size(1);
  using Q = typename Bits<P>::type;
  auto opt = c.options();
  Tensor dux = pooled_empty({T, B, 4 * H}, W.options()), dgh = pooled_empty({T, B, 4 * H}, W.options());
  const int64_t threads = at::get_num_threads(), A = 14 * H;  // A: dγ_x, dβ_x, dγ_h (4H each), dγ_c, dβ_c (H each)
  Tensor acc = at::zeros({threads, A}, opt);  // per thread
  Tensor dc_carry = at::zeros({B, H}, opt), tmp = at::empty({threads, 10 * H}, opt);  // tmp: per thread scratch
  Tensor dh_rec = at::zeros({B, H}, W.options());  // dgh_{t+1} W: nothing after the last step
  const S *g_x = ps[0].data_ptr<S>(), *g_h = ps[2].data_ptr<S>(), *g_c = ps[3].data_ptr<S>();
  Product back(W.t(), B, onednn);
  S *const accs = acc.data_ptr<S>(), *const tmps = tmp.data_ptr<S>();
  for (int64_t t = T - 1; t >= 0; --t) {
    const S *dho = dh[t].data_ptr<S>(), *dco = dc[t].data_ptr<S>(), *a = act[t].data_ptr<S>();
    const S* cp = c[t].data_ptr<S>();
    const Q *dr = bits<P>(dh_rec), *x = bits<P>(ux[t]);
    Q *dx = bits<P>(dux[t]), *dg = bits<P>(dgh[t]);
    over_rows(B, 4 * H, [&](int64_t b0, int64_t b1, int thread) {
      S* own = accs + thread * A;
      ln_backward_step<S, Q>(dho, dco, dr, a, x, cp, g_x, g_h, g_c, dc_carry.data_ptr<S>(), dx, dg, own,
                             own + 4 * H, own + 8 * H, own + 12 * H, own + 13 * H, tmps + thread * 10 * H, b0, b1,
                             H);
    });
    dh_rec = back(dgh[t]).contiguous();  // (B, H)
  }
  Tensor sums = acc.sum(0);
  Tensor dW = at::mm(dgh.view({T * B, 4 * H}).t(), h_low.narrow(0, 0, T).reshape({T * B, H}));  // (4H, H)
  return {dux, dW, sums.narrow(0, 0, 4 * H).clone(), sums.narrow(0, 4 * H, 4 * H).clone(),
          sums.narrow(0, 8 * H, 4 * H).clone(), sums.narrow(0, 12 * H, H).clone(), sums.narrow(0, 13 * H, H).clone(),
          dh_rec.to(c.scalar_type()), dc_carry};
}

// params: γ_x, β_x, γ_h (4H,), γ_c, β_c (H,), in the states' dtype
std::tuple<Tensor, Tensor, Tensor, std::vector<Tensor>> layernorm_lstm_forward(
    const Tensor& ux, const Tensor& W, at::TensorList params, const Tensor& h0, const Tensor& c0, double eps,
    bool onednn) {
  check("layernorm_lstm_loop", ux, W, h0, 4);
  const int64_t H = W.size(1);
  TORCH_CHECK(params.size() == 5, "layernorm_lstm_loop: expected γ_x, β_x, γ_h, γ_c and β_c, got ", params.size(),
              " tensors");
  const int64_t sizes[5] = {4 * H, 4 * H, 4 * H, H, H};
  std::vector<Tensor> ps;
  for (int k = 0; k < 5; ++k) {
    TORCH_CHECK(params[k].scalar_type() == h0.scalar_type() && params[k].numel() == sizes[k],
                "layernorm_lstm_loop: γ_x, β_x, γ_h must be (4H,) and γ_c, β_c (H,), in the states' dtype ",
                h0.scalar_type(), "; parameter ", k, " is ", params[k].sizes(), " ", params[k].scalar_type());
    ps.push_back(params[k].contiguous());
  }
  TORCH_CHECK(c0.sizes() == h0.sizes() && c0.scalar_type() == h0.scalar_type(),
              "layernorm_lstm_loop: c0 must be like h0");
  Tensor x = ux.contiguous(), h = h0.contiguous(), c = c0.contiguous();
  if (h0.scalar_type() == at::kDouble) return ln_forward_loop<double, double>(x, W, ps, h, c, eps, onednn);
  if (W.scalar_type() == at::kBFloat16) return ln_forward_loop<float, c10::BFloat16>(x, W, ps, h, c, eps, onednn);
  return ln_forward_loop<float, float>(x, W, ps, h, c, eps, onednn);
}

std::vector<Tensor> layernorm_lstm_backward(const Tensor& dh, const Tensor& dc, const Tensor& W, const Tensor& ux,
                                            at::TensorList params, const Tensor& c, const Tensor& h_low,
                                            at::TensorList act, bool onednn) {
  Tensor dh_ = dh.contiguous(), dc_ = dc.contiguous(), x = ux.contiguous();
  std::vector<Tensor> ps;
  for (const Tensor& p : params) ps.push_back(p.contiguous());
  if (c.scalar_type() == at::kDouble)
    return ln_backward_loop<double, double>(dh_, dc_, W, x, ps, c, h_low, act, onednn);
  if (W.scalar_type() == at::kBFloat16)
    return ln_backward_loop<float, c10::BFloat16>(dh_, dc_, W, x, ps, c, h_low, act, onednn);
  return ln_backward_loop<float, float>(dh_, dc_, W, x, ps, c, h_low, act, onednn);
}

// --- minGRU / minLSTM (cells/mingru.py): the scan h_t = (1 - z_t) h_{t-1} + z_t h̃_t, z = σ(k), h̃ = g(pre) ----------
// k and pre (T, B, H) come from the cell's _mix of its input projection (T, B, G), read in place through their
// strides (for minGRU they are the two halves of it). On a CPU the B·H lanes already fill the vector units, so
// stepping over T does the least work of any order (a parallel scan pays on GPUs, where T is the only axis left to
// spread); the lanes are split over threads in tiles of one batch row, each running the whole of T.
//   forward   z = σ(k),  h̃ = pre + 0.5 if pre >= 0 else σ(pre),  h_t = (1 - z) h_{t-1} + z h̃
//   backward  g = dh_t + (1 - z_{t+1}) g_{t+1};  dk = g (h̃ - h_{t-1}) z (1 - z);  dpre = g z g'(pre),
//             g' = 1 if pre >= 0 else h̃ (1 - h̃);  dh0 = (1 - z_0) g_0
constexpr int64_t SCAN_TILE = 256;  // lanes per task

// σ is computed for every lane and then selected: written as `pre >= 0 ? pre + 0.5 : σ(pre)`, g++ computes σ under a
// mask, and that loop ran 6× slower (4.05 against 0.71 ns an element, AVX-512, Sapphire Rapids)
template <typename S>
[[gnu::always_inline]] inline S g_of(S pre) {
  const S s = sigmoid<S>(pre);
  return pre >= S(0) ? pre + S(0.5) : s;
}

// A (T, B, H) operand with unit stride over H: element (t, b, j) at p[t * st + b * sb + j].
template <typename S>
struct Lanes {
  S* p;
  int64_t st, sb;
  S* row(int64_t t, int64_t b) const { return p + t * st + b * sb; }
};

template <typename S>
Lanes<S> lanes(const Tensor& x) {
  return {x.data_ptr<std::remove_const_t<S>>(), x.stride(0), x.stride(1)};
}

// Each step reads one short row (a tile) of each operand, a whole row of the (T, B, G) projection apart: too far
// for the hardware prefetcher. Rows AHEAD steps on are fetched by hand: the forward at T=4096 B=8 H=256 went from
// 37 to 26 ms (the backward, reading more streams at once, from 30 to 28).
constexpr int64_t AHEAD = 4;
template <typename S>
[[gnu::always_inline]] inline void prefetch_rows(std::initializer_list<const S*> rows, int64_t j0, int64_t j1) {
  for (const S* r : rows)
    for (int64_t j = j0; j < j1; j += 64 / sizeof(S)) __builtin_prefetch(r + j);
}

// Runs body(b, j0, j1) over tiles of the (B, H) lanes, split over threads.
template <typename F>
void for_tiles(int64_t B, int64_t H, F body) {
  const int64_t per_row = (H + SCAN_TILE - 1) / SCAN_TILE;
  at::parallel_for(0, B * per_row, 1, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n) {
      const int64_t b = n / per_row, j0 = (n % per_row) * SCAN_TILE;
      body(b, j0, std::min(H, j0 + SCAN_TILE));
    }
  });
}

template <typename S>
void min_scan_lanes(Lanes<const S> k, Lanes<const S> pre, const S* h0, Lanes<S> h, int64_t T, int64_t b, int64_t j0,
                    int64_t j1) {
  for (int64_t t = 0; t < T; ++t) {
    const S* prev = t ? h.row(t - 1, b) : h0 + b * h.sb;  // h0 (B, H) is contiguous, like h's rows
    const S *kt = k.row(t, b), *pt = pre.row(t, b);
    S* ht = h.row(t, b);
    if (t + AHEAD < T) prefetch_rows<S>({k.row(t + AHEAD, b), pre.row(t + AHEAD, b)}, j0, j1);
    // ivdep: no output aliases an input. g++ does not take block-scope restrict, and the alias checks it would
    // otherwise need exceed its limit of 10, so without this the backward loop stayed scalar
#pragma GCC ivdep
    for (int64_t j = j0; j < j1; ++j) {
      const S z = sigmoid<S>(kt[j]);
      ht[j] = (S(1) - z) * prev[j] + z * g_of<S>(pt[j]);
    }
  }
}

template <typename S>
void min_scan_back_lanes(Lanes<const S> dh, Lanes<const S> k, Lanes<const S> pre, Lanes<const S> h, const S* h0,
                         Lanes<S> dk, Lanes<S> dpre, S* dh0, int64_t T, int64_t b, int64_t j0, int64_t j1) {
  S* carry = dh0 + b * h.sb;  // (1 - z_{t+1}) g_{t+1}, by lane; dh0 once t = 0 is done
  for (int64_t j = j0; j < j1; ++j) carry[j] = S(0);
  for (int64_t t = T - 1; t >= 0; --t) {
    const S* prev = t ? h.row(t - 1, b) : h0 + b * h.sb;
    const S *kt = k.row(t, b), *pt = pre.row(t, b), *dht = dh.row(t, b);
    S *dkt = dk.row(t, b), *dpt = dpre.row(t, b);
    if (t >= AHEAD + 1)
      prefetch_rows<S>({k.row(t - AHEAD, b), pre.row(t - AHEAD, b), dh.row(t - AHEAD, b), h.row(t - AHEAD - 1, b)},
                       j0, j1);
#pragma GCC ivdep  // as in min_scan_lanes
    for (int64_t j = j0; j < j1; ++j) {
      const S z = sigmoid<S>(kt[j]), p = pt[j], ht = g_of<S>(p);
      const S gi = dht[j] + carry[j];
      dkt[j] = gi * (ht - prev[j]) * z * (S(1) - z);
      dpt[j] = gi * z * (p >= S(0) ? S(1) : ht * (S(1) - ht));
      carry[j] = gi * (S(1) - z);
    }
  }
}

bool unit_lanes(const Tensor& x) { return x.dim() == 3 && x.stride(2) == 1; }

// k, pre (T, B, H), any strides with unit stride over H; h0 (B, H) -> h (T, B, H)
Tensor min_scan_forward(const Tensor& k_, const Tensor& pre_, const Tensor& h0_) {
  TORCH_CHECK(k_.dim() == 3 && k_.sizes() == pre_.sizes() && h0_.dim() == 2 && h0_.sizes() == k_.sizes().slice(1) &&
              k_.scalar_type() == pre_.scalar_type() && k_.scalar_type() == h0_.scalar_type(),
              "min_scan: k and pre (T, B, H), h0 (B, H), one dtype");
  const Tensor k = unit_lanes(k_) ? k_ : k_.contiguous(), pre = unit_lanes(pre_) ? pre_ : pre_.contiguous(),
               h0 = h0_.contiguous();
  Tensor h = at::empty(k.sizes(), k.options());
  const int64_t T = k.size(0), B = k.size(1), H = k.size(2);
  AT_DISPATCH_FLOATING_TYPES(k.scalar_type(), "min_scan_forward", [&] {
    using S = scalar_t;
    for_tiles(B, H, [&](int64_t b, int64_t j0, int64_t j1) {
      min_scan_lanes<S>(lanes<const S>(k), lanes<const S>(pre), h0.data_ptr<S>(), lanes<S>(h), T, b, j0, j1);
    });
  });
  return h;
}

// dh, k, pre, h (T, B, H), h0 (B, H); dk and dpre (T, B, H) written in place (any strides with unit stride over H,
// such as the halves of a cell's dgx) -> dh0 (B, H)
Tensor min_scan_backward(const Tensor& dh_, const Tensor& k_, const Tensor& pre_, const Tensor& h_,
                         const Tensor& h0_, Tensor dk, Tensor dpre) {
  TORCH_CHECK(dh_.sizes() == k_.sizes() && h_.sizes() == k_.sizes() && pre_.sizes() == k_.sizes() &&
              dk.sizes() == k_.sizes() && dpre.sizes() == k_.sizes() && h0_.sizes() == k_.sizes().slice(1) &&
              dh_.scalar_type() == k_.scalar_type() && dk.scalar_type() == k_.scalar_type() &&
              dpre.scalar_type() == k_.scalar_type() && unit_lanes(dk) && unit_lanes(dpre),
              "min_scan: dh, pre, h, dk, dpre like k (T, B, H), dk and dpre with unit stride over H; h0 (B, H)");
  const Tensor dh = dh_.contiguous(), k = unit_lanes(k_) ? k_ : k_.contiguous(),
               pre = unit_lanes(pre_) ? pre_ : pre_.contiguous(), h = h_.contiguous(), h0 = h0_.contiguous();
  Tensor dh0 = at::empty_like(h0);
  const int64_t T = k.size(0), B = k.size(1), H = k.size(2);
  AT_DISPATCH_FLOATING_TYPES(k.scalar_type(), "min_scan_backward", [&] {
    using S = scalar_t;
    for_tiles(B, H, [&](int64_t b, int64_t j0, int64_t j1) {
      min_scan_back_lanes<S>(lanes<const S>(dh), lanes<const S>(k), lanes<const S>(pre), lanes<const S>(h),
                             h0.data_ptr<S>(), lanes<S>(dk), lanes<S>(dpre), dh0.data_ptr<S>(), T, b, j0, j1);
    });
  });
  return dh0;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(recurrent_native, m) {
  m.def("gru_forward(Tensor gx, Tensor W, Tensor b_ih, Tensor b_hh, Tensor h0, bool onednn) "
        "-> (Tensor, Tensor, Tensor[])");
  m.def("gru_backward(Tensor dh, Tensor W, Tensor h, Tensor h_low, Tensor[] act, bool onednn) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("layernorm_lstm_forward(Tensor ux, Tensor W, Tensor[] params, Tensor h0, Tensor c0, float eps, "
        "bool onednn) -> (Tensor, Tensor, Tensor, Tensor[])");
  m.def("layernorm_lstm_backward(Tensor dh, Tensor dc, Tensor W, Tensor ux, Tensor[] params, Tensor c, "
        "Tensor h_low, Tensor[] act, bool onednn) -> Tensor[]");
  m.def("min_scan_forward(Tensor k, Tensor pre, Tensor h0) -> Tensor");
  m.def("min_scan_backward(Tensor dh, Tensor k, Tensor pre, Tensor h, Tensor h0, Tensor(a!) dk, Tensor(b!) dpre) -> Tensor");
}

TORCH_LIBRARY_IMPL(recurrent_native, CPU, m) {
  m.impl("gru_forward", gru_forward);
  m.impl("gru_backward", gru_backward);
  m.impl("layernorm_lstm_forward", layernorm_lstm_forward);
  m.impl("layernorm_lstm_backward", layernorm_lstm_backward);
  m.impl("min_scan_forward", min_scan_forward);
  m.impl("min_scan_backward", min_scan_backward);
}
