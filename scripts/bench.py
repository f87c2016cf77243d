#!/usr/bin/env python3
"""Benchmark a manualnet training step against torch autograd; see manualnet/bench.py (also `manualnet bench`)."""

import sys

from manualnet.bench import main

if __name__ == "__main__":
    sys.exit(main())
