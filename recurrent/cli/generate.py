"""`recurrent generate RUN`: sample text from a trained language model, printed as it is produced.

    recurrent generate runs/shakespeare --prime "ROMEO:" --length 500 --temperature 0.8 --top-k 40
    recurrent generate runs/shakespeare --prime-file opening.txt --greedy
    recurrent generate runs/ptb --prime "the company" --length 20 --beam 8   # the most likely 20 words
    recurrent generate runs/shakespeare --device cuda          # the same samples for a --seed, on the GPU
    recurrent generate runs/sst-cond --condition positive      # a run trained with --condition label
    recurrent generate runs/captions --condition-row feats.npy:7 --temperature 0.7    # or --condition-vector 0.1,...

The sampling noise comes from a CPU generator seeded with --seed whatever the device, so a seed picks the same
noise on the CPU and the GPU (the logits themselves may differ in their last bits).

The prime is printed as given, then the continuation. At word level the prime is read as words: it ends its
sentence (an <eos>) only if it ends with a newline, the first generated word follows it after a space, and
words are joined by spaces with <eos> as a newline. A character or word that training never saw reads as
<unk> (a note on stderr says which); a char model prints a generated <unk> as U+FFFD, the replacement character.
A run whose char vocabulary predates <unk> refuses a prime with unseen characters, naming them.

A run trained on sentences (`recurrent train lm --condition ...`) writes one sentence: the prime (if any) is read
as its beginning, and generation stops at its end (or after --length tokens). A conditioned run needs its
condition: a label it was trained on (--condition), or a feature vector of the training width (--condition-vector,
or --condition-row FILE:N, the Nth row, from 1, of a .npy or CSV file).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from recurrent.cli.config import add_run_args, precision_from_args
from recurrent.data import read_text
from recurrent.data.features import read_features
from recurrent.data.text import EOS, UNK
from recurrent.decoding import lm_beam_search
from recurrent.errors import UserError
from recurrent.inference.common import BEST
from recurrent.inference.lm import count_unseen, load_lm
from recurrent.validation import Range, at_least, flag, positive

REPLACEMENT = "\ufffd"  # how a char model's <unk> prints: one character, as any other


def register(subparsers) -> None:
    p = subparsers.add_parser("generate", help="sample text from a trained language model", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN", help="a run folder written by `recurrent train lm`")
    p.add_argument("--prime", default=None, help="text to start from (default: a newline, or the first token)")
    p.add_argument("--prime-file", default=None, help="read the prime from this UTF-8 file")
    p.add_argument("--length", type=flag(int, **at_least(0)), default=500, help="tokens to generate")
    p.add_argument("--temperature", type=flag(float, **positive()), default=1.0)
    p.add_argument("--top-k", type=flag(int, **at_least(0)), default=0,
                   help="sample among the k most likely tokens (0: all)")
    p.add_argument("--top-p", type=flag(float, range=Range(0, 1, low_open=True)), default=1.0,
                   help="nucleus sampling: the smallest set with this mass")
    p.add_argument("--greedy", action="store_true", help="always take the most likely token")
    p.add_argument("--beam", type=flag(int, **at_least(1)), default=1, help="K > 1: no sampling; print the most "
                   "likely continuation of --length tokens found by beam search with K beams (printed at the end)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--condition", metavar="LABEL", help="a label-conditioned run: the label to write for")
    p.add_argument("--condition-vector", metavar="X,Y,...", help="a vector-conditioned run: the feature vector")
    p.add_argument("--condition-row", metavar="FILE:N", help="a vector-conditioned run: row N (from 1) of a .npy "
                   "or CSV feature file")
    add_run_args(p)  # --device, --precision (bf16: bfloat16 weights for the per-token products; samples not
    # bit-equal with fp32; on a GPU no faster at batch 1: benchmarks/gpu_speed.py)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    _check(args)
    precision = precision_from_args(args)
    lm = load_lm(args.run, args.device)
    model, vocab = lm.model, lm.vocab
    meta = json.loads((Path(args.run) / f"{BEST}.json").read_text(encoding="utf-8"))
    condition = _condition(args, model, meta.get("labels"))
    sentences = meta.get("sentences") is not None  # trained one sentence at a time: write one
    prime = read_text(args.prime_file) if args.prime_file else args.prime
    if prime is None:
        prime = "\n" if "\n" in vocab.stoi or vocab.level == "word" else next(t for t in vocab.itos if t != UNK)
    ids = _encode_prime(vocab, prime)
    sep = int(vocab.encode("\n")[0])  # a sentence run's sentences start and end with it
    if sentences and ids[0] != sep:
        ids = torch.cat([torch.tensor([sep]), ids])
    out = sys.stdout
    out.write(prime.removeprefix("\n") if sentences else prime)
    if args.beam > 1:
        if condition is not None:
            raise UserError("--beam does not take a condition: sample instead (--greedy for the most likely token)")
        tokens = lm_beam_search(model, ids, args.length, args.beam, bf16=precision.bf16).tokens
    else:
        generator = torch.Generator().manual_seed(args.seed)
        tokens = model.generate(ids, args.length, args.temperature, args.top_k, args.top_p, args.greedy,
                                generator, bf16=precision.bf16, condition=condition)
    space = vocab.level == "word" and not prime[-1].isspace()  # a word after the prime needs a space before it
    for token in tokens:
        if sentences and token == sep:
            break  # the end of the sentence
        text, space = _text_of(vocab, token, space)
        out.write(text)
        out.flush()  # stream: each token appears as soon as it is sampled
    out.write("\n")
    return 0


def _condition(args: argparse.Namespace, model, labels: list[str] | None) -> torch.Tensor | None:
    """The condition asked for, as the model takes it: a label's id (), or features (F,); None for a model without
    one. A UserError for a missing condition, one of the wrong kind, an unknown label or a vector of the wrong width."""
    given = [f"--{name.replace('_', '-')}" for name in ("condition", "condition_vector", "condition_row")
             if getattr(args, name) is not None]
    if len(given) > 1:
        raise UserError(f"give one condition, not {' and '.join(given)}")
    if not model.conditioned:
        if given:
            raise UserError(f"{args.run} was trained without a condition: {given[0]} does not apply")
        return None
    if labels:
        if args.condition not in labels:
            got = repr(args.condition) if args.condition is not None else (given[0] if given else "no --condition")
            raise UserError(f"{args.run} is conditioned on a label: --condition must be one of {labels}, got {got}")
        return torch.tensor(labels.index(args.condition))
    width = model.config.condition_size
    if args.condition_vector is not None:
        try:
            vector = torch.tensor([float(v) for v in args.condition_vector.split(",")])
        except ValueError:
            raise UserError(f"--condition-vector must be {width} comma-separated numbers, got "
                            f"{args.condition_vector!r}") from None
        if len(vector) != width or not torch.isfinite(vector).all():
            raise UserError(f"--condition-vector must be {width} finite numbers, got {len(vector)}: "
                            f"{args.condition_vector!r}")
        return vector
    if args.condition_row is not None:
        path, _, n = args.condition_row.rpartition(":")
        rows = read_features(path, width) if path and n.isdigit() else None
        if rows is None or not 1 <= int(n) <= len(rows):
            raise UserError(f"--condition-row must be FILE:N with N in 1..{'N' if rows is None else len(rows)}, "
                            f"got {args.condition_row!r}")
        return torch.from_numpy(rows[int(n) - 1])
    raise UserError(f"{args.run} is conditioned on {width} features: give --condition-vector X,Y,... or "
                    f"--condition-row FILE:N")


def _encode_prime(vocab, prime: str) -> torch.Tensor:
    """The prime's ids (P,). Unseen tokens read as <unk>, with a note on stderr (a run whose char vocabulary has
    no <unk> refuses them). At word level the prime's last line ends its sentence only if it ends with a
    newline: "the company" continues the sentence, it does not start a new one after an <eos>."""
    unseen = count_unseen(vocab, prime, "the prime")
    if unseen.counts:
        print(f"recurrent: the prime holds {unseen.summary()} that training never saw: read as {UNK}",
              file=sys.stderr)
    ids = vocab.encode(prime)  # (P,)
    if vocab.level == "word" and not prime.endswith("\n") and ids.numel() and ids[-1] == vocab.stoi[EOS]:
        ids = ids[:-1]  # tokenising adds an <eos> after every line, the unfinished last one included
    if ids.numel() == 0:
        raise UserError("the prime holds no tokens: give some text with --prime or --prime-file")
    return ids


def _text_of(vocab, token: int, space: bool) -> tuple[str, bool]:
    """A generated token's text, and whether the next word needs a space before it (word level)."""
    if vocab.level == "char":
        return (REPLACEMENT if token == vocab.unk_index else vocab.itos[token]), False
    word = vocab.itos[token]
    if word == EOS:
        return "\n", False
    return (" " + word if space else word), True


def _check(args: argparse.Namespace) -> None:
    """The flags that go together, or do not (each flag's own range is checked as it is parsed)."""
    if args.prime is not None and args.prime_file is not None:
        raise UserError("give --prime or --prime-file, not both")
    sampling = [f for f, on in (("--greedy", args.greedy), ("--temperature", args.temperature != 1.0),
                                ("--top-k", args.top_k != 0), ("--top-p", args.top_p != 1.0)) if on]
    if args.beam > 1 and sampling:
        raise UserError(f"--beam {args.beam} searches for the most likely continuation, so {', '.join(sampling)} "
                        f"(for sampling) cannot apply: give one or the other")
