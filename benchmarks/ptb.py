"""Penn Treebank word-level LM: test perplexity of the published configurations.

    python benchmarks/ptb.py --config zaremba-small     # Zaremba et al. 2014 small: 2x200, no dropout,
                                                        # 13 epochs, SGD lr 1 halved from epoch 5, clip 5,
                                                        # batch 20, BPTT 20 (lr and clip for a loss summed
                                                        # over the window: see CONFIGS). Paper: 114.5 test.
    python benchmarks/ptb.py --config tied-variational  # 2x200, variational dropout, tied weights. Target <= 90
                                                        # within 60 minutes of CPU time.
"""
import argparse
import time
from pathlib import Path

from recurrent.data import read_text
from recurrent.models import LMConfig
from recurrent.train import TrainLMConfig, train_lm
from recurrent.train.loop import flat_replace
from recurrent.inference.lm import load_lm

DATA = Path(__file__).resolve().parents[1].parent / "shared/data/ptb"

CONFIGS = {
    # Zaremba's lr 1 and clip 5 apply to the loss summed over the 20 steps of a window (and averaged over the
    # batch); our loss is the mean per token, so the same updates are lr 20 and clip 5/20 = 0.25.
    "zaremba-small": dict(
        trainer=dict(batch_size=20, bptt=20, optimizer="sgd", lr=20.0, schedule="zaremba", decay_start_epoch=4,
                     clip=0.25, epochs=13),
        model=dict(cell="lstm", hidden_size=200, num_layers=2, init_range=0.1)),
    # A fixed 60-minute budget is about 18 epochs at 1 thread: cosine annealing to zero as the budget runs out,
    # and dropout lighter than AWD-LSTM's (a 200-unit model has little capacity to spare).
    "tied-variational": dict(
        trainer=dict(batch_size=20, bptt=35, optimizer="sgd", lr=20.0, schedule="cosine", clip=0.25, epochs=100,
                     max_time=3600.0),
        model=dict(cell="lstm", hidden_size=200, num_layers=2, tie_weights=True, dropout=0.3,
                   dropout_input=0.3, dropout_hidden=0.2, dropout_embedding=0.05, weight_drop=0.2)),
}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", choices=sorted(CONFIGS), default="zaremba-small")
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--max-time", type=float, default=0.0, help="override the config's time budget (seconds)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto: bf16 where the CPU multiplies it natively (AVX512-BF16, AMX), else fp32")
    p.add_argument("--bf16", dest="precision", action="store_const", const="bf16", help="--precision bf16")
    p.add_argument("--eval-every", type=int, default=2323, help="steps between validations (2323: once an epoch)")
    p.add_argument("--out", default="runs/bench-ptb")
    args = p.parse_args()
    files = {split: Path(args.data) / f"ptb.{split}.txt" for split in ("train", "valid", "test")}
    if not all(f.is_file() for f in files.values()):
        raise SystemExit(f"{args.data} lacks ptb.train/valid/test.txt: the benchmark needs ../shared/data/ptb")
    spec = CONFIGS[args.config]
    trainer = dict(spec["trainer"], **({"max_time": args.max_time} if args.max_time else {}))
    config = TrainLMConfig(train=str(files["train"]), valid=str(files["valid"]), test=str(files["test"]),
                           level="word", model=LMConfig(**spec["model"]))
    config = flat_replace(config, out=f"{args.out}-{args.config}", eval_every=args.eval_every,
                          precision=args.precision, progress=False, **trainer)  # trainer: task and training fields
    start = time.monotonic()
    run_dir = train_lm(config)
    train_wall = time.monotonic() - start
    lm = load_lm(run_dir)
    valid = lm.evaluate(read_text(files["valid"]), batch_size=1, bptt=100)
    test = lm.evaluate(read_text(files["test"]), batch_size=1, bptt=100)
    print("| config | precision | valid perplexity | test perplexity | training wall (s) |\n|---|---|---:|---:|---:|")
    print(f"| {args.config} | {args.precision} | {valid.perplexity:.1f} | {test.perplexity:.1f} | {train_wall:.0f} |")


if __name__ == "__main__":
    main()
