"""Evaluation on test sets that hold what training never saw: characters and words (scored as <unk>, loss
counted), tags (conlleval: a miss) and labels (wrong), each counted in the report and the CLI output. Also the
fixes found alongside: word-level `generate` output, LM beam search, and synthetic lengths.

Expected values come from hand computations on tiny models whose outputs are set by hand or read off the
model's logits directly, not from the code under test.
"""
from __future__ import annotations

import itertools
import json
from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from recurrent.checkpoint import save_checkpoint
from recurrent.cli.main import main
from recurrent.data.labelled import Example, Read, read_conll
from recurrent.data.text import Vocab
from recurrent.decoding import lm_beam_search
from recurrent.errors import UserError
from recurrent.models.classifier import ClassifierOutput
from recurrent.models.lm import LanguageModel, LMConfig
from recurrent.models.tagger import SequenceTagger, TaggerConfig, TaggerOutput
from recurrent.tasks.synthetic import SyntheticTask
from recurrent.inference.classify import Classifier, evaluate_items as evaluate_classifier_items, evaluation_items
from recurrent.inference.lm import evaluate_lm
from recurrent.inference.tag import Tagger, evaluate_items as evaluate_tagger_items, evaluation_items as tag_items
from recurrent.unseen import Unseen


def tiny_lm(vocab: Vocab, seed: int = 0) -> LanguageModel:
    torch.manual_seed(seed)
    return LanguageModel(LMConfig(vocab_size=len(vocab), hidden_size=8, num_layers=1)).eval()


def lm_run(tmp_path, model: LanguageModel, vocab: Vocab):
    """A run folder as `recurrent train lm` writes it, as far as `evaluate` and `generate` read it."""
    run = tmp_path / "run"
    run.mkdir()
    save_checkpoint(run, dict(model.state_dict()), {"model": asdict(model.config), "vocab": vocab.to_dict()},
                    name="model")
    (run / "config.json").write_text(json.dumps({"task": "lm"}))
    return run


# --- the report line ----------------------------------------------------------------------------------------


def test_unseen_counts_most_frequent_first_and_reads_as_a_sentence():
    unseen = Unseen.count(list("aæbøæå\tæ"), known={"a", "b"}, kind="character", unit="place")
    assert unseen.counts == {"æ": 3, "ø": 1, "å": 1, "\t": 1} and unseen.types == 4 and unseen.occurrences == 6
    assert str(unseen) == r"unseen in training: 4 characters (æ, ø, å, '\t') in 6 places"
    assert str(Unseen.count(["I-LST"], ["O"], "tag", "token")) == "unseen in training: 1 tag (I-LST) on 1 token"
    assert str(Unseen.count(["O"], ["O"], "label", "example")) == "unseen in training: no labels"


# --- language models ----------------------------------------------------------------------------------------


def test_char_lm_scores_unseen_characters_as_unk_with_their_loss_counted():
    vocab = Vocab.build("abc ab\nca b\n", "char")
    model = tiny_lm(vocab)
    text = "abæc ø\nbæ"
    score = evaluate_lm(model, vocab, text, batch_size=1, bptt=100)  # one stream: every target is scored
    ids = torch.tensor([vocab.stoi.get(c, 0) for c in text])  # æ, ø -> <unk> (id 0), by hand
    assert vocab.itos[0] == "<unk>" and (ids[1:] == 0).sum() == 3  # three <unk> targets
    with torch.no_grad():
        logits = model(ids[None, :-1]).logits[0]  # (N-1, V)
    nll = -logits.log_softmax(-1).gather(1, ids[1:, None]).squeeze(1)  # (N-1,) -log p of each target
    assert score.nats_per_token == pytest.approx(nll.mean().item(), rel=1e-6)
    assert score.unseen.counts == {"æ": 2, "ø": 1}
    assert str(score.unseen) == "unseen in training: 2 characters (æ, ø) in 3 places"


def test_word_lm_counts_unknown_words_but_not_a_literal_unk():
    vocab = Vocab.build("the cat sat\nthe <unk> sat\n", "word")
    score = evaluate_lm(tiny_lm(vocab), vocab, "the dog sat\nthe <unk> emu dog\n", batch_size=1)
    assert score.unseen.counts == {"dog": 2, "emu": 1}
    assert str(score.unseen) == "unseen in training: 2 words (dog, emu) in 3 places"


def test_old_char_vocabulary_without_unk_is_a_clear_error_naming_the_characters():
    vocab = Vocab(["a", "b", " ", "\n"], "char")  # as saved before char vocabularies had "<unk>"
    model = tiny_lm(vocab)
    with pytest.raises(UserError, match=r"the text holds 2 characters \(æ, ø\) in 3 places that training never "
                                        r"saw, and this run predates unknown-character support"):
        evaluate_lm(model, vocab, "abæ øæ\n")
    assert evaluate_lm(model, vocab, "ab ba\n").unseen.counts == {}  # known characters only: scores as before


def test_evaluate_cli_on_a_char_lm_reports_the_unseen_characters(tmp_path, capsys):
    vocab = Vocab.build("abc ab\nca b\n", "char")
    run = lm_run(tmp_path, tiny_lm(vocab), vocab)
    data = tmp_path / "test.txt"
    data.write_text("abæc ø\nbæ\n", encoding="utf-8")
    assert main(["evaluate", str(run), "--data", str(data)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("test bits/char ")
    assert out[1] == "test unseen in training: 2 characters (æ, ø) in 3 places"


def test_evaluate_cli_on_an_old_char_run_is_one_line_exit_2(tmp_path, capsys):
    vocab = Vocab(["a", "b", "c", " ", "\n"], "char")
    run = lm_run(tmp_path, tiny_lm(vocab), vocab)
    data = tmp_path / "test.txt"
    data.write_text("abæc\n", encoding="utf-8")
    assert main(["evaluate", str(run), "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1 character (æ) in 1 place" in err and "predates" in err, err


# --- generate -----------------------------------------------------------------------------------------------


def render_words(vocab: Vocab, tokens: list[int]) -> str:
    """Generated word ids as text, by hand: each word after a space, except at a line start; <eos> a newline."""
    text, line_start = "", False
    for t in tokens:
        word = vocab.itos[t]
        text += "\n" if word == "<eos>" else ("" if line_start else " ") + word
        line_start = word == "<eos>"
    return text


def test_generate_word_model_continues_the_prime_after_a_space(tmp_path, capsys):
    vocab = Vocab.build("the company said\nthe market rose\n", "word")
    model = tiny_lm(vocab)
    run = lm_run(tmp_path, model, vocab)
    assert main(["generate", str(run), "--prime", "the company", "--length", "12", "--greedy"]) == 0
    out = capsys.readouterr().out
    # the prime continues its sentence: no <eos> after "company" (only a newline in the prime would end it)
    expected = list(model.generate(torch.tensor([vocab.stoi["the"], vocab.stoi["company"]]), 12, greedy=True))
    assert out == "the company" + render_words(vocab, expected) + "\n"
    assert out.startswith("the company ") or out.startswith("the company\n")


def test_generate_prime_with_unseen_tokens_reads_them_as_unk(tmp_path, capsys):
    vocab = Vocab.build("abc ab\nca b\n", "char")
    run = lm_run(tmp_path, tiny_lm(vocab), vocab)
    assert main(["generate", str(run), "--prime", "abø", "--length", "5", "--seed", "3"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("abø") and len(captured.out) == 3 + 5 + 1  # <unk> prints as one character
    assert "the prime holds 1 character (ø) in 1 place that training never saw: read as <unk>" in captured.err


# --- beam search over a language model ----------------------------------------------------------------------


def brute_force(model: LanguageModel, prime: list[int], length: int, V: int) -> dict[tuple, float]:
    """log p(continuation | prime) of every continuation, each from one full forward pass."""
    scores = {}
    with torch.no_grad():
        for seq in itertools.product(range(V), repeat=length):
            ids = torch.tensor(prime + list(seq))
            logp = model(ids[None, :-1]).logits[0].log_softmax(-1)  # (P+L-1, V)
            scores[seq] = sum(logp[len(prime) - 1 + t, s].item() for t, s in enumerate(seq))
    return scores


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lm_beam_search_with_every_sequence_kept_finds_the_exact_argmax(seed):
    V, L, prime = 3, 3, [1, 0]
    torch.manual_seed(seed)
    model = LanguageModel(LMConfig(vocab_size=V, hidden_size=6, num_layers=2)).eval()
    with torch.no_grad():
        model.decoder.weight.mul_(4.0)  # sharper, more varied distributions than at initialisation
    scores = brute_force(model, prime, L, V)
    best = max(scores, key=scores.get)
    found = lm_beam_search(model, torch.tensor(prime), L, beam_size=V ** L)
    assert tuple(found.tokens) == best and found.log_prob == pytest.approx(scores[best], abs=1e-5)
    # a beam of 1 is greedy search
    greedy = list(model.generate(torch.tensor(prime), L, greedy=True))
    assert lm_beam_search(model, torch.tensor(prime), L, beam_size=1).tokens == greedy
    # a beam of K keeps, at each step, the K best prefixes of the enumeration
    beam2 = lm_beam_search(model, torch.tensor(prime), L, beam_size=2)
    assert beam2.log_prob <= scores[best] + 1e-5 and beam2.log_prob == pytest.approx(scores[tuple(beam2.tokens)],
                                                                                      abs=1e-5)


def test_generate_cli_beam_prints_the_beam_search_result(tmp_path, capsys):
    vocab = Vocab.build("the company said\nthe market rose\n", "word")
    model = tiny_lm(vocab)
    run = lm_run(tmp_path, model, vocab)
    assert main(["generate", str(run), "--prime", "the\n", "--length", "6", "--beam", "4"]) == 0
    expected = lm_beam_search(model, torch.tensor([vocab.stoi["the"], vocab.stoi["<eos>"]]), 6, 4).tokens
    out = capsys.readouterr().out
    assert out == "the\n" + render_words(vocab, expected).removeprefix(" ") + "\n"
    assert main(["generate", str(run), "--beam", "3", "--top-k", "5"]) == 2
    assert "--top-k (for sampling) cannot apply" in capsys.readouterr().err


# --- tagging: conlleval semantics ---------------------------------------------------------------------------


TAGS = ["O", "B-NP", "I-NP", "B-VP"]  # what "training" saw
WORDS = ["<pad>", "<unk>", "a", "b", "c", "d", "e", "f", "g"]
PREDICT = {"a": "B-NP", "b": "I-NP", "c": "B-NP", "d": "I-NP", "e": "B-NP", "f": "O", "g": "O"}


class LookupTagger(SequenceTagger):
    """Emissions from a fixed table, row per word id: the predictions are set by hand."""

    def __init__(self, table: torch.Tensor):  # (V, K)
        super().__init__(TaggerConfig(vocab_size=table.shape[0], num_tags=table.shape[1], embedding_size=2,
                                      hidden_size=2))
        self.table = nn.Parameter(table)

    def forward(self, words, lengths, chars=None, char_lengths=None, tags=None) -> TaggerOutput:
        emissions = self.table[words]  # (B, T, K)
        return TaggerOutput(emissions, None if tags is None else self.loss(emissions, lengths, tags))


def lookup_tagger() -> Tagger:
    torch.manual_seed(0)
    table = torch.rand(len(WORDS), len(TAGS))  # (V, K) in [0, 1): the predicted tag gets +2
    for w, t in PREDICT.items():
        table[WORDS.index(w), TAGS.index(t)] += 2.0
    return Tagger(LookupTagger(table), WORDS, ["<pad>", "<unk>"], TAGS, {"lowercase": False})


CHUNKS = "a B-LST\nb I-LST\nc B-NP\nd I-NP\n\ne B-NP\nf O\ng B-VP\n"


def test_tagger_scores_an_unseen_gold_tag_as_a_miss_as_conlleval_does(tmp_path):
    path = tmp_path / "test.txt"
    path.write_text(CHUNKS)
    tagger = lookup_tagger()
    report = evaluate_tagger_items(tagger, tag_items(tagger, read_conll(path)), batch_size=1)
    # predicted:  a B-NP, b I-NP, c B-NP, d I-NP | e B-NP, f O, g O
    # gold chunks: LST(a b), NP(c d) | NP(e), VP(g)  -> 4;  predicted chunks: NP(a b), NP(c d) | NP(e) -> 3
    # correct: NP(c d), NP(e) -> 2.  precision 2/3, recall 2/4, F1 = 2PR/(P+R) = 4/7
    assert report.f1 == pytest.approx(100 * 4 / 7)
    assert report.per_type["LST"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert report.per_type["NP"]["f1"] == pytest.approx(80.0) and report.per_type["VP"]["support"] == 1
    assert report.accuracy == pytest.approx(4 / 7)  # a, b (unseen gold), g wrong; c, d, e, f right
    assert report.unseen.counts == {"B-LST": 1, "I-LST": 1}
    assert str(report.unseen) == "unseen in training: 2 tags (B-LST, I-LST) on 2 tokens"
    assert report.tags == TAGS + ["B-LST", "I-LST"]
    assert report.confusion[TAGS.index("O")] == [1, 0, 0, 0, 0, 0] and report.confusion[4] == [0, 1, 0, 0, 0, 0]
    # the loss: only the second sentence has a score for each gold tag (softmax: mean cross-entropy per token)
    table = tagger.model.table.detach()
    words, gold = [WORDS.index(w) for w in "efg"], [TAGS.index(t) for t in ("B-NP", "O", "B-VP")]
    assert report.loss == pytest.approx(F.cross_entropy(table[words], torch.tensor(gold)).item())


def test_evaluate_cli_on_a_tagger_with_unseen_tags_exits_0(tmp_path, capsys):
    train = tmp_path / "train.txt"
    train.write_text("He B-NP\nruns B-VP\nfast O\n\nThe B-NP\ndog I-NP\nsat B-VP\n")
    test = tmp_path / "test.txt"
    test.write_text("1 B-LST\n. I-LST\nHe B-NP\nruns B-VP\n\nA B-NP\ncat I-NP\nsat B-VP\n")
    run = tmp_path / "run"
    assert main(["train", "tag", "--train", str(train), "--valid", str(train), "--out", str(run),
                 "--max-steps", "1", "--embedding-size", "4", "--hidden-size", "4", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(test)]) == 0
    out = capsys.readouterr().out
    assert "test unseen in training: 2 tags (B-LST, I-LST) on 2 tokens\n" in out
    assert "test F1 LST 0.0 (precision 0.0, recall 0.0, support 1)" in out


# --- classification -----------------------------------------------------------------------------------------


class LookupClassifier(nn.Module):
    """Logits from a fixed table, row per first word id: the predictions are set by hand."""

    def __init__(self, table: torch.Tensor):  # (V, C)
        super().__init__()
        self.table = nn.Parameter(table)

    def forward(self, words, lengths, labels=None) -> ClassifierOutput:
        return ClassifierOutput(self.table[words[:, 0]], None)  # (B, C)


def test_classifier_counts_an_unseen_label_wrong_and_macro_f1_takes_the_union():
    labels, words = ["neg", "pos"], ["<pad>", "<unk>", "good", "bad", "meh", "fine"]
    table = torch.tensor([[0.0, 0.0], [0.0, 0.0], [0.2, 1.5], [1.1, -0.3], [0.1, 0.9], [0.7, 0.4]])  # (V, C)
    classifier = Classifier(LookupClassifier(table), words, labels, {"lowercase": False})
    gold = ["pos", "neg", "neutral", "neutral", "pos"]
    read = Read([Example([w], g, k + 1) for k, (w, g) in enumerate(zip(["good", "bad", "meh", "fine", "bad"],
                                                                          gold))], 0)
    report = evaluate_classifier_items(classifier, evaluation_items(classifier, read), batch_size=2)
    pred = ["pos", "neg", "pos", "neg", "neg"]  # the argmax of each row, by hand
    assert report.accuracy == pytest.approx(2 / 5)  # good, bad right; the two neutrals can never be
    # F1 per label: neg 2·1/(1+3) = 0.5, pos 2·1/(2+2) = 0.5, neutral 0 (never predicted) -> macro 1/3
    assert report.macro_f1 == pytest.approx(1 / 3)
    from sklearn.metrics import f1_score  # the reference: macro average over the union of gold and predictions
    assert report.macro_f1 == pytest.approx(f1_score(gold, pred, average="macro"))
    assert report.labels == ["neg", "pos", "neutral"] and report.confusion == [[1, 0, 0], [1, 1, 0], [1, 1, 0]]
    assert str(report.unseen) == "unseen in training: 1 label (neutral) on 2 examples"
    known = torch.tensor([2, 3, 3])  # the word ids of good, bad, bad: the examples whose labels have logits
    expected = F.cross_entropy(table[known], torch.tensor([1, 0, 1])).item()
    assert report.loss == pytest.approx(expected)


def test_evaluate_cli_on_a_classifier_with_an_unseen_label_exits_0(tmp_path, capsys):
    train = tmp_path / "train.tsv"
    train.write_text("pos\ta good film\nneg\ta bad film\n")
    test = tmp_path / "test.tsv"
    test.write_text("pos\tgood\nmeh\tso so\nmeh\tfine\nneg\tbad\n")
    run = tmp_path / "run"
    assert main(["train", "classify", "--train", str(train), "--valid", str(train), "--out", str(run),
                 "--max-steps", "1", "--embedding-size", "4", "--hidden-size", "4", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(run), "--data", str(test)]) == 0
    out = capsys.readouterr().out
    assert "test unseen in training: 1 label (meh) on 2 examples\n" in out
    accuracy = float(next(line for line in out.splitlines() if line.startswith("test accuracy")).split()[-1])
    assert accuracy <= 0.5  # the two "meh" examples are always wrong


# --- synthetic translation tasks ----------------------------------------------------------------------------


def test_synthetic_task_by_default_samples_every_length_up_to_max_and_is_seeded():
    from recurrent.train.translate import TrainTranslateConfig, read_data
    config = TrainTranslateConfig(synthetic="reverse", task_size=400)
    train, valid, _, _ = read_data(config)
    assert {len(src.split()) for src, _ in train} == set(range(1, config.task_max_len + 1))
    assert read_data(config)[0] == train  # the same pairs for the same seed
    assert all(tgt.split() == src.split()[::-1] for src, tgt in train)
    task = SyntheticTask("reverse")
    assert (task.min_len, task.max_len) == (1, 8)
