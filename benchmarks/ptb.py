"""Penn Treebank word-level LM: test perplexity of the published configurations.

    python benchmarks/ptb.py --config zaremba-small     # Zaremba et al. 2014 small: 2x200, no dropout,
                                                        # 13 epochs, SGD lr 1 halved from epoch 5, clip 5,
                                                        # batch 20, BPTT 20 (lr and clip for a loss summed
                                                        # over the window: see CONFIGS). Paper: 114.5 test.
    python benchmarks/ptb.py --config tied-variational  # 2x200, variational dropout, tied weights. Target <= 90
                                                        # within 60 minutes of CPU time.
"""
from common import SHARED_DATA, add_precision_flags, add_run_flags, data_files, parser, train_timed, with_budget
from recurrent.data import read_text
from recurrent.models import LMConfig
from recurrent.train import TrainLMConfig, train_lm
from recurrent.train.loop import flat_replace
from recurrent.inference.lm import load_lm

DATA = SHARED_DATA / "ptb"

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
    p = parser(__doc__)
    p.add_argument("--config", choices=sorted(CONFIGS), default="zaremba-small")
    add_run_flags(p, DATA, "runs/bench-ptb", max_time_help="override the config's time budget (seconds)")
    add_precision_flags(p)
    p.add_argument("--eval-every", type=int, default=2323, help="steps between validations (2323: once an epoch)")
    args = p.parse_args()
    files = data_files(args.data, "ptb.{}.txt", ("train", "valid", "test"), "ptb.train/valid/test.txt", "ptb")
    spec = CONFIGS[args.config]
    trainer = with_budget(spec["trainer"], args.max_time)
    config = TrainLMConfig(train=str(files["train"]), valid=str(files["valid"]), test=str(files["test"]),
                           level="word", model=LMConfig(**spec["model"]))
    config = flat_replace(config, out=f"{args.out}-{args.config}", overwrite=True, eval_every=args.eval_every,
                          precision=args.precision, progress=False, **trainer)  # trainer: task and training fields
    run_dir, train_wall, _ = train_timed(train_lm, config)
    lm = load_lm(run_dir)
    valid = lm.evaluate(read_text(files["valid"]), batch_size=1, bptt=100)
    test = lm.evaluate(read_text(files["test"]), batch_size=1, bptt=100)
    print("| config | precision | valid perplexity | test perplexity | training wall (s) |\n|---|---|---:|---:|---:|")
    print(f"| {args.config} | {args.precision} | {valid.perplexity:.1f} | {test.perplexity:.1f} | {train_wall:.0f} |")


if __name__ == "__main__":
    main()
