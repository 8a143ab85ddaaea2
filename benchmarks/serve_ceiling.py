"""The most continuous batching can give on this machine, with no server at all: the 2x512 char LSTM's step at
batch 1 (what a one-at-a-time server runs per token) against batch B, in tokens per second.

Three rates per batch size and precision, all in one process:
- `stepper`: the model's own `Stepper.step` (what `recurrent serve`'s engine calls between tokens);
- `products`: only the step's matrix products, each a single torch.matmul on ready operands: layer 0's W_hh h
  (its input comes from a table row), layer 1's [x, h] [U W]^T and the decoder. No gates, no sampling, no Python
  between them: no real step can be faster, so `products` at batch B over `stepper` at batch 1 bounds what any
  batching server can reach against one-at-a-time here (the issue's target is 5x at 32 clients).
- the ratio of each to the batch-1 stepper;
- `peak`: the same products at batch 1024 (--peak-batch), in GFLOP/s and as the tokens/s a step would reach at
  that rate: about the most plain torch.matmul gets from this CPU (not a strict bound: pre-packed oneDNN weights,
  as the stepper's Python path has, can beat it in float32).

    python benchmarks/serve_ceiling.py                   # batch 1, 8, 32, 64; fp32 and bf16 products
    python benchmarks/serve_ceiling.py --batches 1,32 --seconds 2
"""
import time

import torch
from common import parser

from recurrent.models.lm import LanguageModel, LMConfig


def rate(fn, batch: int, seconds: float) -> float:
    """Tokens per second of `fn()` stepping `batch` rows: the best of three timed stretches after a warm-up."""
    for _ in range(20):
        fn()
    best = 0.0
    for _ in range(3):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / 3:
            fn()
            n += 1
        best = max(best, n * batch / (time.perf_counter() - start))
    return best


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--batches", default="1,8,32,64")
    p.add_argument("--hidden-size", type=int, default=512)
    p.add_argument("--vocab", type=int, default=65)
    p.add_argument("--seconds", type=float, default=3.0, help="timed seconds per figure")
    p.add_argument("--peak-batch", type=int, default=1024, help="rows of the products' peak rate")
    args = p.parse_args()
    H, V = args.hidden_size, args.vocab
    torch.manual_seed(0)
    model = LanguageModel(LMConfig(vocab_size=V, hidden_size=H, num_layers=2)).eval()
    batches = [int(b) for b in args.batches.split(",")]
    rows, peaks = [], {}
    flops = 2 * (H * 4 * H + 2 * H * 4 * H + H * V)  # multiply-adds x 2 per token: the three products
    with torch.inference_mode():
        for dtype in (torch.float32, torch.bfloat16):
            stepper = model.stepper(None if dtype is torch.float32 else dtype)
            W0, W1, D = (torch.randn(H, 4 * H, dtype=dtype), torch.randn(2 * H, 4 * H, dtype=dtype),
                         torch.randn(H, V, dtype=dtype))
            base = None
            for B in batches:
                token = torch.randint(V, (B,))
                states = stepper.initial_states(B)
                step_rate = rate(lambda: stepper.step(token, states), B, args.seconds)
                h, xh = torch.randn(B, H, dtype=dtype), torch.randn(B, 2 * H, dtype=dtype)
                product_rate = rate(lambda: (h @ W0, xh @ W1, h @ D), B, args.seconds)
                base = base or step_rate
                rows.append((str(dtype).removeprefix("torch."), B, step_rate, product_rate, base))
            B = args.peak_batch
            h, xh = torch.randn(B, H, dtype=dtype), torch.randn(B, 2 * H, dtype=dtype)
            peak = rate(lambda: (h @ W0, xh @ W1, h @ D), B, args.seconds)
            peaks[str(dtype).removeprefix("torch.")] = (peak, base)
    print(f"2x{H} char LSTM (V={V}), {torch.get_num_threads()} threads: tokens/s of one step for every row")
    print(f"{'products':<9} {'batch':>5} {'stepper':>9} {'x B=1':>6} {'products':>9} {'x B=1':>6}")
    for name, B, s, pr, base in rows:
        print(f"{name:<9} {B:>5} {s:>9.0f} {s / base:>5.1f}x {pr:>9.0f} {pr / base:>5.1f}x")
    print("x B=1: against the batch-1 stepper of the same precision (a one-at-a-time server's per-token step)")
    for name, (peak, base) in peaks.items():
        print(f"peak {name}: the products at batch {args.peak_batch} run at {peak * flops / 1e9:.0f} GFLOP/s, "
              f"{peak:.0f} tokens/s, {peak / base:.1f}x the batch-1 stepper")


if __name__ == "__main__":
    main()
