"""`recurrent info`: what this machine is and what `auto` chooses on it. Paste it into bug reports.

    recurrent info            # versions, CPU and instruction sets, native kernels, devices, threads, auto's choices
    recurrent info --json     # the same as one JSON object

In the spirit of `python -m torch.utils.collect_env`. The choices are asked of the code that makes them (the
precision, and recurrent/backends.py through the layers' per-call backend and the generation stepper's plan), on
a tiny model, so they are what a run here would do.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys

import torch

import recurrent
from recurrent import hardware, native
from recurrent.precision import choose as choose_precision


def register(subparsers) -> None:
    p = subparsers.add_parser("info", help="versions, CPU, native kernels, devices and what auto picks here",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="one JSON object instead of the text report")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = collect()
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


def collect() -> dict:
    cpu = hardware.cpu()
    native.load()  # build (first time, about 10 s) or load, so the status says what a run gets
    return {
        "versions": {"recurrent": recurrent.__version__, "torch": torch.__version__,
                     "python": platform.python_version(), "os": platform.platform()},
        "cpu": {"name": cpu.name, "arch": cpu.arch, "torch kernels": cpu.capability,
                "instruction sets": {f: f in cpu.features for f in hardware.X86_FEATURES}
                if cpu.arch in ("x86_64", "amd64") else sorted(cpu.features),
                "native bf16 products": cpu.native_bf16, "oneDNN bf16 kernels": cpu.onednn_bf16},
        "native kernels": native.info(),
        "devices": {"cuda": torch.version.cuda, "gpus": [
            {"index": g.index, "name": g.name, "capability": ".".join(map(str, g.capability)),
             "memory GiB": round(g.memory_gib, 1), "native bf16": g.native_bf16} for g in hardware.gpus()]},
        "threads": {"torch intra-op": torch.get_num_threads(), "torch inter-op": torch.get_num_interop_threads()},
        "auto chooses": auto_choices("cpu") | ({"cuda": auto_choices("cuda")} if torch.cuda.is_available() else {}),
    }


def auto_choices(device: str) -> dict:
    """`--precision auto` and `backend="auto"` on `device`: what training and generation would run, and why."""
    from recurrent.models.lm import LanguageModel, LMConfig

    precision = choose_precision("auto", device)
    choices = {"precision": f"{precision.name} ({precision.reason})"}
    x = torch.zeros(1, 2, 4, device=device)
    for name, layer in {"LSTM": recurrent.LSTM, "GRU": recurrent.GRU, "RNN": recurrent.RNN}.items():
        layer = layer(4, 4).to(device)
        with precision.autocast(torch.device(device).type):
            choices[f"{name} training"] = str(layer._backend_for(x))
    lm = LanguageModel(LMConfig(vocab_size=8, cell="lstm", hidden_size=8, num_layers=1)).to(device).eval()
    weights = "bfloat16" if precision.bf16 else "float32"
    choices["LSTM generation"] = f"{weights} weights, {lm.stepper(precision.dtype).plan}"
    return choices


def render(report: dict, indent: str = "") -> str:
    lines = []
    for key, value in report.items():
        if isinstance(value, dict) and value and not all(isinstance(v, bool) for v in value.values()):
            lines.append(f"{indent}{key}:")
            lines.append(render(value, indent + "  "))
        elif isinstance(value, dict):  # instruction sets: one line, present ones plain, absent ones with a minus
            lines.append(f"{indent}{key}: " + " ".join(k if v else f"-{k}" for k, v in value.items()))
        elif isinstance(value, list):
            items = ", ".join(json.dumps(v) if isinstance(v, dict) else str(v) for v in value)
            lines.append(f"{indent}{key}: {items or 'none'}")
        else:
            lines.append(f"{indent}{key}: {value}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(run(argparse.Namespace(json=False)))
