"""Load test of `recurrent serve`: continuous batching against one request at a time, in one run.

N concurrent clients (1, 8, 32, 64 by default) each ask POST /generate for 200 tokens of a 2x512 char LSTM
(one JSON reply each; --stream: server-sent events, a message per token), once against a server that batches
(--max-batch 64) and once against one that runs one generation at a time (--max-batch 1), both at --precision
(auto: bfloat16 products where the CPU multiplies them natively, as `recurrent serve` does). Each server is a `recurrent serve` subprocess, so the clients
(here, on asyncio and httpx) do not share its interpreter; both servers are up at once, and each level runs
against one then the other, so that a shared machine's changing load touches both alike. Each level runs --repeats
times (3) per mode, alternating, and the repeat with the median tokens/s is reported: on a shared 2-core machine one
run of a level varies by 2x. Before timing, each server runs one untimed level at the most clients with 20 tokens
each, so that first-call costs at every batch size are paid. Reported per level: aggregate tokens/s (all tokens
over the wall time of the level), p50 and p99 of each request's latency (request to last token), the p50 time to
the first token, and errors (summed over the repeats). Target: 0 errors, and at 32 clients >= 5x the one-at-a-time
tokens/s.

Without --run, the model is a 2x512 char LSTM trained for one step on a generated text (the weights are as good
as random: the speed is the same). Bounded: each level stops after --max-seconds of waiting.

    python benchmarks/serve_load.py                                   # 1, 8, 32, 64 clients, 200 tokens each
    python benchmarks/serve_load.py --stream                          # the same, streamed token by token
    python benchmarks/serve_load.py --run runs/shakespeare --clients 1,32 --tokens 100
"""
import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def tiny_run(folder: Path) -> Path:
    """A 2x512 char LSTM run folder, trained one step on a generated text of printable characters."""
    from recurrent.models.lm import LMConfig
    from recurrent.train.lm import TrainLMConfig, train_lm
    from recurrent.train.loop import flat_replace

    rng = random.Random(0)
    text = "".join(rng.choice(string.ascii_letters + " .,;:!?'\n") for _ in range(20000))
    (folder / "text.txt").write_text(text, encoding="utf-8")
    config = TrainLMConfig(data=str(folder / "text.txt"), model=LMConfig(hidden_size=512, num_layers=2))
    return train_lm(flat_replace(config, out=str(folder / "lstm-2x512"), batch_size=4, bptt=32, max_steps=1,
                                 eval_every=1, progress=False))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`recurrent serve RUN --max-batch N` on a free loopback port, for the length of a `with` block."""

    def __init__(self, run: Path, max_batch: int, precision: str = "auto"):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [sys.executable, "-m", "recurrent", "serve", str(run), "--port", str(self.port),
                        "--max-batch", str(max_batch), "--max-waiting", "1000", "--max-seconds", "600",
                        "--precision", precision]

    def __enter__(self):
        self.process = subprocess.Popen(self.command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.2)
            if self.process.poll() is not None:
                raise SystemExit(f"the server exited with status {self.process.returncode}")
        raise SystemExit("the server did not start within 120 s")

    def __exit__(self, *exc):
        self.process.terminate()
        self.process.wait(timeout=30)


async def one_client(client: httpx.AsyncClient, body: dict) -> tuple[int, float, float]:
    """(tokens received, latency, time to first token) of one generation (not streamed: the first token is
    received with the last)."""
    start, first, tokens = time.perf_counter(), None, 0
    if not body["stream"]:
        r = await client.post("/generate", json=body)
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}")
        latency = time.perf_counter() - start
        return len(r.json()["tokens"]), latency, latency
    async with client.stream("POST", "/generate", json=body) as r:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}")
        async for line in r.aiter_lines():
            if line == "event: token":
                tokens += 1
                first = first or time.perf_counter() - start
            elif line.startswith("event: error"):
                raise RuntimeError("generation failed")
    return tokens, time.perf_counter() - start, first or 0.0


async def level(url: str, clients: int, tokens: int, max_seconds: float, stream: bool) -> dict:
    """`clients` concurrent generations of `tokens` tokens each (seeds differ): the level's figures."""
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    async with httpx.AsyncClient(base_url=url, timeout=max_seconds, limits=limits) as client:
        bodies = [{"prime": "The ", "length": tokens, "seed": i, "temperature": 0.8, "stream": stream}
                  for i in range(clients)]
        start = time.perf_counter()
        results = await asyncio.gather(*(one_client(client, b) for b in bodies), return_exceptions=True)
        wall = time.perf_counter() - start
    ok = [r for r in results if not isinstance(r, BaseException) and r[0] == tokens]
    latencies = sorted(r[1] for r in ok)
    return {"clients": clients, "errors": len(results) - len(ok), "tok_s": sum(r[0] for r in ok) / wall,
            "p50": _quantile(latencies, 0.5), "p99": _quantile(latencies, 0.99),
            "ttft_p50": statistics.median(r[2] for r in ok) if ok else float("nan"), "wall": wall}


def _median_run(tried: list[dict]) -> dict:
    """The run with the median tokens/s of a level's repeats, with the errors of all of them and every run's
    tokens/s."""
    ranked = sorted(tried, key=lambda r: r["tok_s"])
    return {**ranked[len(ranked) // 2], "errors": sum(r["errors"] for r in tried),
            "each_tok_s": [r["tok_s"] for r in tried]}


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, round(q * (len(values) - 1)))]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default=None, help="a language-model run folder (default: a 2x512 char LSTM, untrained)")
    p.add_argument("--clients", default="1,8,32,64", help="concurrent clients per level, comma-separated")
    p.add_argument("--tokens", type=int, default=200, help="tokens each client generates")
    p.add_argument("--max-batch", type=int, default=64, help="the batching server's --max-batch")
    p.add_argument("--max-seconds", type=float, default=300, help="the longest a level may take")
    p.add_argument("--repeats", type=int, default=3, help="runs of each level per mode; the median is reported")
    p.add_argument("--stream", action="store_true", help="stream each reply as server-sent events")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default="auto",
                   help="both servers' --precision (auto: bf16 products where the CPU multiplies bfloat16 natively)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    args = p.parse_args()
    counts = [int(c) for c in args.clients.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(args.run) if args.run else tiny_run(Path(tmp))
        modes = {"batched": args.max_batch, "one at a time": 1}
        results = {name: [] for name in modes}
        with Server(run, modes["batched"], args.precision) as batched, Server(run, 1, args.precision) as single:
            servers = {"batched": batched, "one at a time": single}
            for server in servers.values():  # warm up: first-call costs, at every batch size up to the largest
                asyncio.run(level(server.url, max(counts), 20, args.max_seconds, args.stream))
            for n in counts:  # the two modes back to back at each level: a shared machine's load changes slowly
                runs = {name: [] for name in servers}
                for _ in range(args.repeats):
                    for name, server in servers.items():
                        runs[name].append(asyncio.run(level(server.url, n, args.tokens, args.max_seconds,
                                                            args.stream)))
                for name, tried in runs.items():
                    results[name].append(_median_run(tried))
    from recurrent.precision import choose

    precision = choose(args.precision, "cpu")
    print(f"serve load: {run.name}, {args.tokens} tokens per client, "
          f"{'streamed' if args.stream else 'one reply each'}; products {precision.name} ({precision.reason}); "
          f"{os.cpu_count()} CPUs (shared machines: figures vary); the median of {args.repeats} runs a level")
    print(f"{'clients':>7}  {'mode':<14} {'tok/s':>8} {'p50 s':>7} {'p99 s':>7} {'TTFT p50':>9} {'errors':>6}  speed-up"
          "  each run's tok/s")
    for i, n in enumerate(counts):
        base = results["one at a time"][i]["tok_s"]
        for name in results:
            r = results[name][i]
            print(f"{n:>7}  {name:<14} {r['tok_s']:>8.0f} {r['p50']:>7.2f} {r['p99']:>7.2f} {r['ttft_p50']:>9.3f} "
                  f"{r['errors']:>6}  {r['tok_s'] / base:>6.1f}x  {' '.join(f'{x:.0f}' for x in r['each_tok_s'])}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
