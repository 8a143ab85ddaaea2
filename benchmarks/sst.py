"""Stanford Sentiment Treebank: test accuracy without pretrained vectors, of a BiLSTM with max pooling
(sst2, sst5: every phrase is an extra training sentence) or of a Tree-LSTM over the parse trees (sst2-tree,
sst5-tree: a loss at every phrase's node).

    python benchmarks/sst.py --config sst2       # SST-2 (neutral dropped). Target >= 85%
    python benchmarks/sst.py --config sst5       # SST-5 (root labels).     Target >= 45%
    python benchmarks/sst.py --config sst5-tree  # SST-5 with the Tree-LSTM
    python benchmarks/sst.py --config sst2 --max-time 60      # a smoke run

Prints the test accuracy and macro-F1, the wall time, and the exact configuration.
"""
import json

from common import SHARED_DATA, add_run_flags, data_files, parser, train_and_test, with_budget
from recurrent.models.classifier import ClassifierConfig
from recurrent.inference.classify import evaluate_classifier, load_classifier
from recurrent.train.classify import TrainClassifyConfig, train_classify
from recurrent.train.loop import flat_replace

DATA = SHARED_DATA / "sst"

MODEL = dict(cell="lstm", embedding_size=300, hidden_size=168, bidirectional=True, pooling="max", dropout=0.5)
TRAINER = dict(format="sst", phrases=True, lowercase=True, batch_size=64, lr=1e-3, clip=5.0, epochs=10,
               eval_every=1000, patience=6, max_time=3600.0)
TREE = dict(batch_size=25, eval_every=0, epochs=100, patience=0, schedule="cosine", max_time=1200.0)
TREE_MODEL = dict(structure="tree", hidden_size=150)
CONFIGS = {  # name: (trainer overrides, model overrides)
    "sst2": (dict(binary=True), {}),
    "sst5": (dict(binary=False), {}),
    "sst2-tree": (dict(TREE, binary=True), TREE_MODEL),
    "sst5-tree": (dict(TREE, binary=False), TREE_MODEL),
}


def main():
    p = parser(__doc__)
    p.add_argument("--config", choices=sorted(CONFIGS), default="sst2")
    add_run_flags(p, DATA, "runs/bench-sst")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a trainer field, or model.FIELD (repeatable), e.g. --set schedule=cosine "
                        "--set model.dropout=0.6")
    args = p.parse_args()
    files = data_files(args.data, "{}.txt", ("train", "dev", "test"), "train/dev/test.txt", "sst")
    trainer_overrides, model_overrides = CONFIGS[args.config]
    trainer = with_budget({**TRAINER, **trainer_overrides}, args.max_time)
    model = {**MODEL, **model_overrides}
    for item in args.set:
        key, _, value = item.partition("=")
        target, key = (model, key[len("model."):]) if key.startswith("model.") else (trainer, key)
        try:
            target[key] = json.loads(value)  # numbers, true/false
        except ValueError:
            target[key] = value  # a string, e.g. cosine
    config = flat_replace(TrainClassifyConfig(), train=str(files["train"]), valid=str(files["dev"]),
                          out=f"{args.out}-{args.config}", progress=False, overwrite=True,
                          model=ClassifierConfig(**model), **trainer)
    train_and_test(train_classify, config, load_classifier, evaluate_classifier, files["test"], lambda report, best: (
        f"{args.config} test accuracy {report.accuracy:.3f}, macro-F1 {report.macro_f1:.3f} "
        f"(best dev accuracy {best['accuracy']:.3f} at step {best['step']})"))


if __name__ == "__main__":
    main()
