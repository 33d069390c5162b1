"""``nf-ppl verify``: print every catalogue derivation and whether its checks pass.

Usage: ``nf-ppl verify [--latex | --markdown] [--only NAME ...] [--no-numeric] [--list]``
(also ``python -m symbolic``). Returns 0 when every check passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

from .catalogue import catalogue
from .report import render

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nf-ppl verify",
        description="Derive the change-of-variables examples and flow-layer Jacobians with SymPy "
                    "and check them against closed forms and the numeric transforms.",
    )
    style = parser.add_mutually_exclusive_group()
    style.add_argument("--latex", action="store_true", help="print the derivations as LaTeX")
    style.add_argument("--markdown", action="store_true", help="print a Markdown report")
    parser.add_argument("--only", action="append", metavar="NAME",
                        help="run only the examples whose name contains NAME (repeatable)")
    parser.add_argument("--no-numeric", action="store_true",
                        help="skip the numeric checks of NumPyro / nf_ppl transforms")
    parser.add_argument("--list", action="store_true", help="list the example names and exit")
    return parser


def _describe(obj, fmt):
    if hasattr(obj, "summary"):
        return obj.summary(fmt)
    return render("transform", repr(getattr(obj, "transform", obj)), fmt)


def _header(example, fmt):
    if fmt == "markdown":
        return f"\n### {example.title} (`{example.name}`)\n"
    if fmt == "latex":
        return f"\n% ==== {example.name}: {example.title}"
    return f"\n=== {example.name}: {example.title} ==="


def _verdict(label, ok, fmt):
    mark = "PASS" if ok else "FAIL"
    return f"- **{mark}** {label}" if fmt == "markdown" else (f"% [{mark}] {label}" if fmt == "latex"
                                                               else f"[{mark}] {label}")


def _run_example(example, fmt, out):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj, checks = example.run()
        out.append(_describe(obj, fmt))
    except Exception as err:  # a crashing example is a failed check, reported, not raised
        checks = [(f"example raised {type(err).__name__}: {err}", False)]
    out.extend(_verdict(label, ok, fmt) for label, ok in checks)
    return checks


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``nf-ppl verify``; ``argv`` excludes the program and sub-command names."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    fmt = "latex" if args.latex else "markdown" if args.markdown else "pretty"
    examples = catalogue(numeric=not args.no_numeric)
    if args.only:
        examples = [e for e in examples if any(key in e.name for key in args.only)]
        if not examples:
            print(f"no example matches {args.only}", file=sys.stderr)
            return 2
    if args.list:
        for e in examples:
            print(f"{e.name:28s} {e.kind:20s} {e.title}")
        return 0
    start = time.perf_counter()
    if fmt == "markdown":
        print("## nf-ppl verify: symbolic derivations and checks")
    n_checks = n_failed = 0
    for example in examples:
        lines = [_header(example, fmt)]
        checks = _run_example(example, fmt, lines)
        print("\n".join(lines), flush=True)
        n_checks += len(checks)
        n_failed += sum(not ok for _, ok in checks)
    elapsed = time.perf_counter() - start
    status = "all checks pass" if not n_failed else f"{n_failed} check(s) FAILED"
    print(f"\nsummary: {len(examples)} examples, {n_checks} checks, {status} ({elapsed:.1f} s)")
    return 1 if n_failed else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
