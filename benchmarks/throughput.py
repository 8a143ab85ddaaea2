"""Training throughput vs torch.nn (the core issue's speed benchmark).

    python benchmarks/throughput.py                 # B=32 T=128 I=H=512, 2 layers; LSTM, GRU, RNN
    python benchmarks/throughput.py --cells lstm    # any flag of `recurrent bench throughput`
"""
import sys

from recurrent.cli.main import main

if __name__ == "__main__":
    sys.exit(main(["bench", "throughput", *sys.argv[1:]]))
