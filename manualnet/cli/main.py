"""The manualnet command: parse arguments, call the library, turn errors into exit codes.

Exit codes: 0 done; 1 training failed (divergence) or a gradient check failed; 2 bad input (one line, no
traceback); 3 a run's file could not be written; 128 + signal number when SIGINT/SIGTERM stopped a run.

Only the standard library is imported here: --help, --version and a mistyped argument answer in a tenth of
a second, and torch (seconds to import) is imported by the command that runs.
"""

import argparse
import difflib
import importlib
import signal
import sys
import threading
import warnings

from manualnet.errors import ManualnetError


def main(argv=None):
    warnings.showwarning = _show_warning
    parser, commands = _parser()
    args, extra = parser.parse_known_args(argv)
    command = getattr(args, "command", None)
    if extra:
        return _unknown_arguments(commands.get(command, parser), extra, sys.argv[1:] if argv is None else argv)
    if not command:
        parser.print_help()
        return 2
    try:
        return args.handler(args) or 0
    except ManualnetError as e:
        for line in str(e).splitlines():
            print(f"manualnet: error: {line}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:  # a second SIGINT/SIGTERM in training says which (errors.StoppedAtOnce)
        print(f"manualnet: {str(e) or 'interrupted'}", file=sys.stderr)  # a plain Ctrl-C's text is empty
        return getattr(e, "exit_code", 130)


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """A warning as one line, like the errors: ``manualnet: warning: ...`` (no file and line of the library)."""
    print(f"manualnet: warning: {message}", file=file or sys.stderr)


def _version():
    from manualnet import __version__

    return f"manualnet {__version__}"


def _parser():
    """The top-level parser and each subcommand's, by name."""
    parser = argparse.ArgumentParser(prog="manualnet", description="Neural networks whose gradients are "
                                     "written by hand: train, evaluate and verify them.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command")
    t = sub.add_parser("train", help="train a model from a YAML config",
                       description="Train a model from a YAML config, or resume a run. Every config key is set "
                                   "with --set KEY=VALUE (e.g. --set train.epochs=3 --set optim.lr=0.05).")
    t.add_argument("--config", help="the YAML config (not needed with --resume)")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set optim.lr=0.05 (repeatable)")
    t.add_argument("--run-dir", help="write the run here (must be new or empty)")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    t.add_argument("--device", help="auto, cpu, cuda or cuda:N (overrides the config)")
    t.add_argument("--quiet", action="store_true",
                   help="print only the final summary, the run directory and the tensorboard command")
    t.set_defaults(handler=_train)
    e = sub.add_parser("eval", help="evaluate a run's checkpoint on its validation and test splits",
                       description="Evaluate a run's checkpoint on its validation and test splits.")
    e.add_argument("--run", required=True, metavar="RUN_DIR",
                   help="the run directory (runs/<name>/<timestamp>, or the --run-dir it was trained with)")
    e.add_argument("--checkpoint", choices=["best", "last"], default="best",
                   help="best: the epoch with the lowest val/loss; last: the latest checkpoint (default: best)")
    e.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    e.set_defaults(handler=_eval)
    v = sub.add_parser("verify", help="check every hand-written gradient against autograd (and finite differences)",
                       description="Check every hand-written gradient against autograd (and finite differences).")
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
    s = sub.add_parser("sample", help="generate text from a language model run's checkpoint",
                       description="Generate text from a language model run's checkpoint (a text data set's run).")
    s.add_argument("--run", required=True, metavar="RUN_DIR", help="the run directory of a text data set's run")
    s.add_argument("--checkpoint", choices=["best", "last"], default="best",
                   help="best: the epoch with the lowest val/loss; last: the latest checkpoint (default: best)")
    s.add_argument("--prompt", default="", help="the text to continue (default: a newline)")
    s.add_argument("--tokens", type=int, default=500, help="how many characters to generate (default: 500)")
    s.add_argument("--temperature", type=float, default=1.0,
                   help="divides the logits: below 1 is more conservative (default: 1.0)")
    s.add_argument("--top-k", type=int, help="draw only from the k likeliest characters")
    s.add_argument("--seed", type=int, default=0, help="seeds the draws: the same seed, the same text (default: 0)")
    s.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    s.set_defaults(handler=_sample)
    return parser, {"train": t, "eval": e, "verify": v, "sample": s}


def _unknown_arguments(parser, extra, argv):
    """Exit code 2 with ``parser``'s usage and a hint: the --set that sets a config key given as a flag
    (``--epochs 3``: ``--set train.epochs=3``), ``--config`` for a bare config path, ``=`` for a --set value
    given after a space, else the closest option of the command."""
    flag, _, value = extra[0].partition("=")
    at = list(argv).index(extra[0]) if extra[0] in argv else -1
    if at >= 2 and argv[at - 2] == "--set" and "=" not in argv[at - 1]:
        hint = f"write --set {argv[at - 1]}={extra[0]} (KEY=VALUE, with '=')"
        return _refuse(parser, flag, hint)
    if flag.endswith((".yaml", ".yml")) and not flag.startswith("-"):
        return _refuse(parser, flag, f"use --config {flag}")
    if not value and len(extra) > 1 and not extra[1].startswith("-"):
        value = extra[1]
    options = [o for action in parser._actions for o in action.option_strings]
    key = _config_key(flag) if flag.startswith("--") and "--set" in options else None
    if key:
        hint = f"use --set {key}={value or 'VALUE'}"
    else:
        close = difflib.get_close_matches(flag, options, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]}?" if close else f"{parser.prog} --help lists the options"
    return _refuse(parser, flag, hint)


def _refuse(parser, flag, hint):
    parser.print_usage(sys.stderr)
    print(f"{parser.prog}: error: unrecognized argument {flag}: {hint}", file=sys.stderr)
    return 2


def _config_key(flag):
    """The config key a flag such as ``--epochs`` or ``--batch-size`` names (``train.epochs``), or None."""
    from manualnet.config.schema import Config  # pydantic, not torch: a tenth of a second, on this error path only

    name = flag.removeprefix("--").replace("-", "_")
    keys = []
    for field, info in Config.model_fields.items():
        default = info.default
        section = default.model_dump() if hasattr(default, "model_dump") else None
        keys += [f"{field}.{k}" for k in section or {}] if section is not None else [field]
    matches = [k for k in keys if k.rpartition(".")[2] == name]
    return matches[0] if len(matches) == 1 else None


def _verify(args):
    return _imported("manualnet.verify.command", "run")(args)


def _train(args):
    return _imported("manualnet.cli.commands", "train")(args)


def _sample(args):
    return _imported("manualnet.cli.sample", "sample_run")(args)


def _eval(args):
    return _imported("manualnet.cli.commands", "evaluate_run")(args)


def _imported(module, name):
    """``module.name``, imported with SIGINT and SIGTERM held until the import is done: a Ctrl-C that lands in
    numpy's import (torch starts it from C) is swallowed there and leaves numpy half-loaded, to fail later.
    A signal that arrived meanwhile is raised again as the import ends."""
    arrived, held = [], threading.current_thread() is threading.main_thread()  # (only it may set handlers)
    before = {signum: signal.signal(signum, lambda signum, frame: arrived.append(signum))
              for signum in (signal.SIGINT, signal.SIGTERM)} if held else {}
    try:
        return getattr(importlib.import_module(module), name)
    finally:
        for signum, handler in before.items():
            signal.signal(signum, handler)
        if arrived:
            signal.raise_signal(arrived[0])


if __name__ == "__main__":
    sys.exit(main())
