"""`recurrent generate RUN`: sample text from a trained language model, printed as it is produced.

    recurrent generate runs/shakespeare --prime "ROMEO:" --length 500 --temperature 0.8 --top-k 40
    recurrent generate runs/shakespeare --prime-file opening.txt --greedy
    recurrent generate runs/shakespeare --device cuda          # the same samples for a --seed, on the GPU

The sampling noise comes from a CPU generator seeded with --seed whatever the device, so a seed picks the same
noise on the CPU and the GPU (the logits themselves may differ in their last bits).
"""
from __future__ import annotations

import argparse
import sys

import torch

from recurrent.cli.config import add_run_args, precision_from_args
from recurrent.data import read_text
from recurrent.data.text import EOS
from recurrent.errors import UserError
from recurrent.train.lm import load_lm


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
        prime = "\n" if "\n" in vocab.stoi or vocab.level == "word" else vocab.itos[0]
    ids = vocab.encode(prime)  # (P,); UserError for a character outside a char vocabulary
    if ids.numel() == 0:
        raise UserError("the prime holds no tokens: give some text with --prime or --prime-file")
    generator = torch.Generator().manual_seed(args.seed)
    out = sys.stdout
    out.write(prime)
    tokens = model.generate(ids, args.length, args.temperature, args.top_k, args.top_p, args.greedy, generator,
                            bf16=precision.bf16)
    for token in tokens:
        out.write(_text_of(vocab, token))
        out.flush()  # stream: each token appears as soon as it is sampled
    out.write("\n")
    return 0


def _text_of(vocab, token: int) -> str:
    if vocab.level == "char":
        return vocab.itos[token]
    word = vocab.itos[token]
    return "\n" if word == EOS else word + " "


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
