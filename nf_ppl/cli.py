"""The ``nf-ppl`` command line.

``nf-ppl demo``    a short end-to-end run (build flows, sample, score, fit one to data).
``nf-ppl verify``  symbolic checks of the change-of-variables examples (needs the ``symbolic`` package).

Sub-commands import what they need lazily, so ``import nf_ppl`` never imports SymPy.
"""

from __future__ import annotations

import argparse
import sys


def _demo(args) -> int:
    from . import demo

    return demo.run(quick=args.quick, out=args.out, seed=args.seed)


def _verify(args, rest) -> int:
    from symbolic import cli as symbolic_cli

    return symbolic_cli.main(rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nf-ppl",
        description="Normalizing flows and exact-density models for NumPyro.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser("demo", help="run the end-to-end demo and write a report folder")
    demo.add_argument("--quick", action="store_true", help="tiny budgets: finishes in seconds")
    demo.add_argument("--out", default=None, help="report folder (default: ./nf-ppl-report)")
    demo.add_argument("--seed", type=int, default=0, help="random seed")
    sub.add_parser("verify", help="derive and check the notes' Jacobians symbolically (see nf-ppl verify --help)",
                   add_help=False)
    return parser


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if argv and argv[0] == "verify":
        return _verify(None, argv[1:])
    args = parser.parse_args(argv)
    if args.command == "demo":
        return _demo(args)
    parser.print_help()
    return 0 if args.command is None else 2


if __name__ == "__main__":
    sys.exit(main())
