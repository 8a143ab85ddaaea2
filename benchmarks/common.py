"""What the benchmark scripts share: their common flags, the data check, one timed training run, the closing lines.

The scripts run as `python benchmarks/NAME.py`, so Python finds this file next to them: `from common import ...`.
"""
import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path

from recurrent.train.loop import BEST

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared/data"  # ../shared/data beside the checkout

# The tagger of both tagging benchmarks (conll2003.py, ud_pos.py): a BiLSTM over word embeddings and a char BiLSTM's
# summary of each word (Lample et al. 2016), trained with Adam on lowercased words, half the singletons as <unk>.
TAGGER_MODEL = dict(cell="lstm", embedding_size=100, bidirectional=True, char_encoder="lstm", char_embedding_size=25,
                    char_hidden_size=25)
TAGGER_TRAINER = dict(lowercase=True, unk_replace=0.5, lr=2e-3, clip=5.0, patience=8)


def parser(doc: str) -> argparse.ArgumentParser:
    """A parser whose --help prints the script's docstring as written."""
    return argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)


def add_run_flags(p: argparse.ArgumentParser, data: Path, out: str,
                  max_time_help: str = "override the time budget (seconds)") -> None:
    """--data (the data folder), --max-time (0: the configuration's own budget) and --out (the run folder's prefix)."""
    p.add_argument("--data", default=str(data))
    p.add_argument("--max-time", type=float, default=0.0, help=max_time_help)
    p.add_argument("--out", default=out)


def add_precision_flags(p: argparse.ArgumentParser) -> None:
    """--precision auto|fp32|bf16, and --bf16 as its short form."""
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="auto: bf16 where the CPU multiplies it natively (AVX512-BF16, AMX), else fp32")
    p.add_argument("--bf16", dest="precision", action="store_const", const="bf16", help="--precision bf16")


def data_files(folder: str, pattern: str, splits: tuple[str, ...], lacks: str, needs: str) -> dict[str, Path]:
    """{split: folder/pattern.format(split)}; exits with one line when any is missing, which names them as `lacks`
    does (e.g. "train/dev/test.txt") and the folder of ../shared/data that has them (`needs`)."""
    files = {split: Path(folder) / pattern.format(split) for split in splits}
    if not all(f.is_file() for f in files.values()):
        raise SystemExit(f"{folder} lacks {lacks}: the benchmark needs ../shared/data/{needs}")
    return files


def with_budget(trainer: dict, max_time: float) -> dict:
    """The trainer fields, with max_time set to --max-time when one was given (0 keeps the configuration's)."""
    return {**trainer, **({"max_time": max_time} if max_time else {})}


def train_timed(train, config) -> tuple[Path, float, dict]:
    """Run `train(config)`; return the run folder, its wall time in seconds and the best checkpoint's metrics."""
    start = time.monotonic()
    run_dir = train(config)
    wall = time.monotonic() - start
    best = json.loads((run_dir / f"{BEST}.json").read_text())["metrics"]
    return run_dir, wall, best


def train_and_test(train, config, load, evaluate, test: Path, summary) -> None:
    """Train, score the best checkpoint on the test file, and print the report: the lines `summary(report, best)`
    returns (`evaluate`'s report, the best checkpoint's validation metrics), the wall time and the config."""
    run_dir, wall, best = train_timed(train, config)
    print(summary(evaluate(load(run_dir), test), best))
    print_wall_and_config(wall, config)


def print_wall_and_config(wall: float, config) -> None:
    """The closing lines of a benchmark's report: the wall time and the exact configuration it ran."""
    print(f"wall time {wall:.0f} s")
    print("config " + json.dumps(asdict(config)))
