"""Tiny Shakespeare char-level LM: validation loss (nats/char) after a wall-clock training budget.

Split as nanoGPT: first 90% train, last 10% valid. Targets on the 2-core CPU: <= 1.75 after 105 s and
<= 1.55 after 30 min. Evaluation runs once, after the budget (it is not counted in it).

    python benchmarks/shakespeare.py --budget 105
    python benchmarks/shakespeare.py --budget 1800 --hidden-size 512
"""
import json
import time
from pathlib import Path

from common import SHARED_DATA, add_precision_flags, parser
from recurrent.models import LMConfig
from recurrent.train import TrainLMConfig, train_lm
from recurrent.train.lm import lm_training

DATA = SHARED_DATA / "tinyshakespeare/input.txt"


def main():
    p = parser(__doc__)
    p.add_argument("--budget", type=float, default=105, help="training seconds")
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--cell", default="lstm")
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--num-layers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--bptt", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--dropout", type=float, default=0.0)
    add_precision_flags(p)
    p.add_argument("--out", default="runs/bench-shakespeare")
    args = p.parse_args()
    if not Path(args.data).is_file():
        raise SystemExit(f"{args.data} not found: the benchmark needs ../shared/data/tinyshakespeare")
    model = LMConfig(cell=args.cell, hidden_size=args.hidden_size, num_layers=args.num_layers,
                     dropout=args.dropout)
    config = TrainLMConfig(data=args.data, level="char", batch_size=args.batch_size, bptt=args.bptt, model=model,
                           training=lm_training(out=f"{args.out}-{int(args.budget)}s", overwrite=True, lr=args.lr,
                                                schedule="cosine", warmup_steps=50, clip=1.0, epochs=1000, eval_every=10**9,
                                                max_time=args.budget, precision=args.precision, progress=False))
    start = time.monotonic()
    run_dir = train_lm(config)
    wall = time.monotonic() - start
    last = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
    print("| budget (s) | model | precision | steps | val nats/char | wall incl. eval (s) |")
    print("|---:|---|---|---:|---:|---:|")
    print(f"| {args.budget:.0f} | {args.num_layers}x{args.hidden_size} {args.cell}, B={args.batch_size} "
          f"T={args.bptt}, lr {args.lr} | {args.precision} | {last['step']} | {last['val_loss']:.3f} | {wall:.0f} |")


if __name__ == "__main__":
    main()
