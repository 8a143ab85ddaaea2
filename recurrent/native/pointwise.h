// The pointwise math every native loop shares, free of torch's headers: lstm.cpp and gru.cpp (through
// common.h) and the C that recurrent/traced.py writes for a user's cell include it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
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
