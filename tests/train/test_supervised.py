"""The supervised trainers on tiny generated files: run folders, budgets, IOB1 -> BIO, unknown labels at
evaluation (file:line), word vectors from a tiny generated file, and the metrics by hand."""
from __future__ import annotations

import json
import random

import pytest
import torch

from recurrent.embeddings import load_embeddings
from recurrent.errors import UserError
from recurrent.models.classifier import ClassifierConfig
from recurrent.models.tagger import TaggerConfig
from recurrent.inference.classify import evaluate_classifier, load_classifier
from recurrent.inference.common import confusion_matrix, macro_f1
from recurrent.inference.tag import evaluate_tagger, load_tagger
from recurrent.train.classify import TrainClassifyConfig, train_classify
from recurrent.train.supervised import replace_singletons, singleton_ids
from recurrent.train.tag import TrainTagConfig, train_tag
from recurrent.train.loop import flat_replace


def sentiment_file(path, n: int, seed: int):
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        label = rng.choice(["pos", "neg"])
        words = [rng.choice(["the", "film", "was", "a"]) for _ in range(rng.randint(1, 5))]
        words.insert(rng.randint(0, len(words)), rng.choice(["good", "great"] if label == "pos" else ["bad", "dull"]))
        lines.append(f"{label}\t{' '.join(words)}")
    path.write_text("\n".join(lines) + "\n")
    return path


NER = """-DOCSTART- -X- O O

Peter NNP I-NP I-PER
lives VBZ I-VP O
in IN I-PP O
Paris NNP I-NP I-LOC

Anna NNP I-NP I-PER
Smith NNP I-NP I-PER
visited VBD I-VP O
Rome NNP I-NP I-LOC
"""


def test_classifier_learns_and_writes_its_run_folder(tmp_path):
    train, dev = sentiment_file(tmp_path / "train.tsv", 64, 0), sentiment_file(tmp_path / "dev.tsv", 32, 1)
    config = flat_replace(TrainClassifyConfig(), train=str(train), valid=str(dev), out=str(tmp_path / "run"), epochs=15, lr=0.02,
                                 batch_size=16, progress=False,
                                 model=ClassifierConfig(embedding_size=12, hidden_size=12, dropout=0.0))
    run = train_classify(config)
    assert json.loads((run / "config.json").read_text())["task"] == "classify"
    meta = json.loads((run / "model.json").read_text())
    assert meta["labels"] == ["neg", "pos"] and meta["words"][:2] == ["<pad>", "<unk>"]
    assert {"metrics.jsonl", "loss.png", "model.safetensors"} <= {p.name for p in run.iterdir()}
    report = evaluate_classifier(load_classifier(run), dev)
    assert report.accuracy > 0.9 and report.accuracy == meta["metrics"]["accuracy"]


def test_max_steps_and_patience_stop_training(tmp_path):
    train = sentiment_file(tmp_path / "train.tsv", 64, 0)
    config = flat_replace(TrainClassifyConfig(), train=str(train), valid=str(train), out=str(tmp_path / "run"), max_steps=3,
                                 batch_size=8, progress=False, model=ClassifierConfig(embedding_size=4, hidden_size=4))
    records = [json.loads(l) for l in (train_classify(config) / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 3
    config.max_steps, config.eval_every, config.patience, config.lr = 0, 1, 2, 1e-9  # nothing improves
    config.training.overwrite = True  # a new run into the same folder
    records = [json.loads(l) for l in (train_classify(config) / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 3  # the first evaluation is the best; two more without improvement


def test_tagger_converts_iob1_and_scores_unknown_tags_as_misses(tmp_path):
    train = tmp_path / "eng.train"
    train.write_text(NER)
    config = flat_replace(TrainTagConfig(), train=str(train), valid=str(train), out=str(tmp_path / "run"), epochs=30, lr=0.05,
                            progress=False, model=TaggerConfig(embedding_size=8, hidden_size=8, crf=True,
                                                               char_encoder="lstm", dropout=0.0))
    run = train_tag(config)
    tagger = load_tagger(run)
    assert sorted(tagger.tags) == ["B-LOC", "B-PER", "I-PER", "O"]  # IOB1's I-LOC/I-PER starts became B-
    assert tagger.predict([["Anna", "Smith", "visited", "Rome"]]) == [["B-PER", "I-PER", "O", "B-LOC"]]
    assert evaluate_tagger(tagger, train).f1 == 100.0
    test = tmp_path / "eng.testb"
    test.write_text(NER.replace("Rome NNP I-NP I-LOC", "Rome NNP I-NP I-ORG"))
    report = evaluate_tagger(tagger, test)  # B-ORG, unseen in training: a gold chunk the model cannot find
    # gold chunks PER, LOC, PER, ORG; predicted PER, LOC, PER, LOC: 3 of 4 right both ways
    assert report.f1 == pytest.approx(75.0) and report.per_type["ORG"]["support"] == 1
    assert report.accuracy == pytest.approx(7 / 8) and report.unseen.counts == {"B-ORG": 1}  # Rome wrong


def test_pos_tagger_uses_token_accuracy(tmp_path):
    train = tmp_path / "pos.conll"
    train.write_text("a DET\ncat NOUN\nsat VERB\n\nthe DET\ndog NOUN\nran VERB\n")
    config = flat_replace(TrainTagConfig(), train=str(train), valid=str(train), out=str(tmp_path / "run"), max_steps=2,
                            progress=False, model=TaggerConfig(embedding_size=4, hidden_size=4))
    report = evaluate_tagger(load_tagger(train_tag(config)), train)
    assert report.f1 is None and 0 <= report.accuracy <= 1 and len(report.confusion) == 3


def test_embeddings_from_a_tiny_file(tmp_path):
    path = tmp_path / "vectors.txt"
    path.write_text("3 2\nthe 1 2\nParis 3 4\nzzz 5 6\n")
    weight = torch.zeros(4, 2)
    out, found = load_embeddings(path, ["<pad>", "the", "paris", "The"], weight)
    assert found == 2 and out[1].tolist() == [1, 2] and out[3].tolist() == [1, 2] and out[2].tolist() == [0, 0]
    path.write_text("the 1 2\nParis 3\n")
    with pytest.raises(UserError, match=r"vectors\.txt:2: expected a word and 2 numbers, got 1"):
        load_embeddings(path, ["the"], weight)


def test_macro_f1_and_confusion_by_hand():
    confusion = confusion_matrix([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], 3)
    assert confusion == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert macro_f1(confusion) == pytest.approx((2 / 4 + 4 / 5 + 0) / 3)


def test_unk_replace_touches_only_singletons():
    itos = ["<pad>", "<unk>", "the", "rare"]
    singletons = singleton_ids([["the", "rare", "the"]], itos)
    assert singletons.tolist() == [False, False, False, True]
    words = torch.tensor([[2, 3, 3, 0]])
    assert replace_singletons(words, singletons, 1.0).tolist() == [[2, 1, 1, 0]]
    assert replace_singletons(words, singletons, 0.0).tolist() == words.tolist()


def treebank_file(path, n: int, seed: int):
    """Right-branching SST-style trees: the sentiment word labels every phrase that holds it; the rest is 2."""
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        label = rng.choice(["0", "2", "4"])
        words = [rng.choice(["the", "film", "was", "a"]) for _ in range(rng.randint(1, 4))]
        if label != "2":
            words.insert(rng.randint(0, len(words)), rng.choice(["good", "great"] if label == "4" else ["bad", "dull"]))
        polar = [w in ("good", "great", "bad", "dull") for w in words]
        text = f"({label if polar[-1] else 2} {words[-1]})"
        for w, p, k in zip(words[-2::-1], polar[-2::-1], range(len(words) - 2, -1, -1)):
            inner = label if any(polar[k:]) else "2"
            text = f"({inner} ({label if p else 2} {w}) {text})"
        lines.append(text)
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("phrases", [True, False])
def test_tree_classifier_learns_sst2_from_trees(tmp_path, phrases):
    train, dev = treebank_file(tmp_path / "train.txt", 96, 0), treebank_file(tmp_path / "dev.txt", 48, 1)
    config = flat_replace(TrainClassifyConfig(), train=str(train), valid=str(dev), out=str(tmp_path / "run"), format="sst",
                                 binary=True, phrases=phrases, epochs=20, lr=0.02, batch_size=16, progress=False,
                                 model=ClassifierConfig(structure="tree", embedding_size=12, hidden_size=12,
                                                        dropout=0.0))
    run = train_classify(config)
    meta = json.loads((run / "model.json").read_text())
    assert meta["labels"] == ["negative", "positive"]
    classifier = load_classifier(run)
    report = evaluate_classifier(classifier, dev)
    assert sum(map(sum, report.confusion)) == sum(1 for line in dev.read_text().splitlines() if line[1] != "2")
    assert report.accuracy > 0.9 and report.accuracy == meta["metrics"]["accuracy"]


def test_tree_training_items_keep_neutral_sentences_only_for_their_phrases(tmp_path):
    from recurrent.data.labelled import SST2, read_sst
    from recurrent.models.tree import NO_LABEL, TreeClassifier
    from recurrent.inference.classify import Classifier
    from recurrent.train.classify import encode_training_trees

    path = tmp_path / "t.txt"
    path.write_text("(2 (2 a) (4 good))\n(0 (0 bad) (2 film))\n")
    model = TreeClassifier(ClassifierConfig(vocab_size=6, num_classes=2, structure="tree"))
    classifier = Classifier(model, ["<pad>", "<unk>", "a", "good", "bad", "film"], ["negative", "positive"],
                            {"lowercase": False})
    read = read_sst(path)
    with_phrases = encode_training_trees(classifier, read, True, SST2.get)
    assert [t.labels for t, _ in with_phrases] == [[NO_LABEL, 1, NO_LABEL], [0, NO_LABEL, 0]]
    assert [y for _, y in with_phrases] == [NO_LABEL, 0]
    roots_only = encode_training_trees(classifier, read, False, SST2.get)
    assert [t.labels for t, _ in roots_only] == [[NO_LABEL, NO_LABEL, 0]]
