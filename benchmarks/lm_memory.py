"""Peak memory of `recurrent train lm` against corpus size (issue 16: a 100 MB corpus within 10% of a 1 MB one).

    python benchmarks/lm_memory.py                        # 1 MB and 100 MB corpora, tinyshakespeare's lines
    python benchmarks/lm_memory.py --sizes 1,10 --source ../shared/data/ptb/ptb.train.txt --level word \
        --vocab-size 5000 --eval-batch-size 20

Each corpus is the source's lines, shuffled again for every repetition (seeded), written to a temporary folder
(never the repo) until it holds the size asked for. Then one `recurrent train lm --data CORPUS` per corpus, in its
own process, with the same model, batch and --max-steps; its peak resident set size comes from os.wait4 (the
kernel's ru_maxrss of that child alone). The model must be the same: at word level a small corpus may hold fewer
distinct words, and a larger output layer makes a larger peak, so cap --vocab-size there. The last run is then read back by `recurrent evaluate` and
`recurrent generate`, to check that a run trained on a streamed corpus still works. Prints:

    corpus     MB   peak RSS MB   ratio   seconds

The corpus never sits in memory whole: the vocabulary is counted in one streaming pass, and the ids are written
chunk by chunk to a memory-mapped temporary file (recurrent/data/corpus_stream.py). What grows with the corpus is
the pages of that file a run touches (a few per window, and the valid split at each evaluation): the kernel counts
them in RSS while they are mapped, and can drop them at any time, as they are clean file pages.
"""
from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared/data"  # ../shared/data beside the checkout
MB = 1_000_000


def write_corpus(source: Path, path: Path, size: int, seed: int) -> int:
    """The source's lines, reshuffled for every repetition, until `size` bytes; returns the bytes written."""
    lines = [line for line in source.read_bytes().splitlines(keepends=True) if line.strip()]
    rng, written = random.Random(seed), 0
    with open(path, "wb") as f:
        while written < size:
            rng.shuffle(lines)
            for line in lines:
                f.write(line)
                written += len(line)
                if written >= size:
                    break
    return written


def run(command: list[str]) -> tuple[float, float, str]:
    """(peak RSS in MB, seconds, its output) of one command in its own process; raises if it fails."""
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = child.stdout.read().decode("utf-8", "replace")
    _, status, usage = os.wait4(child.pid, 0)  # this child's own resource usage
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({child.returncode}):\n{output}")
    return usage.ru_maxrss / 1024, time.perf_counter() - start, output.strip()  # ru_maxrss: KiB on Linux


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default=str(SHARED_DATA / "tinyshakespeare/input.txt"), help="the lines to repeat")
    p.add_argument("--sizes", default="1,100", help="corpus sizes in MB (10^6 bytes), the first the reference")
    p.add_argument("--level", default="char", choices=["char", "word"])
    p.add_argument("--vocab-size", type=int, default=0, help="cap the vocabulary (word level: the same size for "
                   "every corpus, so the models are the same)")
    p.add_argument("--max-steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--bptt", type=int, default=64)
    p.add_argument("--hidden-size", type=int, default=64)
    p.add_argument("--eval-batch-size", type=int, default=100,
                   help="streams when scoring the valid tenth: more is quicker, but each window's activations "
                        "(B x bptt x 4H gates) are a transient peak of RSS")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", default=None, help="a folder for the corpora and runs, kept (default: a temporary one)")
    args = p.parse_args()
    source = Path(args.source)
    if not source.is_file():
        raise SystemExit(f"{source}: no such file (the shared data folder, ../shared/data, is missing?)")

    with tempfile.TemporaryDirectory(prefix="lm-memory-") as scratch:
        folder = Path(args.keep or scratch)
        folder.mkdir(parents=True, exist_ok=True)
        recurrent = [sys.executable, "-m", "recurrent"]
        rows = []
        for size in [float(s) for s in args.sizes.split(",")]:
            corpus = folder / f"corpus_{size:g}MB.txt"
            written = write_corpus(source, corpus, int(size * MB), args.seed)
            out = folder / f"run_{size:g}MB"
            rss, seconds, _ = run([*recurrent, "train", "lm", "--data", str(corpus), "--out", str(out), "--overwrite",
                                   "--level", args.level, "--vocab-size", str(args.vocab_size),
                                   "--max-steps", str(args.max_steps),
                                   "--batch-size", str(args.batch_size), "--bptt", str(args.bptt),
                                   "--hidden-size", str(args.hidden_size), "--num-layers", "1",
                                   "--eval-batch-size", str(args.eval_batch_size), "--threads", str(args.threads),
                                   "--no-progress"])
            rows.append((corpus.name, written / MB, rss, seconds))
        print(f"{'corpus':<20} {'MB':>8} {'peak RSS MB':>12} {'ratio':>7} {'seconds':>8}")
        for name, size, rss, seconds in rows:
            print(f"{name:<20} {size:8.1f} {rss:12.1f} {rss / rows[0][2]:7.3f} {seconds:8.1f}")
        sample = corpus.read_text(encoding="utf-8")[:2000]
        (folder / "sample.txt").write_text(sample, encoding="utf-8")
        rss, _, score = run([*recurrent, "evaluate", str(out), "--data", str(folder / "sample.txt")])
        print(f"recurrent evaluate {out.name} --data sample.txt: {score.splitlines()[0]} (peak RSS {rss:.1f} MB)")
        rss, _, text = run([*recurrent, "generate", str(out), "--length", "60", "--seed", "0"])
        print(f"recurrent generate {out.name}: {text[-60:]!r} (peak RSS {rss:.1f} MB)")


if __name__ == "__main__":
    main()
