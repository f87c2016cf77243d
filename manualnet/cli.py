"""The ``manualnet`` command: parse arguments, call the library, turn errors into exit codes.

Exit codes: 0 done; 1 training failed (divergence) or a gradient check failed; 2 bad input (one line, no
traceback); 3 a run's file could not be written; 128 + signal number when SIGINT/SIGTERM stopped a run.
"""

import argparse
import sys

from manualnet.errors import ManualnetError


def main(argv=None):
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if getattr(args, "command", None) == "bench":  # everything after "bench" belongs to scripts/bench.py
        args.bench_args = extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return args.handler(args) or 0
    except ManualnetError as e:
        for line in str(e).splitlines():
            print(f"manualnet: error: {line}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:  # a second SIGINT/SIGTERM in training says which (trainer.StoppedAtOnce)
        print(f"manualnet: {e or 'interrupted'}", file=sys.stderr)
        return getattr(e, "exit_code", 130)


def _parser():
    parser = argparse.ArgumentParser(prog="manualnet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    t = sub.add_parser("train", help="train a model from a YAML config")
    t.add_argument("--config", help="the YAML config (not needed with --resume)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set optim.lr=0.05 (repeatable)")
    t.add_argument("--run-dir", help="write the run here (must be new or empty)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    t.add_argument("--device", help="auto, cpu, cuda or cuda:N (overrides the config)")
    t.add_argument("--quiet", action="store_true", help="print only the final summary")
    t.set_defaults(handler=_train)
    e = sub.add_parser("eval", help="evaluate a run's checkpoint on its validation and test splits")
    e.add_argument("--run", required=True, metavar="RUN_DIR")
    e.add_argument("--checkpoint", choices=["best", "last"], default="best")
    e.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    e.set_defaults(handler=_eval)
    v = sub.add_parser("verify", help="check every hand-written gradient against autograd (and finite differences)")
    v.add_argument("--config", help="check the model this config trains, on a real batch of its data")
    v.add_argument("--all-layers", action="store_true",
                   help="self-test every registered layer and loss on its own (float64, finite differences)")
    v.add_argument("--plugin", action="append", default=[], metavar="FILE",
                   help="with --all-layers: a user file that registers layers (repeatable)")
    v.add_argument("--fd", action="store_true",
                   help="also compare with central finite differences in float64 (--all-layers always does)")
    v.add_argument("--dtype", choices=["float64", "float32"], help="--config: the dtype of the check (float64)")
    v.add_argument("--layer", metavar="NAME",
                   help="only the layers of this registered type (with --all-layers: only this layer or loss)")
    v.add_argument("--json", metavar="FILE", help="write the rows and the verdict as JSON")
    v.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="--config: override a key")
    v.add_argument("--device", help="--config: auto, cpu, cuda or cuda:N")
    v.set_defaults(handler=_verify)
    b = sub.add_parser("bench", add_help=False,
                       help="benchmark a training step against torch autograd (scripts/bench.py; --help there)")
    b.set_defaults(handler=_bench)
    return parser


def _verify(args):
    from manualnet.verify.command import run

    return run(args)


def _bench(args):
    import runpy
    from pathlib import Path

    from manualnet.errors import ConfigError

    script = Path(__file__).resolve().parent.parent / "scripts" / "bench.py"
    if not script.is_file():
        raise ConfigError(f"manualnet bench runs {script}, which this installation lacks: use a source checkout "
                          "installed with pip install -e .")
    return runpy.run_path(str(script), run_name="manualnet_bench")["main"](args.bench_args)


def _train(args):
    from manualnet.commands import train

    return train(args)


def _eval(args):
    from manualnet.commands import evaluate_run

    return evaluate_run(args)


if __name__ == "__main__":
    sys.exit(main())

