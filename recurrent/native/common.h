// What lstm.cpp and gru.cpp share: the pointwise math (exp_, sigmoid, tanh_), bfloat16 as bits (load, store, Bits),
// the products of a loop (Product), large buffers kept for reuse (pooled_empty), a step's rows split over torch's
// threads (over_rows), and the forward loop of a cell with states h and c (hc_forward_loop).
//
// pooled_empty (below): the loops' large buffers (states and activations for every step, the gradients of every
// step's pre-activations) are tens of MB per layer, allocated in every training step and freed after its backward.
// glibc hands such blocks back to the kernel on free (they are mmap'ed), so the next step's buffer is fresh pages
// again, a page fault per 4 KiB: on a virtual machine ~13 ms per 32 MB, a tenth of a LayerNorm LSTM layer's step.
// Freed blocks of at least MIN_BYTES go back to a pool instead (no more than were ever in use at once, and at most
// CAP_BYTES), and the next buffer of a size that fits (at most twice as large) takes one. A buffer's tensor is an
// ordinary CPU tensor (at::from_blob with a deleter that returns the block); one that outlives its step (an output
// kept) simply stays out of the pool.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include <pthread.h>

#include "pointwise.h"  // exp_, sigmoid, tanh_

namespace recurrent_native {

using at::Tensor;

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
// v rounded to the storage type Q and back (bfloat16's rounding; nothing for float or double)
template <typename S, typename Q> [[gnu::always_inline]] inline S as_q(S v) {
  if constexpr (std::is_same_v<S, Q>) return v; else return S(load(store<Q>(v)));
}
template <typename P> struct Bits { using type = P; };
template <> struct Bits<c10::BFloat16> { using type = uint16_t; };
template <typename P> typename Bits<P>::type* bits(const Tensor& x) {
  return reinterpret_cast<typename Bits<P>::type*>(x.data_ptr<P>());
}

// --- products: y (B, N) = x (B, K) Wᵀ for a W (N, K) fixed over the loop ------------------------------

inline Tensor call(const c10::OperatorHandle& op, std::vector<c10::IValue> stack) {
  op.callBoxed(&stack);
  return stack[0].toTensor();
}

inline const c10::OperatorHandle* onednn_op(const char* name) {  // nullptr where torch was built without oneDNN
  auto op = c10::Dispatcher::singleton().findSchema({name, ""});
  return op ? new c10::OperatorHandle(*op) : nullptr;  // looked up once; lives as long as the process
}

// The same calls as kernels.linear in Python: W packed once per loop, then one oneDNN product per step
// (about 15% faster than at::mm in bfloat16 at (32, 512) x (512, 2048)); at::mm for float64, and wherever
// Python says oneDNN does not run W's dtype (`onednn` false: its bfloat16 path needs AVX-512 or AVX-NE-CONVERT
// and throws elsewhere; at::mm then emulates bfloat16 through float32, slower but right).
struct Product {
  static inline const c10::OperatorHandle* reorder = onednn_op("mkldnn::_reorder_linear_weight");
  static inline const c10::OperatorHandle* linear = onednn_op("mkldnn::_linear_pointwise");
  Tensor W, packed;  // W (N, K); packed: oneDNN's layout of W for a batch of B rows, when used

  Product(const Tensor& W_, int64_t B, bool onednn) : W(W_.contiguous()) {
    if (onednn && at::hasMKLDNN() && reorder && linear && W.scalar_type() != at::kDouble)
      packed = call(*reorder, {W, c10::IValue(B)});
  }

  Tensor operator()(const Tensor& x) const {  // x (B, K) -> (B, N), in W's dtype
    if (!packed.defined()) return at::mm(x, W.t());
    return call(*linear, {x, packed, c10::IValue(), std::string("none"),
                          c10::List<std::optional<at::Scalar>>(), c10::IValue()});
  }
};

// --- buffers and threads ---------------------------------------------------------------------------------

class BlockPool {
 public:
  static constexpr size_t MIN_BYTES = size_t(1) << 20;  // smaller buffers come from malloc, which reuses them
  static constexpr size_t CAP_BYTES = size_t(1) << 30;  // free blocks kept, in all, at most
  static constexpr size_t ALIGN = 64;

  static BlockPool& get() {
    // A forked child starts a pool of its own: another thread of the parent may have held the lock at the fork.
    // The parent's blocks that the child's tensors hold are the child's copies, and go to the new pool when freed.
    // Made once (a thread-safe static); never destroyed: tensors may return blocks at process exit.
    static const bool made = (instance() = new BlockPool(),
                              pthread_atfork(nullptr, nullptr, [] { instance() = new BlockPool(); }), true);
    (void)made;
    return *instance();
  }

  // a block of at least `bytes` and its size: a free one of at most twice that, else a new one
  std::pair<void*, size_t> take(size_t bytes) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = free_.lower_bound(bytes);
    std::pair<void*, size_t> block;
    if (it != free_.end() && it->first <= 2 * bytes) {
      block = {it->second, it->first};
      free_bytes_ -= it->first;
      free_.erase(it);
    } else {
      const size_t size = (bytes + ALIGN - 1) / ALIGN * ALIGN;
      block = {std::aligned_alloc(ALIGN, size), size};
      TORCH_CHECK(block.first != nullptr, "recurrent native: out of memory allocating ", size, " bytes");
    }
    in_use_ += block.second;
    peak_ = std::max(peak_, in_use_);
    return block;
  }

  // Keeps at most as many free bytes as were ever in use at once (and CAP_BYTES): what the next step of the same
  // sizes takes again, and no more. Over that, the smallest blocks go first (the largest save the most faults).
  void give(void* p, size_t size) {
    std::lock_guard<std::mutex> lock(mutex_);
    in_use_ -= size;
    free_.emplace(size, p);
    free_bytes_ += size;
    while (free_bytes_ > std::min(peak_, CAP_BYTES)) {
      auto it = free_.begin();
      free_bytes_ -= it->first;
      std::free(it->second);
      free_.erase(it);
    }
  }

  // {free bytes kept, bytes in use, the most in use at once}: `recurrent info`, and the tests
  std::vector<int64_t> bytes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return {int64_t(free_bytes_), int64_t(in_use_), int64_t(peak_)};
  }

 private:
  static BlockPool*& instance() {
    static BlockPool* pool = nullptr;
    return pool;
  }

  std::mutex mutex_;
  std::multimap<size_t, void*> free_;  // size -> block
  size_t free_bytes_ = 0, in_use_ = 0, peak_ = 0;  // peak_: the most bytes handed out at once
};

// at::empty(sizes, options) for a CPU buffer, from the pool where it is large
inline at::Tensor pooled_empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
  int64_t n = 1;
  for (int64_t s : sizes) n *= s;
  const size_t bytes = size_t(n) * options.dtype().itemsize();
  if (bytes < BlockPool::MIN_BYTES || options.device().type() != at::kCPU) return at::empty(sizes, options);
  auto [p, size] = BlockPool::get().take(bytes);
  return at::from_blob(p, sizes, [size = size](void* q) { BlockPool::get().give(q, size); },
                       options.device(at::kCPU));
}

// Runs body(b0, b1, thread) over a step's rows [0, B), split over torch's threads where each share holds at least
// ROW_WORK values of `width` per row (below that, one thread: a parallel region costs a few microseconds). A step's
// rows are independent; what they sum (bias and γ gradients) goes into the thread's own accumulators, added up
// after the loop, so the result does not depend on the thread count beyond float rounding. Without OpenMP
// (recurrent/native/__init__.py) at::parallel_for runs serially.
constexpr int64_t ROW_WORK = 8192;
template <typename F>
void over_rows(int64_t B, int64_t width, F body) {
  at::parallel_for(0, B, std::max<int64_t>(1, ROW_WORK / std::max<int64_t>(width, 1)),
                   [&](int64_t b0, int64_t b1) { body(b0, b1, at::get_thread_num()); });
}

// --- the forward time loop of a cell with states h and c (lstm.cpp's LSTM, gru.cpp's LayerNorm LSTM) ----------

// gx (T, B, G) and W (G, H) in P, h0, c0 (B, H) in S -> h, c (T+1, B, H) in S with the initial state at t = 0,
// h_low (T+1, B, H) in P (h itself if P == S), act: T views (B, width) of one buffer in S. Each step: gh = h_{t-1}
// Wᵀ (one product), then step(x, r, c_prev, act, c, h, h_low, b0, b1) for rows b0..b1-1 of gx_t and gh, split over
// threads (over_rows).
template <typename S, typename P, typename Step>
std::tuple<Tensor, Tensor, Tensor, std::vector<Tensor>> hc_forward_loop(const Tensor& gx, const Tensor& W,
                                                                        const Tensor& h0, const Tensor& c0,
                                                                        int64_t width, bool onednn, Step step) {
  using Q = typename Bits<P>::type;
  const int64_t T = gx.size(0), B = gx.size(1), H = W.size(1);
  auto opt = h0.options();
  Tensor h = pooled_empty({T + 1, B, H}, opt), c = pooled_empty({T + 1, B, H}, opt);
  Tensor h_low = std::is_same_v<S, P> ? h : pooled_empty({T + 1, B, H}, W.options());
  h[0].copy_(h0), c[0].copy_(c0), h_low[0].copy_(h0);
  const Tensor acts = pooled_empty({T, B, width}, opt);  // one buffer: act[t] is a view of it
  std::vector<Tensor> act;
  Product recur(W, B, onednn);
  for (int64_t t = 0; t < T; ++t) {
    Tensor gh = recur(h_low[t]).contiguous();  // (B, G)
    act.push_back(acts[t]);
    const Q *x = bits<P>(gx[t]), *r = bits<P>(gh);
    const S* cp = c[t].data_ptr<S>();
    S *a = act[t].data_ptr<S>(), *cn = c[t + 1].data_ptr<S>(), *hn = h[t + 1].data_ptr<S>();
    Q* hl = bits<P>(h_low[t + 1]);
    over_rows(B, W.size(0), [&](int64_t b0, int64_t b1, int) { step(x, r, cp, a, cn, hn, hl, b0, b1); });
  }
  return {h, c, h_low, act};
}

}  // namespace recurrent_native
