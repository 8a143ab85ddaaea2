// The pointwise math every native loop shares, free of torch's headers: lstm.cpp and gru.cpp (through
// common.h) and the C that recurrent/traced.py writes for a user's cell include it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#if defined(__SSE__)
#include <xmmintrin.h>
#endif

namespace recurrent_native {

// exp for the float path, branch-free so that g++ vectorises the gate loops (libm's expf is a call per
// element). x = n ln2 + r with |r| <= ln2/2 (ln2 split in two, Cody & Waite), then a degree-7 Taylor
// polynomial (truncation error < 2e-8) and 2^n built in the exponent bits. Always inlined: a loop with five
// calls (lstm_gates) passes g++'s inlining limits, and a call per element is not vectorised.
[[gnu::always_inline]] inline float exp_(float x) {
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

template <typename S> [[gnu::always_inline]] inline S sigmoid(S x) { return S(1) / (S(1) + exp_(-x)); }
template <typename S> [[gnu::always_inline]] inline S tanh_(S x) { return S(1) - S(2) / (S(1) + exp_(S(2) * x)); }
template <> inline double tanh_(double x) { return std::tanh(x); }

// log, log1p and erf for the float path, branch-free for the same reason as exp_ (libm's are a call per element:
// a user cell with gelu or softplus ran slower compiled than eager). log: x = m 2^e with m in [1/sqrt2, sqrt2),
// log x = e ln2 + 2 atanh(t), t = (m - 1) / (m + 1), |t| <= 0.172, the series to t^9 (error < 1e-9). log1p: log(u)
// (y / (u - 1)) with u = 1 + y, exact where u rounds to 1 (Goldberg). erf: Abramowitz & Stegun 7.1.26, absolute
// error below 1.5e-7, about 2 float32 ulps at 1. The double versions are libm's (the compiled step's float64
// check against autograd runs them).
[[gnu::always_inline]] inline float log_(float x) {
  int32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  int32_t e = ((bits >> 23) & 0xff) - 127;
  int32_t mantissa = (bits & 0x007fffff) | 0x3f800000;  // m in [1, 2)
  float m;
  std::memcpy(&m, &mantissa, sizeof m);
  const bool high = m > 1.41421356f;
  m = high ? 0.5f * m : m;
  e = high ? e + 1 : e;
  const float t = (m - 1.f) / (m + 1.f), t2 = t * t;
  const float series = t * (2.f + t2 * (2.f / 3 + t2 * (2.f / 5 + t2 * (2.f / 7 + t2 * (2.f / 9)))));
  const float r = static_cast<float>(e) * 0.693147180559945f + series;
  return x > 0.f ? (x < HUGE_VALF ? r : x) : (x == 0.f ? -HUGE_VALF : std::numeric_limits<float>::quiet_NaN());
}
inline double log_(double x) { return std::log(x); }

[[gnu::always_inline]] inline float log1p_(float y) {
  const float u = 1.f + y;
  return u == 1.f ? y : log_(u) * (y / (u - 1.f));
}
inline double log1p_(double y) { return std::log1p(y); }

[[gnu::always_inline]] inline float erf_(float x) {
  const float a = std::abs(x), t = 1.f / (1.f + 0.3275911f * a);
  const float poly = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f +
                                                                                       t * 1.061405429f))));
  const float y = 1.f - poly * exp_(-a * a);
  return x < 0.f ? -y : y;
}
inline double erf_(double x) { return std::erf(x); }

// Denormal inputs and results read and written as zero while it lives (x86: MXCSR's FTZ and DAZ bits), the
// caller's mode restored after. A denormal costs a microcode assist, ~100 cycles, and a gate's derivative
// s (1 - s) or a product of small gradients makes them often enough to slow a pointwise step 2-4x (a
// peephole LSTM's compiled step, B32 H512: 110 us with random inputs, 41 us with the bits set). Elsewhere
// (ARM) it does nothing.
class FlushDenormals {
#if defined(__SSE__)
  unsigned int saved_ = _mm_getcsr();

 public:
  FlushDenormals() { _mm_setcsr(saved_ | 0x8040); }
  ~FlushDenormals() { _mm_setcsr(saved_); }
  FlushDenormals(const FlushDenormals&) = delete;
  FlushDenormals& operator=(const FlushDenormals&) = delete;
#endif
};

}  // namespace recurrent_native
