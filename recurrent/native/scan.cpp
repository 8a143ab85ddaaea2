// The linear recurrence h_t = a_t ⊙ h_{t-1} + b_t over a whole sequence, forward and backward: the scan of minGRU
// and minLSTM (cells/mingru.py) on the CPU. Compiled into the same library as lstm.cpp (native/__init__.py SOURCES).
//
// Key: T time, N = B·H independent lanes. On a CPU the N lanes already fill the vector units, so stepping over T
// (each step one fused multiply-add per lane, vectorised by g++ under every instruction set's flags) does the
// least work of any order; a parallel scan pays on GPUs, where T is the only axis left to spread. The lanes are
// split over threads, each running the whole of T: no step waits for another thread.
//
//   forward   h_t = a_t h_{t-1} + b_t                      h_{-1} = h0
//   backward  g_t = dh_t + a_{t+1} g_{t+1}  (g_T = 0)       db_t = g_t,  da_t = g_t h_{t-1},  dh0 = a_0 g_0
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

using at::Tensor;

namespace {

constexpr int64_t GRAIN = 256;  // lanes per task: a thread's share stays long enough to vectorise

template <typename S>
void forward_lanes(const S* a, const S* b, const S* h0, S* h, int64_t T, int64_t N, int64_t i0, int64_t i1) {
  for (int64_t t = 0; t < T; ++t) {
    const S* at = a + t * N;
    const S* bt = b + t * N;
    const S* prev = t ? h + (t - 1) * N : h0;
    S* ht = h + t * N;
    for (int64_t i = i0; i < i1; ++i) ht[i] = at[i] * prev[i] + bt[i];
  }
}

template <typename S>
void backward_lanes(const S* dh, const S* a, const S* h, const S* h0, S* da, S* db, S* dh0, int64_t T, int64_t N,
                    int64_t i0, int64_t i1) {
  std::vector<S> g(i1 - i0, S(0));  // a_{t+1} g_{t+1}, carried down the steps
  for (int64_t t = T - 1; t >= 0; --t) {
    const S* dht = dh + t * N;
    const S* at = a + t * N;
    const S* prev = t ? h + (t - 1) * N : h0;
    S* dat = da + t * N;
    S* dbt = db + t * N;
    for (int64_t i = i0; i < i1; ++i) {
      const S gi = dht[i] + g[i - i0];
      dbt[i] = gi;
      dat[i] = gi * prev[i];
      g[i - i0] = gi * at[i];
    }
  }
  for (int64_t i = i0; i < i1; ++i) dh0[i] = g[i - i0];
}

void check(const Tensor& a, const Tensor& b, const Tensor& h0) {
  TORCH_CHECK(a.dim() == 2 && a.sizes() == b.sizes() && h0.dim() == 1 && h0.size(0) == a.size(1),
              "linear_scan: a and b (T, N), h0 (N,)");
  TORCH_CHECK(a.scalar_type() == b.scalar_type() && a.scalar_type() == h0.scalar_type(),
              "linear_scan: a, b and h0 of one dtype");
}

}  // namespace

// a, b (T, N), h0 (N,) -> h (T, N)
Tensor linear_scan_forward(const Tensor& a_, const Tensor& b_, const Tensor& h0_) {
  check(a_, b_, h0_);
  const Tensor a = a_.contiguous(), b = b_.contiguous(), h0 = h0_.contiguous();
  Tensor h = at::empty_like(a);
  const int64_t T = a.size(0), N = a.size(1);
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "linear_scan_forward", [&] {
    at::parallel_for(0, N, GRAIN, [&](int64_t i0, int64_t i1) {
      forward_lanes<scalar_t>(a.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(), h0.data_ptr<scalar_t>(),
                              h.data_ptr<scalar_t>(), T, N, i0, i1);
    });
  });
  return h;
}

// dh, a, h (T, N), h0 (N,) -> (da, db (T, N), dh0 (N,))
std::tuple<Tensor, Tensor, Tensor> linear_scan_backward(const Tensor& dh_, const Tensor& a_, const Tensor& h_,
                                                        const Tensor& h0_) {
  check(a_, h_, h0_);
  TORCH_CHECK(dh_.sizes() == a_.sizes() && dh_.scalar_type() == a_.scalar_type(), "linear_scan: dh like a");
  const Tensor dh = dh_.contiguous(), a = a_.contiguous(), h = h_.contiguous(), h0 = h0_.contiguous();
  Tensor da = at::empty_like(a), db = at::empty_like(a), dh0 = at::empty_like(h0);
  const int64_t T = a.size(0), N = a.size(1);
  AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "linear_scan_backward", [&] {
    at::parallel_for(0, N, GRAIN, [&](int64_t i0, int64_t i1) {
      backward_lanes<scalar_t>(dh.data_ptr<scalar_t>(), a.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(),
                               h0.data_ptr<scalar_t>(), da.data_ptr<scalar_t>(), db.data_ptr<scalar_t>(),
                               dh0.data_ptr<scalar_t>(), T, N, i0, i1);
    });
  });
  return {da, db, dh0};
}

TORCH_LIBRARY_FRAGMENT(recurrent_native, m) {
  m.def("linear_scan_forward(Tensor a, Tensor b, Tensor h0) -> Tensor");
  m.def("linear_scan_backward(Tensor dh, Tensor a, Tensor h, Tensor h0) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(recurrent_native, CPU, m) {
  m.impl("linear_scan_forward", linear_scan_forward);
  m.impl("linear_scan_backward", linear_scan_backward);
}
