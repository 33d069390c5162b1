"""``nf-ppl verify``: print every catalogue derivation and whether its checks pass.

Usage: ``nf-ppl verify [--latex | --markdown] [--output FILE] [--only NAME ...] [--no-numeric] [--list]``
(also ``python -m symbolic``). Returns 0 when every check passes, 1 otherwise.

``--latex`` writes a standalone LaTeX document (``pdflatex`` compiles it; only ``amsmath`` and
``amssymb`` are needed) with every derivation step: the map, its Jacobian and determinant, the
inverse, the base density at the inverse, ``|det J|`` there, the simplified pushforward density,
and the checks with their verdicts.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

from .catalogue import catalogue
from .report import render, tex_text

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
    parser.add_argument("--output", "-o", metavar="FILE",
                        help="write the report to FILE instead of standard output")
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
        return f"\n\\section*{{{tex_text(example.title)} (\\texttt{{{tex_text(example.name)}}})}}"
    return f"\n=== {example.name}: {example.title} ==="


def _verdict(label, ok, fmt):
    mark = "PASS" if ok else "FAIL"
    if fmt == "latex":
        return f"\\item[\\textbf{{{mark}}}] {tex_text(label)}"
    return f"- **{mark}** {label}" if fmt == "markdown" else f"[{mark}] {label}"


LATEX_PREAMBLE = r"""\documentclass[10pt]{article}
\usepackage{amsmath,amssymb}
\setlength{\parskip}{0.4em}
\allowdisplaybreaks
\title{nf-ppl verify: change-of-variables derivations and their checks}
\date{}
\begin{document}
\maketitle
Each section derives one example with SymPy: the map $y = f(x)$, its Jacobian $J_f$ and
$\log\lvert\det J_f\rvert$, the inverse $g = f^{-1}$, then the pushforward density
$p_Y(y) = p_X(g(y)) / \lvert\det J_f(g(y))\rvert$ step by step (substitute the inverse, take
$\lvert\det J_f\rvert$ there, simplify), followed by checks against independent references."""


def _run_example(example, fmt, out):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj, checks = example.run()
        out.append(_describe(obj, fmt))
    except Exception as err:  # a crashing example is a failed check, reported, not raised
        checks = [(f"example raised {type(err).__name__}: {err}", False)]
    verdicts = [_verdict(label, ok, fmt) for label, ok in checks]
    out.extend(["\\begin{itemize}", *verdicts, "\\end{itemize}"] if fmt == "latex" and verdicts else verdicts)
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
    stream = _open_output(args.output)
    if stream is None:
        return 2
    try:
        return _report(examples, fmt, stream)
    finally:
        if stream is not sys.stdout:
            stream.close()
            print(f"wrote {args.output}", file=sys.stderr)


def _open_output(path):
    if path is None:
        return sys.stdout
    try:
        return open(path, "w", encoding="utf-8")
    except OSError as err:
        print(f"nf-ppl verify: cannot write --output {path}: {err.strerror}", file=sys.stderr)
        return None


def _report(examples, fmt, stream) -> int:
    start = time.perf_counter()
    if fmt == "markdown":
        print("## nf-ppl verify: symbolic derivations and checks", file=stream)
    elif fmt == "latex":
        print(LATEX_PREAMBLE, file=stream)
    n_checks = n_failed = 0
    for example in examples:
        lines = [_header(example, fmt)]
        checks = _run_example(example, fmt, lines)
        print("\n".join(lines), file=stream, flush=True)
        n_checks += len(checks)
        n_failed += sum(not ok for _, ok in checks)
    elapsed = time.perf_counter() - start
    status = "all checks pass" if not n_failed else f"{n_failed} check(s) FAILED"
    summary = f"summary: {len(examples)} examples, {n_checks} checks, {status} ({elapsed:.1f} s)"
    if fmt == "latex":
        print(f"\n\\section*{{Summary}}\n{tex_text(summary)}\n\\end{{document}}", file=stream)
    else:
        print(f"\n{summary}", file=stream)
    if stream is not sys.stdout:
        print(summary, file=sys.stderr)
    return 1 if n_failed else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
