"""Conditional generation on SST-2: does a language model conditioned on the sentiment label write sentences of that
sentiment? A word-level LSTM LM is trained on the SST-2 training sentences twice, with the label setting its initial
state (`recurrent train lm --condition label`) and without (`--condition none`, the baseline on the same sentences).
A BiLSTM classifier, trained separately on the SST-2 training sentences, then labels N samples per label of each.

    python benchmarks/conditional_sst.py --steps 500 --classifier-steps 400 --samples 100    # the short run
    python benchmarks/conditional_sst.py --steps 6000 --classifier-steps 3000 --samples 500  # the long one

Both language models train for the same number of steps (not seconds: on a shared machine a time budget buys one
model more steps than the other); the best checkpoint by valid loss is the one scored.

Prints a markdown table: per model, the test perplexity on the SST-2 test sentences (the conditional model also
with every label flipped: how much the label is worth), the share of its samples that the classifier labels as the
label asked for (the baseline cannot be asked: its first N samples are paired with positive, the next N with
negative, so it matches at chance by construction), and the share it labels positive. Then the classifier's own
test accuracy, some samples, and the exact configurations. The conditional model's samples for each label share
their sampling noise (the same seed), so they differ by the label alone.
"""
import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from recurrent.cli.evaluate_lm import score_sentences
from recurrent.data.labelled import read_sst
from recurrent.models.classifier import ClassifierConfig
from recurrent.models.lm import LMConfig
from recurrent.inference.classify import evaluate_classifier, load_classifier
from recurrent.inference.lm import load_lm
from recurrent.train.classify import TrainClassifyConfig, train_classify
from recurrent.train.lm import TrainLMConfig, train_lm
from recurrent.train.loop import BEST, flat_replace

DATA = Path(__file__).resolve().parents[1].parent / "shared/data/sst"
LABELS = ("positive", "negative")
LM_MODEL = dict(embedding_size=128, hidden_size=256, num_layers=1, dropout=0.3, dropout_input=0.1)
LM_TRAINER = dict(level="word", min_freq=3, batch_size=32, eval_batch_size=64, lr=2e-3, clip=1.0, epochs=40,
                  eval_every=200, log_every=50)  # min_freq 3: 4.8k words of 14.8k (the softmax is most of the time)
CLASSIFIER_MODEL = dict(embedding_size=100, hidden_size=100, bidirectional=True, pooling="max", dropout=0.5)
CLASSIFIER_TRAINER = dict(format="sst", binary=True, lowercase=True, batch_size=32, lr=2e-3, epochs=50, eval_every=200,
                          patience=0)


def write_sentences(data: Path, out: Path) -> dict[str, tuple[Path, Path]]:
    """SST-2 sentences (neutral dropped), lowercased, as label<TAB>text and as plain text, per split."""
    files = {}
    for split in ("train", "dev", "test"):
        examples = read_sst(data / f"{split}.txt", binary=True).examples
        tsv, txt = out / f"{split}.tsv", out / f"{split}.txt"
        tsv.write_text("".join(f"{ex.label}\t{' '.join(ex.tokens).lower()}\n" for ex in examples), encoding="utf-8")
        txt.write_text("".join(f"{' '.join(ex.tokens).lower()}\n" for ex in examples), encoding="utf-8")
        files[split] = (tsv, txt)
    return files


def sample(run: Path, label: str | None, n: int, seed: int, temperature: float) -> list[list[str]]:
    """n sentences (token lists, each up to its <eos>, at most 50 words) from a run, for `label` (None: no label)."""
    lm = load_lm(run)
    model, vocab = lm.model, lm.vocab
    labels = json.loads((run / f"{BEST}.json").read_text())["labels"]
    condition = None if label is None else torch.tensor(labels.index(label))
    generator, sep, out = torch.Generator().manual_seed(seed), vocab.stoi["<eos>"], []
    for _ in range(n):
        words = []
        for token in model.generate(torch.tensor([sep]), 50, temperature, generator=generator, condition=condition):
            if token == sep:
                break
            words.append(vocab.itos[token])
        out.append(words)
    return out


def perplexity(run: Path, test: Path) -> float:
    lm = load_lm(run)
    model, vocab = lm.model, lm.vocab
    meta = json.loads((run / f"{BEST}.json").read_text())
    return score_sentences(model, vocab, meta, test, batch_size=64).perplexity


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--out", default="runs/bench-conditional-sst")
    p.add_argument("--steps", type=int, default=6000, help="training steps per language model")
    p.add_argument("--classifier-steps", type=int, default=3000, help="training steps of the classifier")
    p.add_argument("--samples", type=int, default=500, help="samples per label")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    data, out = Path(args.data), Path(args.out)
    if not all((data / f"{split}.txt").is_file() for split in ("train", "dev", "test")):
        raise SystemExit(f"{data} lacks train/dev/test.txt: the benchmark needs ../shared/data/sst")
    out.mkdir(parents=True, exist_ok=True)
    files = write_sentences(data, out)
    start = time.monotonic()

    configs, runs = {}, {}
    for name, condition, split_file in (("conditional", "label", 0), ("unconditional", "none", 1)):
        configs[name] = flat_replace(
            TrainLMConfig(model=LMConfig(**LM_MODEL)), train=str(files["train"][split_file]),
            valid=str(files["dev"][split_file]), condition=condition, out=str(out / name), overwrite=True,
            max_steps=args.steps, seed=args.seed, progress=False, **LM_TRAINER)
        runs[name] = train_lm(configs[name])
    classifier_config = flat_replace(
        TrainClassifyConfig(model=ClassifierConfig(**CLASSIFIER_MODEL)), train=str(data / "train.txt"),
        valid=str(data / "dev.txt"), out=str(out / "classifier"), overwrite=True, max_steps=args.classifier_steps,
        seed=args.seed, progress=False, **CLASSIFIER_TRAINER)
    classifier = load_classifier(train_classify(classifier_config))
    accuracy = evaluate_classifier(classifier, data / "test.txt").accuracy

    rows, examples = [], {}
    flipped = out / "test-flipped.tsv"  # every test label swapped: the conditional model's perplexity without its help
    flipped.write_text("".join(("negative" if line.startswith("positive") else "positive") + line[line.index("\t"):]
                               for line in files["test"][0].read_text(encoding="utf-8").splitlines(keepends=True)))
    for name, run in runs.items():
        asked = [label for label in LABELS for _ in range(args.samples)]
        if name == "conditional":
            written = [s for label in LABELS for s in sample(run, label, args.samples, args.seed, args.temperature)]
        else:
            written = sample(run, None, 2 * args.samples, args.seed, args.temperature)
        kept = [(a, s) for a, s in zip(asked, written) if s]  # an empty sentence has nothing to classify
        said = classifier.predict([s for _, s in kept])
        match = {label: sum(a == b for (a, _), b in zip(kept, said) if a == label) /
                 max(1, sum(a == label for a, _ in kept)) for label in LABELS}
        test = files["test"][0 if name == "conditional" else 1]
        ppl = perplexity(run, test)
        ppl_flipped = f"{perplexity(run, flipped):.1f}" if name == "conditional" else "-"
        best = json.loads((run / f"{BEST}.json").read_text())["metrics"]
        matching = sum(a == b for (a, _), b in zip(kept, said)) / len(kept)
        rows.append(f"| {name} | {ppl:.1f} | {ppl_flipped} | {matching:.3f} "
                    f"| {match['positive']:.3f} | {match['negative']:.3f} | {said.count('positive') / len(said):.3f} "
                    f"| {len(written) - len(kept)} | {best['step']} |")
        examples[name] = [(a, b, " ".join(s)) for (a, s), b in list(zip(kept, said))[:: max(1, len(kept) // 6)]]
    wall = time.monotonic() - start

    print(f"SST-2 conditional generation: {args.samples} samples per label, temperature {args.temperature}; "
          f"LMs {args.steps} steps each, classifier {args.classifier_steps} steps (test accuracy {accuracy:.3f}); "
          f"wall {wall:.0f} s\n")
    print("| model | test ppl | test ppl, labels flipped | samples labelled as asked | asked positive | "
          "asked negative | labelled positive | empty samples | best step |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    for name, lines in examples.items():
        print(f"\n{name} samples (asked -> classifier: text):")
        for asked, said, text in lines:
            print(f"  {asked if name == 'conditional' else '-'} -> {said}: {text}")
    for name, config in {**configs, "classifier": classifier_config}.items():
        print(f"\n{name} config " + json.dumps(asdict(config)))


if __name__ == "__main__":
    main()
