"""Small helpers shared by the symbolic modules.

Parsing of user input (maps, supports, symbols), assumption-carrying internal
symbols, random points of a support, and float64 NumPy evaluation of SymPy
expressions (the *reference* side of every numerical comparison).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
import warnings
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import sympy as sp

__all__ = [
    "as_exprs",
    "as_symbols",
    "parse_support",
    "internal_symbols",
    "sample_box",
    "numpy_function",
    "check_free_symbols",
    "StepTimeout",
    "time_limit",
    "DEFAULT_TIME_LIMIT",
]

RETRY_INTERVAL = 0.05  # seconds between re-raises once a limit has expired
DEFAULT_TIME_LIMIT = 5.0  # seconds for one SymPy step (solve, simplify, integrate, determinant)


class StepTimeout(Exception):
    """A SymPy step ran past its time limit (``step`` says which)."""

    def __init__(self, step: str, seconds: float):
        super().__init__(f"{step} gave up after {seconds:g} s")
        self.step, self.seconds = step, seconds


@contextlib.contextmanager
def time_limit(seconds, step: str):
    """Raise :class:`StepTimeout` in the body once ``seconds`` of wall time have passed.

    SymPy cannot be interrupted cooperatively, so this uses ``SIGALRM`` (``setitimer``): it
    works in the main thread of a POSIX process.  Elsewhere (other threads, Windows) and with
    ``seconds=None`` the body runs without a limit.  Limits nest: an inner one never extends an
    outer one.
    """
    usable = (seconds is not None and hasattr(signal, "setitimer")
              and threading.current_thread() is threading.main_thread())
    if not usable:
        yield
        return
    remaining_outer, outer_interval = signal.getitimer(signal.ITIMER_REAL)
    if remaining_outer and remaining_outer < seconds:  # an outer limit fires first: leave it alone
        yield
        return

    state = {"active": True}

    def expire(signum, frame):
        if state["active"]:
            raise StepTimeout(step, seconds)

    previous = signal.signal(signal.SIGALRM, expire)
    start = time.monotonic()
    # The timer repeats every RETRY_INTERVAL after the first expiry: a signal that lands in code
    # which swallows exceptions (a garbage-collection callback, a ``__del__``) is raised again
    # a moment later instead of letting the step run on without a limit.
    signal.setitimer(signal.ITIMER_REAL, seconds, RETRY_INTERVAL)
    try:
        yield
    finally:
        state["active"] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if remaining_outer:  # restore the outer limit's timer (its handler is back in place)
            signal.setitimer(signal.ITIMER_REAL, max(remaining_outer - (time.monotonic() - start), 1e-3),
                             outer_interval)


def as_exprs(forward, what: str = "forward") -> tuple[sp.Expr, ...]:
    """Return ``forward`` as a tuple of SymPy expressions (a scalar becomes a 1-tuple)."""
    if isinstance(forward, sp.MatrixBase):
        forward = list(forward)
    if isinstance(forward, (sp.Basic, int, float)):
        forward = [forward]
    if not isinstance(forward, Iterable) or isinstance(forward, (str, bytes)):
        raise TypeError(
            f"{what} must be a SymPy expression or a sequence of them, got {type(forward).__name__}"
        )
    out = []
    for item in forward:
        try:
            expr = sp.sympify(item, strict=True)
        except (sp.SympifyError, TypeError) as err:
            raise TypeError(f"{what} entry {item!r} is not a SymPy expression") from err
        if not isinstance(expr, sp.Expr):
            raise TypeError(f"{what} entry {item!r} is not a SymPy expression")
        out.append(expr)
    if not out:
        raise ValueError(f"{what} is empty")
    return tuple(out)


def as_symbols(inputs, what: str = "inputs") -> tuple[sp.Symbol, ...]:
    """Return ``inputs`` as a tuple of distinct SymPy symbols."""
    if isinstance(inputs, sp.Symbol):
        inputs = [inputs]
    if isinstance(inputs, str):
        inputs = sp.symbols(inputs, seq=True)
    if not isinstance(inputs, Iterable):
        raise TypeError(f"{what} must be a SymPy symbol or a sequence of symbols")
    inputs = tuple(inputs)
    for s in inputs:
        if not isinstance(s, sp.Symbol):
            raise TypeError(f"{what} must contain SymPy symbols, got {s!r} ({type(s).__name__})")
    if not inputs:
        raise ValueError(f"{what} is empty")
    if len(set(inputs)) != len(inputs):
        raise ValueError(f"{what} contains repeated symbols: {inputs}")
    return inputs


def _as_interval(value, name) -> sp.Interval:
    if isinstance(value, tuple) and len(value) == 2:
        lo, hi = (sp.sympify(v) for v in value)
        if (lo > hi) == sp.true:
            raise ValueError(f"support of {name} has lower bound {lo} above upper bound {hi}")
        return sp.Interval(lo, hi)
    if value is None:
        return sp.Interval(-sp.oo, sp.oo)
    if value == sp.Reals:
        return sp.Interval(-sp.oo, sp.oo)
    if isinstance(value, sp.Interval):
        return value
    raise TypeError(
        f"support of {name} must be a SymPy Interval, sympy.Reals or a (low, high) pair, got {value!r}"
    )


def _default_interval(symbol) -> sp.Interval:
    """The half-line a symbol's own sign assumption implies, else the real line."""
    if symbol.is_nonnegative:
        return sp.Interval(0, sp.oo)
    if symbol.is_nonpositive:
        return sp.Interval(-sp.oo, 0)
    return sp.Interval(-sp.oo, sp.oo)


def parse_support(support, inputs: Sequence[sp.Symbol]) -> tuple[sp.Interval, ...]:
    """Normalise a support specification to one interval per input.

    Accepted forms: ``None`` (the whole space), an ``Interval`` (one input), a
    ``ProductSet`` of intervals, a sequence of intervals / ``(low, high)`` pairs
    in input order, or a mapping ``{symbol: interval}`` (missing inputs range
    over the real line).
    """
    d = len(inputs)
    if support is None:
        return tuple(_default_interval(s) for s in inputs)
    if isinstance(support, sp.ProductSet):
        support = list(support.sets)
    if isinstance(support, Mapping):
        by_name = {s.name: s for s in inputs}
        parsed = {}
        for key, value in support.items():
            sym = key if isinstance(key, sp.Symbol) else by_name.get(str(key))
            if sym is not None and sym not in inputs:
                sym = by_name.get(sym.name)
            if sym is None:
                raise ValueError(
                    f"support is given for {key}, which is not an input of the map "
                    f"(inputs: {', '.join(s.name for s in inputs)})"
                )
            parsed[sym] = _as_interval(value, sym)
        return tuple(parsed.get(s, _default_interval(s)) for s in inputs)
    if isinstance(support, (sp.Set, tuple)) and d == 1 and not (
        isinstance(support, tuple) and len(support) == 1
    ):
        return (_as_interval(support, inputs[0]),)
    if isinstance(support, Iterable):
        items = list(support)
        if len(items) != d:
            raise ValueError(f"support has {len(items)} entries but the map has {d} inputs")
        return tuple(_as_interval(v, s) for v, s in zip(items, inputs))
    raise TypeError(f"unsupported support specification {support!r}")


def internal_symbols(inputs, intervals) -> tuple[sp.Symbol, ...]:
    """Real symbols carrying the sign information of their support interval.

    An input supported in ``[0, oo)`` becomes ``positive`` (the boundary point
    has measure zero), one in ``(-oo, 0]`` becomes ``negative``; this lets
    SymPy drop ``Abs`` and choose square-root branches.
    """
    out = []
    for s, iv in zip(inputs, intervals):
        assumptions = {"real": True}
        if (iv.inf >= 0) == sp.true:
            assumptions = {"positive": True}
        elif (iv.sup <= 0) == sp.true:
            assumptions = {"negative": True}
        out.append(sp.Symbol(s.name, **assumptions))
    return tuple(out)


def check_free_symbols(expr_or_exprs, allowed, what: str, role: str = "inputs") -> None:
    """Raise ValueError if ``what`` depends on symbols outside ``allowed`` (the map's ``role``)."""
    exprs = expr_or_exprs if isinstance(expr_or_exprs, (list, tuple)) else [expr_or_exprs]
    free = set()
    for e in exprs:
        free |= sp.sympify(e).free_symbols
    extra = free - set(allowed)
    if extra:
        names = ", ".join(sorted(str(s) for s in extra))
        raise ValueError(
            f"{what} contains the symbols {names}, which are not {role} of the map "
            "(declare constants with parameters=... or substitute them first)"
        )


def sample_box(intervals, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` random points (shape ``(n, d)``) strictly inside a box of intervals."""
    cols = []
    for iv in intervals:
        lo, hi = float(iv.inf), float(iv.sup)
        if np.isfinite(lo) and np.isfinite(hi):
            u = rng.uniform(0.02, 0.98, size=n)
            cols.append(lo + (hi - lo) * u)
        elif np.isfinite(lo):
            cols.append(lo + rng.exponential(1.5, size=n) + 1e-3)
        elif np.isfinite(hi):
            cols.append(hi - rng.exponential(1.5, size=n) - 1e-3)
        else:
            cols.append(rng.normal(0.0, 1.5, size=n))
    return np.stack(cols, axis=-1)


def numpy_function(args, exprs, *, complex_ok: bool = False, functions: Mapping | None = None):
    """Compile SymPy expressions to a vectorised float64 (or complex128) NumPy function.

    The returned callable takes one array per argument and returns an array
    of shape ``(len(exprs), *broadcast_shape)``.  ``functions`` maps the names of undefined
    SymPy functions (``sp.Function("s")``) to NumPy callables implementing them.
    """
    exprs = list(exprs)
    modules = ([dict(functions)] if functions else []) + ["scipy", "numpy"]
    if complex_ok:
        modules = [{"mod": _complex_mod, "arctan2": _complex_arctan2}] + modules
    fn = sp.lambdify(list(args), exprs, modules=modules)
    dtype = np.complex128 if complex_ok else np.float64

    def evaluate(*values):
        values = [np.asarray(v, dtype=dtype) for v in values]
        shape = np.broadcast_shapes(*(v.shape for v in values)) if values else ()
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                out = fn(*values)
            except TypeError:  # a SciPy function with no complex loop (erfinv): real inputs, NaN outside its domain
                if not complex_ok:
                    raise
                out = fn(*[v.real for v in values])
        return np.stack([np.broadcast_to(np.asarray(o, dtype=dtype), shape) for o in out])

    return evaluate


def _complex_mod(a, b):
    """``mod`` of the real parts, keeping the imaginary part (for branch screening)."""
    a, b = np.asarray(a), np.real(np.asarray(b))
    return np.mod(np.real(a), b) + 1j * np.imag(a)


def _complex_arctan2(a, b):
    return np.arctan2(np.real(a), np.real(b)) + 0j
