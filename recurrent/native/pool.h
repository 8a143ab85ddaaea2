// What lstm.cpp and gru.cpp share: large buffers kept for reuse, and a step's rows split over torch's threads.
//
// pooled_empty: the loops' large buffers (states and activations for every step, the gradients of every step's
// pre-activations) are tens of MB per layer, allocated in every training step and freed after its backward.
// glibc hands such blocks back to the kernel on free (they are mmap'ed), so the next step's buffer is fresh pages
// again, a page fault per 4 KiB: on a virtual machine ~13 ms per 32 MB, a tenth of a LayerNorm LSTM layer's step.
// Freed blocks of at least MIN_BYTES go back to a pool instead, up to CAP_BYTES in all, and the next buffer of a
// size that fits (at most twice as large) takes one. A buffer's tensor is an ordinary CPU tensor (at::from_blob
// with a deleter that returns the block); one that outlives its step (an output kept) simply stays out of the pool.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>

namespace recurrent_native {

class BlockPool {
 public:
  static constexpr size_t MIN_BYTES = size_t(1) << 20;  // smaller buffers come from malloc, which reuses them
  static constexpr size_t CAP_BYTES = size_t(1) << 30;  // free blocks kept, in all
  static constexpr size_t ALIGN = 64;

  static BlockPool& get() {
    static BlockPool* pool = new BlockPool();  // never destroyed: tensors may return blocks at process exit
    return *pool;
  }

  // a block of at least `bytes` and its size: a free one of at most twice that, else a new one
  std::pair<void*, size_t> take(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = free_.lower_bound(bytes);
      if (it != free_.end() && it->first <= 2 * bytes) {
        std::pair<void*, size_t> block{it->second, it->first};
        free_bytes_ -= it->first;
        free_.erase(it);
        return block;
      }
    }
    const size_t size = (bytes + ALIGN - 1) / ALIGN * ALIGN;
    void* p = std::aligned_alloc(ALIGN, size);
    TORCH_CHECK(p != nullptr, "recurrent native: out of memory allocating ", size, " bytes");
    return {p, size};
  }

  void give(void* p, size_t size) {
    std::lock_guard<std::mutex> lock(mutex_);
    free_.emplace(size, p);
    free_bytes_ += size;
    while (free_bytes_ > CAP_BYTES) {  // over the cap: the smallest blocks go first (the largest save the most)
      auto it = free_.begin();
      free_bytes_ -= it->first;
      std::free(it->second);
      free_.erase(it);
    }
  }

 private:
  std::mutex mutex_;
  std::multimap<size_t, void*> free_;  // size -> block
  size_t free_bytes_ = 0;
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

}  // namespace recurrent_native
