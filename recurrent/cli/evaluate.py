"""`recurrent evaluate RUN ...`: score a trained model; what is measured depends on the run's task.

    language model   --data FILE          test bits/char 1.912  |  test perplexity 114.2
                     (trained on sentences with --condition: label<TAB>text lines, or --condition FEATURES)
    classifier       --data FILE          test accuracy 0.931, test macro-F1 0.902, a confusion matrix
    tagger           --data FILE          test F1 88.4 overall and per type, token accuracy, confusion matrix
    translation      --src F --tgt F      test BLEU, chrF (sacrebleu) and perplexity; --beam 5
    forecaster       --data F [--test F]  sMAPE, MASE, OWA, MSIS, coverage, wQL beside Naive2, seasonal naive, naive
"""
from __future__ import annotations

import argparse
import importlib

from recurrent.cli.config import add_run_args, precision_from_args
from recurrent.devices import resolve_device
from recurrent.errors import UserError
from recurrent.registry import TASKS
from recurrent.runs import read_task
from recurrent.validation import at_least, flag


def register(subparsers) -> None:
    p = subparsers.add_parser("evaluate", help="score a trained model (bits/char, perplexity, ...)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN", help="a run folder written by `recurrent train ...`")
    p.add_argument("--data", help="the text / labelled file to score")
    p.add_argument("--batch-size", type=flag(int, **at_least(1)), default=10,
                   help="sequences per batch (LM: parallel streams)")
    p.add_argument("--bptt", type=flag(int, **at_least(1)), default=64,
                   help="LM: window length (memory only: the state is carried)")
    p.add_argument("--name", default="test", help="label printed before each metric")
    p.add_argument("--condition", metavar="FILE", help="LM trained with --condition FILE: the features (.npy or "
                   "CSV) of --data's lines")
    p.add_argument("--src", help="translation: the source file to translate")
    p.add_argument("--tgt", help="translation: the reference file (line-aligned with --src)")
    p.add_argument("--beam", type=flag(int, **at_least(1)), default=5, help="translation: beam size (1: greedy)")
    p.add_argument("--test", help="forecaster: the next horizon of each --data series, matched by id (M4's "
                   "Hourly-test.csv); without it the last horizon of each --data series is held out")
    p.add_argument("--samples", type=flag(int, **at_least(1)), default=200,
                   help="forecaster: sample paths per series")
    p.add_argument("--seed", type=int, default=0, help="forecaster: seeds the sample paths")
    p.add_argument("--baselines", default="naive2,snaive,naive", help="forecaster: the reference methods to "
                   "score, of naive2,snaive,naive,auto_ets,auto_theta (the last two need statsforecast)")
    p.add_argument("--plot", metavar="PNG", help="forecaster: also draw some series' forecasts and truth")
    p.add_argument("--plot-series", metavar="ID,ID", help="forecaster: the series --plot draws (default: the "
                   "first 4)")
    p.add_argument("--overwrite", action="store_true", help="forecaster: replace --plot if it exists")
    add_run_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    task = read_task(args.run)  # config.json's "task": the registry names the module whose evaluate(args) scores it
    evaluators = {name: spec.evaluate for name, spec in TASKS.items() if spec.evaluate}
    if task not in evaluators:
        raise UserError(f"cannot evaluate a run of task {task!r}; known tasks: {sorted(evaluators)}")
    precision = precision_from_args(args)  # a bad --device fails before any model is loaded
    with precision.autocast(resolve_device(args.device).type):
        return importlib.import_module(evaluators[task]).evaluate(args)
