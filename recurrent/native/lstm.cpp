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
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>

namespace {

using at::Tensor;

// exp for the float path, branch-free so that g++ vectorises the gate loops (libm's expf is a call per
// element). x = n ln2 + r with |r| <= ln2/2 (ln2 split in two, Cody & Waite), then a degree-7 Taylor
// polynomial (truncation error < 2e-8) and 2^n built in the exponent bits.
inline float exp_(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  float n = std::floor(x * 1.44269504f + 0.5f);
  float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.f / 720 + r * (1.f / 5040);
  p = 1.f / 24 + r * (1.f / 120 + r * p);
  p = 1.f + r * (1.f + r * (0.5f + r * (1.f / 6 + r * p)));
  int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}
inline double exp_(double x) { return std::exp(x); }

template <typename S> inline S sigmoid(S x) { return S(1) / (S(1) + exp_(-x)); }
template <typename S> inline S tanh_(S x) { return S(1) - S(2) / (S(1) + exp_(S(2) * x)); }
template <> inline double tanh_(double x) { return std::tanh(x); }

// bfloat16 travels as its bits (uint16_t): g++ vectorises loads of those, not of the c10::BFloat16 struct
template <typename S> inline S load(S v) { return v; }
inline float load(uint16_t v) {
  uint32_t bits = uint32_t(v) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}
template <typename P, typename S> inline P store(S v) { return P(v); }
template <> inline uint16_t store<uint16_t, float>(float v) {  // round to nearest even, as c10::BFloat16
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  return v != v ? uint16_t(0x7FC0) : uint16_t((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16);
}
template <typename P> struct Bits { using type = P; };
template <> struct Bits<c10::BFloat16> { using type = uint16_t; };
template <typename P> typename Bits<P>::type* bits(const Tensor& x) {
  return reinterpret_cast<typename Bits<P>::type*>(x.data_ptr<P>());
}

// --- products: y (B, N) = x (B, K) Wᵀ for a W (N, K) fixed over the loop ------------------------------

Tensor call(const c10::OperatorHandle& op, std::vector<c10::IValue> stack) {
  op.callBoxed(&stack);
  return stack[0].toTensor();
}

const c10::OperatorHandle* onednn_op(const char* name) {  // nullptr where torch was built without oneDNN
  auto op = c10::Dispatcher::singleton().findSchema({name, ""});
  return op ? new c10::OperatorHandle(*op) : nullptr;  // looked up once; lives as long as the process
}

// The same calls as kernels.linear in Python: W packed once per loop, then one oneDNN product per step
// (about 15% faster than at::mm in bfloat16 at (32, 512) x (512, 2048)); at::mm for float64.
struct Product {
  static inline const c10::OperatorHandle* reorder = onednn_op("mkldnn::_reorder_linear_weight");
  static inline const c10::OperatorHandle* linear = onednn_op("mkldnn::_linear_pointwise");
  Tensor W, packed;  // W (N, K); packed: oneDNN's layout of W for a batch of B rows, when available

  Product(const Tensor& W_, int64_t B) : W(W_.contiguous()) {
    if (at::hasMKLDNN() && reorder && linear && W.scalar_type() != at::kDouble)
      packed = call(*reorder, {W, c10::IValue(B)});
  }

  Tensor operator()(const Tensor& x) const {  // x (B, K) -> (B, N), in W's dtype
    if (!packed.defined()) return at::mm(x, W.t());
    return call(*linear, {x, packed, c10::IValue(), std::string("none"),
                          c10::List<std::optional<at::Scalar>>(), c10::IValue()});
  }
};

// --- one step's pointwise part, over every (b, j) ---------------------------------------------------

template <typename S, typename Q>  // Q: how the product dtype is stored (Bits<P>)
void forward_step(const Q* __restrict__ gx, const Q* __restrict__ gh, const S* __restrict__ bias,
                  const S* __restrict__ c_prev, S* __restrict__ act, S* __restrict__ c, S* __restrict__ h,
                  Q* __restrict__ h_low, int64_t B, int64_t H) {
  const int64_t G = 4 * H;
  for (int64_t b = 0; b < B; ++b) {
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
                   S* __restrict__ dc_carry, Q* __restrict__ dG, S* __restrict__ db, int64_t B, int64_t H) {
  const int64_t G = 4 * H;
  for (int64_t b = 0; b < B; ++b) {
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
// in S. act is one tensor per step because a (T, B, G) block is 32 MiB at the benchmark's size, and glibc gives
// blocks that large fresh pages from the kernel on every call: the page faults cost about 20 ms per layer there,
// half as much as the loop's 128 products.
template <typename S, typename P>
std::tuple<Tensor, Tensor, Tensor, std::vector<Tensor>> forward_loop(const Tensor& gx, const Tensor& W,
                                                                     const Tensor& bias, const Tensor& h0,
                                                                     const Tensor& c0) {
  const int64_t T = gx.size(0), B = gx.size(1), H = W.size(1);
  auto opt = h0.options();
  Tensor h = at::empty({T + 1, B, H}, opt), c = at::empty({T + 1, B, H}, opt);
  std::vector<Tensor> act;
  Tensor h_low = std::is_same_v<S, P> ? h : at::empty({T + 1, B, H}, W.options());
  h[0].copy_(h0), c[0].copy_(c0), h_low[0].copy_(h0);
  using Q = typename Bits<P>::type;
  Product recur(W, B);
  const S* b = bias.data_ptr<S>();
  for (int64_t t = 0; t < T; ++t) {
    Tensor gh = recur(h_low[t]).contiguous();  // (B, G)
    act.push_back(at::empty({B, 4 * H}, opt));
    forward_step<S, Q>(bits<P>(gx[t]), bits<P>(gh), b, c[t].data_ptr<S>(), act[t].data_ptr<S>(),
                       c[t + 1].data_ptr<S>(), h[t + 1].data_ptr<S>(),
                       bits<P>(h_low[t + 1]), B, H);
  }
  return {h, c, h_low, act};
}

// dh, dc (T, B, H): gradients from outside at every step -> dgx (T, B, G) in P, dW (G, H) in P, db (G,) in S,
// dh0, dc0 (B, H) in S
template <typename S, typename P>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> backward_loop(const Tensor& dh, const Tensor& dc, const Tensor& W,
                                                                const Tensor& c, const Tensor& h_low,
                                                                at::TensorList act) {
  const int64_t T = dh.size(0), B = dh.size(1), H = W.size(1);
  auto opt = c.options();
  Tensor dG = at::empty({T, B, 4 * H}, W.options());
  Tensor db = at::zeros({4 * H}, opt), dc_carry = at::zeros({B, H}, opt);
  Tensor dh_rec = at::zeros({B, H}, W.options());  // dG_{t+1} W: nothing after the last step
  using Q = typename Bits<P>::type;
  Product back(W.t(), B);
  for (int64_t t = T - 1; t >= 0; --t) {
    backward_step<S, Q>(dh[t].data_ptr<S>(), dc[t].data_ptr<S>(), bits<P>(dh_rec), act[t].data_ptr<S>(),
                        c[t].data_ptr<S>(), c[t + 1].data_ptr<S>(), dc_carry.data_ptr<S>(), bits<P>(dG[t]),
                        db.data_ptr<S>(), B, H);
    dh_rec = back(dG[t]).contiguous();  // (B, H)
  }
  Tensor dW = at::mm(dG.view({T * B, 4 * H}).t(), h_low.narrow(0, 0, T).reshape({T * B, H}));  // (G, H)
  return {dG, dW, db, dh_rec.to(c.scalar_type()), dc_carry};
}

std::tuple<Tensor, Tensor, Tensor, std::vector<Tensor>> lstm_forward(const Tensor& gx, const Tensor& W,
                                                                     const Tensor& bias, const Tensor& h0,
                                                                     const Tensor& c0) {
  check(gx, W, h0);
  Tensor x = gx.contiguous(), b = bias.contiguous(), h = h0.contiguous(), c = c0.contiguous();
  if (h0.scalar_type() == at::kDouble) return forward_loop<double, double>(x, W, b, h, c);
  if (W.scalar_type() == at::kBFloat16) return forward_loop<float, c10::BFloat16>(x, W, b, h, c);
  return forward_loop<float, float>(x, W, b, h, c);
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> lstm_backward(const Tensor& dh, const Tensor& dc, const Tensor& W,
                                                                const Tensor& c, const Tensor& h_low,
                                                                at::TensorList act) {
  Tensor dh_ = dh.contiguous(), dc_ = dc.contiguous();
  if (c.scalar_type() == at::kDouble) return backward_loop<double, double>(dh_, dc_, W, c, h_low, act);
  if (W.scalar_type() == at::kBFloat16) return backward_loop<float, c10::BFloat16>(dh_, dc_, W, c, h_low, act);
  return backward_loop<float, float>(dh_, dc_, W, c, h_low, act);
}

}  // namespace

TORCH_LIBRARY(recurrent_native, m) {
  m.def("lstm_forward(Tensor gx, Tensor W, Tensor bias, Tensor h0, Tensor c0) -> (Tensor, Tensor, Tensor, Tensor[])");
  m.def("lstm_backward(Tensor dh, Tensor dc, Tensor W, Tensor c, Tensor h_low, Tensor[] act) "
        "-> (Tensor, Tensor, Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(recurrent_native, CPU, m) {
  m.impl("lstm_forward", lstm_forward);
  m.impl("lstm_backward", lstm_backward);
}
