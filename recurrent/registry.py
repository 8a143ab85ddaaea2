"""The registry of tasks: what `recurrent train <task>`, `evaluate` and `predict` (and any later command) are built
from. A run folder's config.json names its task, and commands look it up here. A new task is its own file (its
config, its Task for recurrent.train.loop, its trainer) and one entry below.

    spec = TASKS["lm"]
    spec.config_class, spec.model_class, spec.train(config)     # what `recurrent train lm` builds and calls
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable


@dataclass(frozen=True)
class TaskSpec:
    """One task. Modules are named, not imported, so that `recurrent --help` stays fast and light."""

    name: str
    help: str  # one line for `recurrent train --help`
    trainer: str  # "module:function" taking the config and returning the run folder
    config: str  # "module:Class": the task config (with nested `training` and `model` configs)
    model_config: str  # "module:Class"
    derived: frozenset[str]  # model fields taken from the data: no flags for them
    summary: Callable[[dict], str]  # the best checkpoint's metrics -> the line `recurrent train` prints
    evaluate: str | None = None  # "module": its evaluate(args) scores a run on a test set (`recurrent evaluate`)
    predict: str | None = None  # "module:function": function(args, lines) labels stdin (`recurrent predict`)
    examples: str = ""  # command lines for `recurrent train <task> --help`
    aliases: dict[str, tuple[str, str]] = field(default_factory=dict)  # flag -> (config field, help): translate's
    #                                                                       --task sets `synthetic`

    @property
    def config_class(self) -> type:
        return _load(self.config)

    @property
    def model_class(self) -> type:
        return _load(self.model_config)

    def train(self, config):
        return _load(self.trainer)(config)


def _load(path: str):
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def _loss(best: dict) -> str:
    return f"best valid loss {best['val_loss']:.4f} nats/token at step {best['step']}"


TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in [
    TaskSpec(
        "lm", "train a language model (one-to-many: generation)",
        "recurrent.train.lm:train_lm", "recurrent.train.lm:TrainLMConfig", "recurrent.models.lm:LMConfig",
        frozenset({"vocab_size", "num_conditions", "condition_size", "reset_id"}), _loss,
        evaluate="recurrent.cli.evaluate_lm",
        examples="""\
    recurrent train lm --data input.txt --out runs/shakespeare --hidden-size 256 --max-time 600
    recurrent train lm --train train.tsv --valid dev.tsv --level word --condition label   # label<TAB>text lines
    recurrent train lm --train a.txt --valid b.txt --condition a.npy --valid-condition b.npy   # a vector a line
    recurrent train lm --config shakespeare.toml --lr 1e-3          # flags win over the file
    recurrent train lm --config shakespeare.toml --resume           # continue from runs/.../last.safetensors"""),
    TaskSpec(
        "classify", "train a sequence or tree classifier (many-to-one)",
        "recurrent.train.classify:train_classify", "recurrent.train.classify:TrainClassifyConfig",
        "recurrent.models.classifier:ClassifierConfig", frozenset({"vocab_size", "num_classes"}),
        lambda best: (f"best valid accuracy {best['accuracy']:.3f} (macro-F1 {best['macro_f1']:.3f}) at step "
                      f"{best['step']}"),
        evaluate="recurrent.cli.evaluate_classify", predict="recurrent.cli.predict:classify",
        examples="""\
    recurrent train classify --train train.tsv --valid dev.tsv --out runs/sent          # label<TAB>text
    recurrent train classify --format csv --header --text-col sentence --label-col label --train ... --valid ...
    recurrent train classify --format sst --binary --train sst/train.txt --valid sst/dev.txt --out runs/sst2
    recurrent train classify --format sst --structure tree --phrases --train ... --valid ...   # a Tree-LSTM"""),
    TaskSpec(
        "tag", "train a sequence tagger (synced many-to-many)",
        "recurrent.train.tag:train_tag", "recurrent.train.tag:TrainTagConfig", "recurrent.models.tagger:TaggerConfig",
        frozenset({"vocab_size", "num_chars", "num_tags"}),
        lambda best: ("best valid " + (f"F1 {best['f1']:.1f}, " if best.get("f1") is not None else "")
                      + f"token accuracy {best['token_accuracy']:.3f} at step {best['step']}"),
        evaluate="recurrent.cli.evaluate_tag", predict="recurrent.cli.predict:tag",
        examples="""\
    recurrent train tag --train eng.train --valid eng.testa --column 3 --crf --char-encoder lstm --out runs/ner
    recurrent train tag --format conllu --train en_ewt-ud-train.conllu.gz --valid en_ewt-ud-dev.conllu.gz \\
        --field upos --out runs/pos
  --column is the 0-based tag column of a CoNLL file (default: the last). IOB1 tags (CoNLL-2003) become BIO."""),
    TaskSpec(
        "translate", "train an encoder-decoder with attention (many-to-many of different lengths)",
        "recurrent.train.translate:train_translate", "recurrent.train.translate:TrainTranslateConfig",
        "recurrent.models.seq2seq:Seq2SeqConfig", frozenset({"src_vocab_size", "tgt_vocab_size"}), _loss,
        evaluate="recurrent.cli.evaluate_translate", aliases={"--task": ("synthetic", "train on a synthetic task instead of files: reverse, copy or sort "
                                    "(TOML key: synthetic)")},
        examples="""\
    recurrent train translate --src train.de --tgt train.en --valid-src val.de --valid-tgt val.en --out runs/de-en
    recurrent train translate --task reverse --out runs/reverse --max-steps 300 --hidden-size 64
    recurrent train translate --config de-en.toml --attention dot          # flags win over the file"""),
    TaskSpec(
        "memory", "train a cell on a long-range memory task: the adding problem or copy memory",
        "recurrent.tasks.memory:train_memory", "recurrent.tasks.memory:TrainMemoryConfig",
        "recurrent.tasks.memory:MemoryModelConfig", frozenset(),
        lambda best: (f"best valid loss {best['val_loss']:.4f} (baseline {best['baseline']:.4f}) at step "
                      f"{best['step']}"),
        aliases={"--task": ("problem", "adding or copy (TOML key: problem)")},
        examples="""\
    recurrent train memory --task adding --seq-len 100 --cell lstm --out runs/adding     # 120 s; baseline 0.167
    recurrent train memory --task copy --seq-len 100 --cell gru --max-steps 5000
    recurrent bench memory --task adding --seq-len 100 --cells rnn,lstm                  # the same, cell by cell"""),
    TaskSpec(
        "forecast", "train a probabilistic forecaster (many series, one global model)",
        "recurrent.forecast.task:train_forecast", "recurrent.forecast.task:TrainForecastConfig",
        "recurrent.models.forecaster:ForecasterConfig",
        frozenset({"num_features", "num_series", "context_length", "horizon", "lags", "season"}),
        lambda best: (f"best valid NLL {best['val_loss']:.4f}"
                      + (f" (sMAPE {best['smape']:.2f}, MASE {best['mase']:.3f})" if best.get("smape") is not None
                         else "") + f" at step {best['step']}"),
        evaluate="recurrent.cli.evaluate_forecast",
        examples="""\
    recurrent train forecast --data series.csv --horizon 48 --season 24 --out runs/hourly   # id,timestamp,value
    recurrent train forecast --data m4/Hourly-train.csv --horizon 48 --season 24 --out runs/m4-hourly   # M4 wide
    recurrent train forecast --data m4/Hourly-train.csv --horizon 48 --season 24 --architecture mqrnn --window 168 \\
        --hidden-size 64 --batch-size 64 --lr 3e-3 --schedule cosine --max-time 1800 --out runs/m4-mqrnn
  The last --horizon steps of every series are held out for validation (val_loss: their NLL, or MQ-RNN's pinball
  loss; sMAPE, MASE)."""),
    TaskSpec(
        "speech", "train a CTC speech recogniser (audio -> characters)",
        "recurrent.tasks.speech:train_speech", "recurrent.tasks.speech:TrainSpeechConfig",
        "recurrent.models.speech:SpeechConfig", frozenset({"input_size", "num_chars"}),
        lambda best: (f"best valid CER {best['cer']:.3f} (WER {best['wer']:.3f}, greedy) at step {best['step']}"),
        evaluate="recurrent.cli.evaluate_speech",
        examples="""\
    recurrent train speech --train data/train.tsv --valid data/valid.tsv --out runs/digits   # path<TAB>transcript
    recurrent train speech --train ... --valid ... --no-bidirectional --normalize running    # can transcribe --stream
    recurrent transcribe runs/digits a.wav b.wav --beam 8"""),
]}
