"""`recurrent serve RUN [RUN ...]`: trained runs over HTTP, with OpenAPI docs at /docs and a playground at /.

    recurrent serve runs/shakespeare                           # http://127.0.0.1:8000/ : the playground
    recurrent serve runs/shakespeare runs/sent runs/de-en --port 8080
    curl -s localhost:8000/generate -H 'Content-Type: application/json' \\
         -d '{"prime": "ROMEO:", "length": 200, "temperature": 0.8, "seed": 3}'
    curl -sN localhost:8000/generate -H 'Content-Type: application/json' -d '{"prime": "ROMEO:", "stream": true}'
    curl -s localhost:8000/predict -H 'Content-Type: application/json' -d '{"text": "a fine film"}'
    curl -s localhost:8000/translate -H 'Content-Type: application/json' -d '{"text": "ein Haus", "beam": 5}'
    curl -s localhost:8000/forecast -H 'Content-Type: application/json' \
         -d '{"series": [{"id": "a", "values": [3, 5, null, 4, 6]}], "quantiles": [0.1, 0.5, 0.9]}'
    curl -s 'localhost:8000/transcribe?beam=8' -H 'Content-Type: audio/wav' --data-binary @a.wav

One endpoint per task: /generate (language models; server-sent events with "stream": true), /predict
(classifiers, tree classifiers, taggers), /translate (encoder-decoders), /forecast (forecasters: the series in the
request), /transcribe (speech recognisers: the WAV as the body); GET /models lists the models, GET
/health says the server is up. A request picks a model by name ("model": "shakespeare", the run folder's name);
without one, the first model of the endpoint's task.

Concurrent /generate requests of one model step together as one batch (continuous batching: requests join and
leave between tokens), each with its own temperature, top-k, top-p and seed; a seed gives the same text alone or
batched, and the same as `recurrent generate --seed` at the same --precision. --max-batch 1 runs one generation
at a time. Generation's per-token products run in bfloat16 where the CPU multiplies it natively (--precision
auto, as in `recurrent generate`; benchmarks/serve_ceiling.py measures both on this machine); --precision fp32
keeps float32.

The server listens on the loopback interface unless --host says otherwise (a warning then: anyone who can reach
the port can use the models). No request can name a file; bodies, primes, outputs, beams and time are bounded
by the --max-* flags. Cross-origin requests are refused unless --cors names an origin.
"""
from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import warnings

from recurrent.cli.config import add_run_args, precision_from_args
from recurrent.errors import UserError
from recurrent.serve.limits import Limits
from recurrent.validation import at_least, flag, positive


def register(subparsers) -> None:
    p = subparsers.add_parser("serve", help="serve trained runs over HTTP (API, docs at /docs, playground at /)",
                              description=__doc__, formatter_class=_Formatter)
    p.add_argument("runs", metavar="RUN", nargs="+", help="run folders written by `recurrent train lm|classify|tag|"
                   "translate|forecast|speech`")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=flag(int, **at_least(0)), default=8000, help="the port (0: any free one)")
    p.add_argument("--max-batch", type=flag(int, **at_least(1)), default=64,
                   help="generations stepped together per model (1: one at a time)")
    for limit in dataclasses.fields(Limits):  # --max-tokens, --max-body, ...: one flag per server limit
        kind = {"int": int, "float": float}[limit.type]
        p.add_argument("--" + limit.name.replace("_", "-"), type=flag(kind, **positive()),
                       default=limit.default, help=limit.metadata["help"])
    p.add_argument("--cors", metavar="ORIGIN", action="append", default=None,
                   help="allow browser pages from this origin (repeatable), e.g. http://localhost:3000")
    add_run_args(p)  # --device; --precision, --bf16: the dtype of generation's per-token products
    p.set_defaults(func=run)


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Flag defaults in the help, and the module docstring's examples kept as written."""


def run(args: argparse.Namespace) -> int:
    try:
        import torch
        import uvicorn

        from recurrent.serve.app import create_app
        from recurrent.serve.models import load_models
    except ImportError as e:
        raise UserError(f"serve needs the serve extra ({e.name} is missing): pip install 'recurrent[serve]'") from None
    if not is_loopback(args.host):
        warnings.warn(f"listening on {args.host}: anyone who can reach this port can run the models "
                      "(there is no authentication)")
    limits = Limits(**{limit.name: getattr(args, limit.name) for limit in dataclasses.fields(Limits)})
    precision = precision_from_args(args)
    # One OpenMP pool in the process, the generation engines': this thread (loading, the event loop) and the
    # other endpoints' worker threads run torch on one intra-op thread each (recurrent/serve/engine.py says why)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    served = load_models(args.runs, args.max_batch, args.device, precision, threads)
    app = create_app(served, limits, args.cors)
    names = ", ".join(f"{s.name} ({s.task}: {s.endpoint})" for s in served.values())
    print(f"recurrent serve: {names} on http://{args.host}:{args.port}/ (API docs at /docs)", flush=True)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        for s in served.values():
            if s.engine is not None:
                s.engine.close()
    return 0


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
