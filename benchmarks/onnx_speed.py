"""ONNX inference speed: onnxruntime on the CPU against our eager model, on one classifier batch, in one run.

    python benchmarks/onnx_speed.py                        # BiLSTM classifier (E=100, H=150, max pooling), B=64, T<=40
    python benchmarks/onnx_speed.py --cell gru --batch-size 1 --threads 2

Four ways to run the same weights on the same padded batch (lengths drawn in 1..T, one of them T):
    eager                  the model in torch, no_grad, on the backend auto picks (with ragged lengths on a CPU:
                           the C++ loop; the row names it)
    onnxruntime (RNN ops)  `recurrent export --format onnx`: the dynamo exporter, each built-in layer ONNX's
                           LSTM/GRU/RNN op with the lengths as sequence_lens
    onnxruntime (Scan)     the same exporter with rnn_ops=False: the time loop an ONNX Scan over the cell's step
                           (what any other cell exports to)
    onnxruntime (TS)       torch.onnx's TorchScript exporter (dynamo=False), for comparison
Each is checked against eager (max |difference| of the logits) before it is timed; times are medians of --repeats.
"""
import argparse
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import onnxruntime as ort
import torch

from recurrent.export import _Classifier, export_onnx, exportable
from recurrent.models.classifier import ClassifierConfig, SequenceClassifier


def timed(fn, repeats: int) -> float:
    """Median wall time of fn() in milliseconds, after two warm-up calls."""
    fn(), fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = threads
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def torchscript_onnx(model: SequenceClassifier, words, lengths, path: Path) -> Path:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(_Classifier(model).eval(), (words, lengths), str(path), dynamo=False,
                          input_names=["words", "lengths"], output_names=["logits"],
                          dynamic_axes={"words": {0: "B", 1: "T"}, "lengths": {0: "B"}})
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cell", choices=["lstm", "gru", "rnn"], default="lstm")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--time", type=int, default=40, help="T: the longest sequence (the padded width)")
    p.add_argument("--vocab-size", type=int, default=20000)
    p.add_argument("--threads", type=int, default=1, help="for torch and onnxruntime alike")
    p.add_argument("--repeats", type=int, default=30)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = SequenceClassifier(ClassifierConfig(vocab_size=args.vocab_size, num_classes=5, cell=args.cell)).eval()
    B, T = args.batch_size, args.time
    lengths = torch.randint(1, T + 1, (B,))
    lengths[0] = T
    words = torch.randint(1, args.vocab_size, (B, T)) * (torch.arange(T) < lengths.unsqueeze(1))  # 0 past each end
    with torch.no_grad():
        expected = model(words, lengths).logits

    feeds = {"words": words.numpy(), "lengths": lengths.numpy()}
    rows = []
    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        start = time.perf_counter()
        ops = session(export_onnx(exportable(model), Path(tmp) / "ops.onnx"), args.threads)
        export_s = time.perf_counter() - start
        scan = session(export_onnx(exportable(model), Path(tmp) / "scan.onnx", rnn_ops=False), args.threads)
        ts = session(torchscript_onnx(model, words, lengths, Path(tmp) / "ts.onnx"), args.threads)
        eager_ms = timed(lambda: model(words, lengths), args.repeats)
        rows.append((f"eager (torch, {model.rnn.backend.name} backend)", eager_ms, 0.0))
        for name, s in [("onnxruntime (RNN ops, `recurrent export`)", ops), ("onnxruntime (Scan)", scan),
                        ("onnxruntime (TorchScript exporter)", ts)]:
            diff = float(abs(s.run(None, feeds)[0] - expected.numpy()).max())
            rows.append((name, timed(lambda s=s: s.run(None, feeds), args.repeats), diff))

    print(f"{args.cell} classifier (E=100, H=150, bidirectional, max pooling), batch {B} x T {T} (lengths 1..{T}), "
          f"{args.threads} thread(s), torch {torch.__version__}, onnxruntime {ort.__version__}; "
          f"export took {export_s:.1f} s\n")
    print("| runtime | ms per batch | vs eager | max abs diff |")
    print("|---|---:|---:|---:|")
    for name, ms, diff in rows:
        print(f"| {name} | {ms:.2f} | {eager_ms / ms:.2f}x | {diff:.1e} |")


if __name__ == "__main__":
    main()
