"""The ``nf-ppl`` command line.

``nf-ppl demo``                         the end-to-end demo, writes a report folder
``nf-ppl verify``                       symbolic checks of the notes' change-of-variables examples
``nf-ppl fit DATA --flow maf --out M``  fit a flow to a CSV / .npy table (a density in the data's units)
``nf-ppl sample M -n N --out FILE``     draw from a fitted model
``nf-ppl logprob M DATA --out FILE``    log-density of each row under a fitted model

Errors in input or options are reported as one line with exit status 2 before any work starts
(output paths are checked for writing first), never a traceback; a fit that finishes far below a
single Gaussian on the held-out rows, or a result that cannot be written, exits 1 and leaves no
file behind.  Sub-commands
import what they need lazily, so ``import nf_ppl`` never imports SymPy.
"""

from __future__ import annotations

import argparse
import sys

from ._cli_io import CLIError
from .registry import builders


def _demo(args) -> int:
    from . import demo

    return demo.run(quick=args.quick, out=args.out, seed=args.seed)


def _hidden(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--hidden must be comma-separated ints like 64,64; got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"--hidden sizes must be positive; got {text!r}")
    return sizes


def _check_fit_options(args) -> None:
    """Every option of ``nf-ppl fit``, before any work: one line naming the option and its range."""
    import math

    from ._cli_io import check_option

    if args.layers is not None:
        check_option("--layers", args.layers, args.layers >= 1, "a positive int (number of flow layers)")
    for name, value in (("--steps", args.steps), ("--epochs", args.epochs)):
        if value is not None:
            check_option(name, value, value >= 1, f"a positive int (maximum optimiser {name[2:]})")
    if args.time_budget is not None:
        check_option("--time-budget", args.time_budget, math.isfinite(args.time_budget) and args.time_budget > 0,
                     "a positive number of seconds")
    check_option("--batch-size", args.batch_size, args.batch_size >= 1, "a positive int")
    check_option("--lr", args.lr, math.isfinite(args.lr) and 0 < args.lr <= 1, "a learning rate in (0, 1]")
    check_option("--val-fraction", args.val_fraction, 0 < args.val_fraction < 1,
                 "a fraction in (0, 1) (the held-out rows also check the fit against a Gaussian)")
    check_option("--patience", args.patience, args.patience is None or args.patience >= 1, "a positive int (epochs)")


def _split(z, fraction: float, seed: int):
    import numpy as np

    perm = np.random.default_rng(seed).permutation(len(z))
    n_val = min(len(z) - 2, max(2, int(round(fraction * len(z)))))
    return z[perm[n_val:]], z[perm[:n_val]]


def _gaussian_log_likelihood(train, val) -> float:
    """Mean held-out log-likelihood of one Gaussian (full covariance) fitted to the training rows."""
    import numpy as np

    mean = train.mean(0)
    cov = np.atleast_2d(np.cov(train, rowvar=False)) + 1e-6 * np.eye(train.shape[1])
    chol = np.linalg.cholesky(cov)
    white = np.linalg.solve(chol, (val - mean).T)
    return float(np.mean(-0.5 * np.sum(white ** 2, 0)) - np.log(np.diag(chol)).sum()
                 - 0.5 * train.shape[1] * np.log(2 * np.pi))


def _fit(args) -> int:
    import inference

    from ._cli_io import check_writable, handle_nonfinite, read_table

    _check_fit_options(args)
    if args.flow not in inference.builders():
        raise CLIError(f"--flow {args.flow!r} is not a flow builder; choose one of {sorted(inference.builders())}")
    check_writable(args.out, args.force)
    data, header = read_table(args.data)
    data = handle_nonfinite(data, args.data, args.drop_nonfinite)
    if len(data) < 10:
        raise CLIError(f"{args.data}: need at least 10 rows to fit and check a model; got {len(data)}")
    train, val = _split(data, args.val_fraction, args.seed)
    options = {"hidden_dims": list(args.hidden)}
    if args.layers is not None:  # else the builder's own default (8 for maf, 10 for realnvp, ...)
        options["num_layers"] = args.layers
    if args.base != "normal":
        options["base"] = args.base
    flow = inference.build_flow(args.flow, args.seed, data.shape[1], **options)
    flow, history = inference.fit(flow, train, val_data=val, max_steps=args.steps, max_epochs=args.epochs,
                                  time_budget=args.time_budget, batch_size=min(args.batch_size, len(train)),
                                  learning_rate=args.lr, seed=args.seed, standardize=True,
                                  patience="auto" if args.patience is None else args.patience,
                                  progress=not args.quiet)
    best = _best_val(history)
    gaussian = _gaussian_log_likelihood(train, val)
    if best is None or best < gaussian - data.shape[1]:
        shown = "not finite" if best is None else f"{best:.4f}"
        raise CLIError(f"the fitted {args.flow} reaches a held-out mean log-likelihood of {shown}, far below a single "
                       f"Gaussian's {gaussian:.4f} on the same rows (more than 1 nat per column): not saved. Try a "
                       "smaller --lr, more --epochs or another --flow", code=1)
    meta = {"written_by": "nf-ppl fit", "columns": header,
            "source": args.data, "best_val_log_likelihood": best, "gaussian_val_log_likelihood": gaussian,
            "stop_reason": history.stop_reason, "epochs": history.epochs[-1] if history.epochs else 0}
    try:
        inference.save(flow, args.out, metadata=meta)
    except OSError as err:
        raise CLIError(f"cannot write {args.out}: {err}", code=1) from None
    note = {"interrupted": " (interrupted: the best parameters so far)",
            "time_budget": " (stopped by --time-budget: the best parameters so far)"}.get(history.stop_reason, "")
    print(f"saved {args.flow} model to {args.out}{note} (held-out mean log-likelihood {best:.4f}; "
          f"a single Gaussian: {gaussian:.4f})")
    return 0


def _best_val(history):
    import numpy as np

    value = getattr(history, "best_val_loss", None)
    return None if value is None or not np.isfinite(value) else float(-value)


def _load_model(path):
    import numpy as np

    import inference

    try:
        flow, meta = inference.load(path, return_metadata=True)
    except FileNotFoundError:
        raise CLIError(f"model file not found: {path}") from None
    except (inference.FlowFileError, ValueError, OSError) as err:
        raise CLIError(f"{path}: not a readable nf-ppl model ({str(err).splitlines()[0]})") from None
    if "standardize_mean" in meta:  # written before fit standardised: the flow is over standardised columns
        return flow, np.asarray(meta["standardize_mean"]), np.asarray(meta["standardize_sd"]), meta.get("columns")
    if meta.get("written_by") != "nf-ppl fit":
        raise CLIError(f"{path}: an nf-ppl flow file, but not one written by 'nf-ppl fit' (no column information stored)")
    return flow, np.zeros(flow.dim), np.ones(flow.dim), meta.get("columns")  # the flow is in the data's units


def _sample(args) -> int:
    import jax
    import numpy as np

    from ._cli_io import check_writable, write_table

    if args.n < 1:
        raise CLIError(f"-n must be a positive number of draws; got {args.n}")
    check_writable(args.out, args.force)
    flow, mean, sd, columns = _load_model(args.model)
    z = flow.sample(jax.random.PRNGKey(args.seed), (args.n,))
    write_table(args.out, np.asarray(z) * sd + mean, columns)
    print(f"wrote {args.n} draws to {args.out}")
    return 0


def _logprob(args) -> int:
    import numpy as np

    from ._cli_io import check_writable, handle_nonfinite, read_table, write_table

    check_writable(args.out, args.force)
    flow, mean, sd, _ = _load_model(args.model)
    data, _ = read_table(args.data)
    data = handle_nonfinite(data, args.data, args.drop_nonfinite)
    if data.shape[1] != len(mean):
        raise CLIError(f"{args.data} has {data.shape[1]} columns but the model was fitted to {len(mean)}")
    log_p = np.asarray(flow.log_prob((data - mean) / sd)) - np.log(sd).sum()
    write_table(args.out, log_p[:, None], ["log_prob"])
    print(f"wrote {len(log_p)} log-densities to {args.out} (mean {log_p.mean():.4f})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nf-ppl", description="Normalizing flows and exact-density models for NumPyro.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="run the end-to-end demo and write a report folder",
                          description="Symbolic checks, density estimation on two moons, and a flow guide on "
                                      "Neal's funnel; writes a Markdown report with PNG plots.")
    demo.add_argument("--quick", action="store_true", help="tiny budgets: finishes in seconds")
    demo.add_argument("--out", default=None, help="report folder (default: ./nf-ppl-report)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")

    sub.add_parser("verify", add_help=False, help="derive and check the notes' Jacobians with SymPy (--latex, --markdown)")

    fit = sub.add_parser("fit", help="fit a flow to a CSV or .npy table",
                         description="Fit a flow by maximum likelihood (columns standardised by a layer of the "
                                     "flow, so the model file is a density in the data's units, also for "
                                     "inference.load) with a validation split and early stopping.")
    fit.add_argument("data", help="CSV (header row optional) or .npy file, one row per observation")
    fit.add_argument("--flow", default="maf", help=f"flow builder: {', '.join(sorted(builders()))} or one registered "
                     "with nf_ppl.register_builder (default maf)")
    fit.add_argument("--out", required=True, help="model file to write (.npz)")
    fit.add_argument("--layers", type=int, default=None,
                     help="number of flow layers (default: the builder's, e.g. 8 for maf, 10 for realnvp)")
    fit.add_argument("--hidden", type=_hidden, default=(64, 64), help="hidden sizes, e.g. 64,64 (default)")
    fit.add_argument("--base", choices=("normal", "student_t", "mixture"), default="normal",
                     help="base distribution: normal (default), student_t (learned degrees of freedom per column, "
                          "for heavy-tailed data) or mixture (a learned mixture of 4 Gaussians, for clustered data)")
    fit.add_argument("--epochs", type=int, default=None,
                     help="maximum epochs (passes over the training rows; default: fit's, 500)")
    fit.add_argument("--steps", type=int, default=None, help="maximum optimiser steps (default: no cap besides --epochs)")
    fit.add_argument("--time-budget", type=float, default=600.0,
                     help="seconds of training at most (default 600); the best parameters so far are kept")
    fit.add_argument("--batch-size", type=int, default=256, help="minibatch size (default 256)")
    fit.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    fit.add_argument("--val-fraction", type=float, default=0.1, help="held-out fraction for early stopping (default 0.1)")
    fit.add_argument("--patience", type=int, default=None,
                     help="epochs without improvement before stopping (default: fit's, 30 epochs and at least 100 steps)")
    fit.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    fit.add_argument("--drop-nonfinite", action="store_true", help="drop rows with NaN or inf instead of refusing")
    fit.add_argument("--force", action="store_true", help="overwrite an existing output file")
    fit.add_argument("--quiet", action="store_true", help="no progress bar")

    sample = sub.add_parser("sample", help="draw from a fitted model", description="Draw rows from a model written by nf-ppl fit.")
    sample.add_argument("model", help="model file written by nf-ppl fit")
    sample.add_argument("-n", type=int, required=True, help="number of draws")
    sample.add_argument("--out", required=True, help="output file (.csv or .npy)")
    sample.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    sample.add_argument("--force", action="store_true", help="overwrite an existing output file")

    logprob = sub.add_parser("logprob", help="log-density of each row of a table under a fitted model",
                             description="Write the log-density (in the data's original units) of each row.")
    logprob.add_argument("model", help="model file written by nf-ppl fit")
    logprob.add_argument("data", help="CSV or .npy file with the model's columns")
    logprob.add_argument("--out", required=True, help="output file (.csv or .npy)")
    logprob.add_argument("--drop-nonfinite", action="store_true", help="drop rows with NaN or inf instead of refusing")
    logprob.add_argument("--force", action="store_true", help="overwrite an existing output file")
    return parser


COMMANDS = {"demo": _demo, "fit": _fit, "sample": _sample, "logprob": _logprob}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "verify":
        from symbolic import cli as symbolic_cli

        return symbolic_cli.main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return COMMANDS[args.command](args)
    except CLIError as err:
        print(f"nf-ppl {args.command}: error: {err}", file=sys.stderr)
        return err.code
    except KeyboardInterrupt:
        print(f"nf-ppl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
