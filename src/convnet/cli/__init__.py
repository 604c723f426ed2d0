"""The `convnet` command: argument parsing only; every command calls the library API.

Each subcommand is a module in this package with three names:
    HELP: str                       one line for `convnet --help`
    add_arguments(parser) -> None   its flags
    run(args) -> int                the exit status
"""
from __future__ import annotations

import argparse
import gc
import importlib
import sys
import warnings

from convnet.errors import ConvnetError

# Subcommand name -> module in convnet.cli. Modules import lazily so `convnet --help` is quick.
COMMANDS = {
    "train": "train",
    "evaluate": "evaluate",
    "predict": "predict",
    "summary": "summary",
    "show-data": "show_data",
    "explain": "explain",
    "features": "features",
    "cam": "cam",
    "serve": "serve",
    "export": "export",
    "cache": "cache",
}


def _available() -> dict:
    found = {}
    for name, module in COMMANDS.items():
        try:
            found[name] = importlib.import_module(f"convnet.cli.{module}")
        except ModuleNotFoundError as e:
            if e.name != f"convnet.cli.{module}":
                raise
    return found


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows defaults, except the empty ones ('None', 'False') that say nothing."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False):
            return action.help or ""
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convnet",
        description="Train, check and serve small convolutional image classifiers.",
        epilog="Run `convnet COMMAND --help` for a command's options.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module in _available().items():
        p = sub.add_parser(name, help=module.HELP, description=module.HELP, formatter_class=_HelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.formatwarning = _one_line_warning
    try:
        return int(args._run(args) or 0)
    except ConvnetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`convnet explain | head`): not an error of ours; silence the flush at exit.
        sys.stdout = None
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def entry_point() -> None:
    """The `convnet` executable and `python -m convnet`: `main`, then exit with its status."""
    status = main()
    # Everything still alive dies with the process. Freezing it spares the interpreter's exit a
    # full garbage collection over torch's objects and the run's, a wait the user sees after every
    # command (benchmarks/keras_vs_convnet.py times whole processes, so its figures include it).
    gc.freeze()
    sys.exit(status)


if __name__ == "__main__":
    entry_point()
