"""`recurrent generate RUN`: sample text from a trained language model, printed as it is produced.

    recurrent generate runs/shakespeare --prime "ROMEO:" --length 500 --temperature 0.8 --top-k 40
    recurrent generate runs/shakespeare --prime-file opening.txt --greedy
    recurrent generate runs/ptb --prime "the company" --length 20 --beam 8   # the most likely 20 words
    recurrent generate runs/shakespeare --device cuda          # the same samples for a --seed, on the GPU

The sampling noise comes from a CPU generator seeded with --seed whatever the device, so a seed picks the same
noise on the CPU and the GPU (the logits themselves may differ in their last bits).

The prime is printed as given, then the continuation. At word level the prime is read as words: it ends its
sentence (an <eos>) only if it ends with a newline, the first generated word follows it after a space, and
words are joined by spaces with <eos> as a newline. A character or word that training never saw reads as
<unk> (a note on stderr says which); a char model prints a generated <unk> as U+FFFD, the replacement character.
A run whose char vocabulary predates <unk> refuses a prime with unseen characters, naming them.
"""
from __future__ import annotations

import argparse
import sys

import torch

from recurrent.cli.config import add_run_args, precision_from_args
from recurrent.data import read_text
from recurrent.data.text import EOS, UNK
from recurrent.decoding import lm_beam_search
from recurrent.errors import UserError
from recurrent.train.lm import count_unseen, load_lm

REPLACEMENT = "\ufffd"  # how a char model's <unk> prints: one character, as any other


def register(subparsers) -> None:
    p = subparsers.add_parser("generate", help="sample text from a trained language model", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN", help="a run folder written by `recurrent train lm`")
    p.add_argument("--prime", default=None, help="text to start from (default: a newline, or the first token)")
    p.add_argument("--prime-file", default=None, help="read the prime from this UTF-8 file")
    p.add_argument("--length", type=int, default=500, help="tokens to generate")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0, help="sample among the k most likely tokens (0: all)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling: the smallest set with this mass")
    p.add_argument("--greedy", action="store_true", help="always take the most likely token")
    p.add_argument("--beam", type=int, default=1, help="K > 1: no sampling; print the most likely continuation "
                   "of --length tokens found by beam search with K beams (printed at the end)")
    p.add_argument("--seed", type=int, default=1)
    add_run_args(p)  # --device, --precision (bf16: bfloat16 weights for the per-token products; samples not
    # bit-equal with fp32; on a GPU no faster at batch 1: benchmarks/gpu_speed.py)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    _check(args)
    precision = precision_from_args(args)
    model, vocab = load_lm(args.run, args.device)
    prime = read_text(args.prime_file) if args.prime_file else args.prime
    if prime is None:
        prime = "\n" if "\n" in vocab.stoi or vocab.level == "word" else next(t for t in vocab.itos if t != UNK)
    ids = _encode_prime(vocab, prime)
    out = sys.stdout
    out.write(prime)
    if args.beam > 1:
        tokens = lm_beam_search(model, ids, args.length, args.beam, bf16=precision.bf16).tokens
    else:
        generator = torch.Generator().manual_seed(args.seed)
        tokens = model.generate(ids, args.length, args.temperature, args.top_k, args.top_p, args.greedy,
                                generator, bf16=precision.bf16)
    space = vocab.level == "word" and not prime[-1].isspace()  # a word after the prime needs a space before it
    for token in tokens:
        text, space = _text_of(vocab, token, space)
        out.write(text)
        out.flush()  # stream: each token appears as soon as it is sampled
    out.write("\n")
    return 0


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
    if args.length < 0:
        raise UserError(f"--length must be >= 0, got {args.length}")
    if not args.greedy and args.temperature <= 0:
        raise UserError(f"--temperature must be > 0 (or use --greedy), got {args.temperature}")
    if args.top_k < 0:
        raise UserError(f"--top-k must be >= 0, got {args.top_k}")
    if not 0.0 < args.top_p <= 1.0:
        raise UserError(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.prime is not None and args.prime_file is not None:
        raise UserError("give --prime or --prime-file, not both")
    if args.beam < 1:
        raise UserError(f"--beam must be >= 1, got {args.beam}")
    sampling = [f for f, on in (("--greedy", args.greedy), ("--temperature", args.temperature != 1.0),
                                ("--top-k", args.top_k != 0), ("--top-p", args.top_p != 1.0)) if on]
    if args.beam > 1 and sampling:
        raise UserError(f"--beam {args.beam} searches for the most likely continuation, so {', '.join(sampling)} "
                        f"(for sampling) cannot apply: give one or the other")
