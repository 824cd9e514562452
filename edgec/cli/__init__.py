"""The ``edgec`` command line: the parser and ``main``; one module per command group.

- :mod:`edgec.cli.model`: compile, verify, inspect
- :mod:`edgec.cli.ops`: ops (what each front-end supports)
- :mod:`edgec.cli.firmware`: targets, build, run, flash
- :mod:`edgec.cli.profile`: profile
- :mod:`edgec.cli.mpc`: mpc build/simulate, simulate
- :mod:`edgec.cli.scale`: tune, evolve (and verify --matrix) on Ray
- :mod:`edgec.cli.common`: what they share (model arguments, compiling, inputs, options)

May import everything in edgec; nothing in edgec imports it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import NoReturn

from edgec._package import __version__
from edgec.errors import EdgecError, EdgecWarning

EPILOG = """\
examples:
  edgec compile model.onnx -o build/model          write build/model/<name>.{h,c}
  edgec compile model.onnx -o gen --input-shape x:1x3x32x32 --name net
  edgec compile net.py:make -o gen                 make() returns (torch module, example inputs)
  edgec verify model.onnx --n 20                   C on the host vs onnxruntime (torch for .pt2/.py)
  edgec inspect model.onnx                         per-node table and totals
  edgec ops                                        the ops and modules each front-end supports
  edgec tune ctrl.toml --plant msd --space space.toml -o tune-out   search MPC parameters (Ray)
  edgec verify --matrix models/ --targets cortex-m0,cortex-m4f      every pair on QEMU (Ray)

The generated C is C99 with no dynamic allocation: add <name>.c to your Makefile/CMake project
(link with -lm) and call <name>_run(), or <name>_reset()/<name>_step() for stateful models.
Exit status: 0 ok, 1 verification mismatch, 2 bad input (model, options), 3 internal error.
"""


#: modules that add sub-commands: each has ``add_parsers(sub) -> {name: handler}``
COMMAND_MODULES: tuple[str, ...] = (
    "edgec.cli.model", "edgec.cli.ops", "edgec.cli.firmware", "edgec.cli.profile",
    "edgec.cli.mpc", "edgec.cli.quantize", "edgec.cli.scale",
)

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line: what is wrong and where help is.

    argparse prints the whole usage block before the message; edgec's errors are one line (as
    for bad models), with exit status 2. Sub-command parsers are of this class too (argparse
    creates them with the parent's class).
    """

    def error(self, message: str) -> NoReturn:
        text = " ".join(message.split())
        self.exit(2, f"{self.prog}: error: {text} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(
        prog="edgec",
        description="Compile trained neural networks to small, fast, dependency-free C.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--version", action="version", version=f"edgec {__version__}")
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND")

    for mod in COMMAND_MODULES:
        for name, handler in importlib.import_module(mod).add_parsers(sub).items():
            sub.choices[name].set_defaults(handler=handler)
    _show_defaults(ap)
    return ap


class _DefaultsFormatter(argparse.HelpFormatter):
    """Adds "(default: X)" to an option's help when it has a default worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        d = action.default
        if (
            "%(default)" in text or not action.option_strings or d is None
            or d is argparse.SUPPRESS or isinstance(d, bool) or d == []
        ):
            return text
        return text + " (default: %(default)s)"


def _show_defaults(ap: argparse.ArgumentParser) -> None:
    for action in ap._actions:
        if isinstance(action, argparse._SubParsersAction):
            for p in action.choices.values():
                if p.formatter_class is argparse.HelpFormatter:
                    p.formatter_class = _DefaultsFormatter
                _show_defaults(p)


def _one_line_warning(
    message: Warning | str, category: type[Warning], *_args: object, **_kw: object
) -> None:
    text = " ".join(str(message).split())
    if not issubclass(category, EdgecWarning):
        return  # other libraries' warnings (torch, onnx) are not the user's concern here
    print(f"edgec: warning: {text}", file=sys.stderr)


#: the longest message of an internal error that is printed whole
INTERNAL_MSG_CHARS = 300


def main(argv: Sequence[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if not args.cmd:
        ap.print_help()
        return 2
    try:
        handler: Handler = args.handler
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.showwarning = _one_line_warning
            rc = handler(args)
        sys.stdout.flush()
        return rc
    except BrokenPipeError:  # `edgec inspect ... | head`: the reader left; stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # as a process killed by SIGPIPE
    except EdgecError as exc:
        msg = " ".join(str(exc).split("\n"))
        print(f"edgec: error: {msg}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("edgec: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an edgec bug: still one line unless debugging
        if os.environ.get("EDGEC_DEBUG"):
            raise
        first = (str(exc).splitlines() or [""])[0]
        if len(first) > INTERNAL_MSG_CHARS:  # e.g. a whole graph's repr in the message
            first = first[:INTERNAL_MSG_CHARS] + " ..."
        print(
            f"edgec: internal error: {type(exc).__name__}: {first}"
            " (set EDGEC_DEBUG=1 for the traceback; please report it)",
            file=sys.stderr,
        )
        return 3

