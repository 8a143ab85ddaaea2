"""`recurrent transcribe RUN a.wav b.wav ...`: one line of text per file, in the order given.

    recurrent transcribe runs/digits a.wav b.wav              # greedy CTC decoding
    recurrent transcribe runs/digits a.wav --beam 8           # prefix beam search
    recurrent transcribe runs/digits a.wav --beam 8 --lexicon words.txt   # words not in the list pay a penalty
    recurrent transcribe runs/ptb a.wav --beam 8 --lm sentences.txt       # a word bigram LM from a text file
    recurrent transcribe runs/ptb a.wav --beam 8 --lm sentences.txt --lm-type char --lm-order 6   # a character
                                                              # 6-gram: open vocabulary, words it never saw
    recurrent transcribe runs/stream a.wav --stream           # fed 200 ms at a time, the state carried (a
                                                              # unidirectional model trained with --normalize running)
Audio at another sample rate is resampled and stereo downmixed; a line on stderr says so.
"""
from __future__ import annotations

import argparse
import sys

from recurrent.cli.config import add_run_args, precision_from_args
from recurrent.devices import resolve_device
from recurrent.errors import UserError
from recurrent.validation import at_least, flag


def register(subparsers) -> None:
    p = subparsers.add_parser("transcribe", help="speech to text with a `recurrent train speech` run",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN", help="a run folder written by `recurrent train speech`")
    p.add_argument("files", metavar="FILE", nargs="+", help="audio files (WAV, FLAC, ...: what soundfile reads)")
    p.add_argument("--beam", type=flag(int, **at_least(1)), default=1, help="beam size (1: greedy)")
    p.add_argument("--lexicon", metavar="FILE", help="a word list (one a line): beam search charges --penalty for "
                   "each word outside it")
    p.add_argument("--penalty", type=flag(float, **at_least(0)), default=10.0, help="--lexicon: log cost of a "
                   "word outside the list")
    p.add_argument("--lm", metavar="FILE", help="a text file, a sentence a line: beam search adds a word bigram "
                   "LM built from it")
    p.add_argument("--lm-type", choices=("word", "char"), default="word", help="--lm: a word bigram, or a "
                   "character n-gram (Witten-Bell) for words the text never holds")
    p.add_argument("--lm-order", type=flag(int, **at_least(1)), default=6, help="--lm-type char: n")
    p.add_argument("--lm-weight", type=flag(float, **at_least(0)), default=0.5, help="--lm: the LM's weight")
    p.add_argument("--word-bonus", type=flag(float), default=1.0, help="--lm-type word: log bonus per word")
    p.add_argument("--char-bonus", type=flag(float), default=0.0, help="--lm-type char: log bonus per character")
    p.add_argument("--stream", action="store_true", help="feed the audio chunk by chunk, carrying the state")
    p.add_argument("--chunk-ms", type=flag(float, **at_least(1)), default=200.0, help="--stream: chunk length")
    add_run_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from recurrent.speech.ctc import CharNgram, Lexicon, WordBigram
    from recurrent.speech.data import Conversions, read_words
    from recurrent.speech.inference import load_recognizer

    precision = precision_from_args(args)
    rec = load_recognizer(args.run, args.device)
    if args.lexicon and args.lm:
        raise UserError("give --lexicon or --lm, not both")
    if (args.lexicon or args.lm) and args.beam == 1:
        raise UserError(f"{'--lexicon' if args.lexicon else '--lm'} needs beam search: give --beam 2 or more")
    if args.lexicon:
        rec.scorer = Lexicon(read_words(args.lexicon), rec.vocab.itos, args.penalty)
    if args.lm and args.lm_type == "word":
        rec.scorer = WordBigram(read_words(args.lm), rec.vocab.itos, args.lm_weight, args.word_bonus)
    elif args.lm:
        rec.scorer = CharNgram(read_words(args.lm), rec.vocab.itos, args.lm_order, args.lm_weight, args.char_bonus)
    conversions = Conversions()
    with precision.autocast(resolve_device(args.device).type):
        for path in args.files:
            print(rec.transcribe(path, args.beam, args.stream, conversions), flush=True)
    said = conversions.describe(rec.features.sample_rate)
    if said:
        print(f"recurrent: transcribe: {said}", file=sys.stderr)
    return 0
