"""Check each built-in cell's hand-derived BPTT against autograd, in float64, on a padded batch.

Per cell: the gradients of the `bptt` and `autograd` backends w.r.t. every parameter, the input and
the initial state must agree, and torch.autograd.gradcheck must accept the bptt backward against
finite differences. Exits non-zero if anything disagrees.    Key: B batch, T time, I input, H hidden.
"""
import sys

import torch

import recurrent as rc

B, T, I, H = 3, 5, 3, 4
TOLERANCE = 1e-10  # float64: the two backends should differ only by rounding
CELLS = {
    "ElmanCell (tanh)": lambda: rc.ElmanCell(I, H, nonlinearity="tanh"),
    "ElmanCell (relu)": lambda: rc.ElmanCell(I, H, nonlinearity="relu"),
    "LSTMCell": lambda: rc.LSTMCell(I, H),
    "GRUCell": lambda: rc.GRUCell(I, H),
}


def check(cell: rc.Cell) -> tuple[float, bool]:
    x = torch.randn(B, T, I, dtype=torch.float64, requires_grad=True)
    state = cell.state_type(*(torch.randn(B, H, dtype=torch.float64, requires_grad=True)
                              for _ in cell.state_type._fields))  # every field (B, H)
    lengths = torch.tensor([T, T - 2, 1])  # padded: each final state is taken at its last valid step
    inputs = (x, *state, *cell.parameters())

    def run(backend: str) -> tuple[torch.Tensor, ...]:  # out (B, T, H), then each final state field (B, H)
        out, final = rc.unroll(cell, x, state, lengths, backend=backend)
        return (out, *final)

    weights = [torch.randn_like(o) for o in run("autograd")]  # one random weighting of every output
    grads = [torch.autograd.grad(sum((o * w).sum() for o, w in zip(run(b), weights)), inputs)
             for b in ("bptt", "autograd")]
    max_diff = max((g - r).abs().max().item() for g, r in zip(*grads))
    # gradcheck perturbs `inputs` in place; run() reads those very tensors
    passed = torch.autograd.gradcheck(lambda *args: run("bptt"), inputs, raise_exception=False)
    return max_diff, passed


def main() -> int:
    torch.manual_seed(0)
    print(f"{'cell':<16} | {'max |grad bptt - grad autograd|':>31} | gradcheck passed\n{'-' * 68}")
    ok = True
    for name, make_cell in CELLS.items():
        max_diff, passed = check(make_cell().double())
        ok &= passed and max_diff < TOLERANCE
        print(f"{name:<16} | {max_diff:>31.1e} | {'yes' if passed else 'no'}")
    print("all checks passed" if ok else f"FAILED: a gradcheck failed or a difference exceeded {TOLERANCE:g}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
