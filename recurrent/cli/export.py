"""`recurrent export RUN --format onnx|torch-export --out FILE`: a run's best model as one file with dynamic batch
and time axes, for onnxruntime or torch.export.load.

    recurrent export runs/sst --format onnx --out sst.onnx             # inputs words (B, T), lengths (B,)
    recurrent export runs/ptb --format torch-export --out ptb.pt2      # torch.export.load("ptb.pt2").module()

Language models (tokens -> logits), sequence classifiers (words, lengths -> logits) and taggers (words, lengths
-> emissions; CRF decoding stays outside) export; see recurrent/export.py for how, and for what does not. An ONNX
file is checked against the model with onnxruntime on a few batch sizes and lengths before the command ends.
"""
from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from recurrent.errors import UserError
from recurrent.export import FORMATS, check_onnx, export_onnx, exportable, save_program
from recurrent.runs import read_task

LOADERS = {  # a run's task -> (module, loader): the loaders check the run folder (recurrent/inference/common.py)
    "lm": ("recurrent.inference.lm", "load_lm"),
    "classify": ("recurrent.inference.classify", "load_classifier"),
    "tag": ("recurrent.inference.tag", "load_tagger"),
}


def register(subparsers) -> None:
    p = subparsers.add_parser("export", help="export a trained model to ONNX or torch.export", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", metavar="RUN", help="a run folder written by `recurrent train lm|classify|tag`")
    p.add_argument("--format", choices=FORMATS, required=True, help="onnx (.onnx, onnxruntime) or torch-export "
                   "(.pt2, torch.export.load)")
    p.add_argument("--out", required=True, metavar="FILE", help="the file to write")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    task = read_task(args.run)
    if task not in LOADERS:
        raise UserError(f"cannot export a run of task {task!r}; export covers {', '.join(sorted(LOADERS))}")
    out = Path(args.out)
    if not out.parent.is_dir():
        raise UserError(f"--out {out}: folder {out.parent} does not exist")
    module, loader = LOADERS[task]
    model = getattr(importlib.import_module(module), loader)(args.run).model  # on the CPU, in eval mode
    spec = exportable(model)
    shapes = ", ".join(f"{name} {_axes(spec, name)}" for name in spec.inputs)
    if args.format == "onnx":
        export_onnx(spec, out)
        worst = check_onnx(spec, out)
        print(f"wrote {out} (ONNX; inputs {shapes}; outputs {', '.join(spec.outputs)})")
        print(f"onnxruntime matches the model within {worst:.1e} on batches 1x1, 2x9 and 4x3 (B x T)")
    else:
        save_program(spec, out)
        print(f"wrote {out} (torch.export; inputs {shapes}; outputs {', '.join(spec.outputs)}); "
              f"load it with torch.export.load(path).module()")
    return 0


def _axes(spec, name: str) -> str:
    """An input's shape with its dynamic axes named: (B, T) or (B,)."""
    axes = spec.dynamic[name]
    x = spec.inputs[name]
    dims = [{"batch": "B", "time": "T"}.get(axes[i].__name__, "?") if i in axes else str(n)
            for i, n in enumerate(x.shape)]
    return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"
