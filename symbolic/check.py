r"""Check numeric NumPyro transforms against SymPy derivations.

:func:`check_transform` evaluates a transform :math:`T` at random points
:math:`x` of its domain and compares, in float64 NumPy, with the symbolic map
:math:`f` and :math:`\log\lvert\det \partial f/\partial x\rvert`:

.. math::

    e_{abs} = \max \lvert T(x) - f(x) \rvert, \qquad
    e_{rel} = \max \frac{\lvert T(x) - f(x) \rvert}{\lvert f(x) \rvert}

and the same for ``log_abs_det_jacobian`` and for the round trip
:math:`T^{-1}(T(x)) = x`. The verdict is ``all(|a - b| <= atol + rtol |b|)``; the
default tolerance is :math:`\sqrt{\varepsilon}` of the transform's output dtype.

Points: half from the bulk of the domain (``biject_to(domain)`` of standard normals) and half
from its tails (of normals with sd 4), so an error confined to the tails is seen; the round trip
is checked on the bulk (in the tails rounding ``y`` can lose ``x``: ``tanh(9) == 1`` in float32).  Any NumPyro
``Transform`` works: it is jitted when it is a pytree and run eagerly otherwise.  An
elementwise transform (``event_dim = 0``) applied to vectors is compared coordinate by
coordinate with the diagonal of the symbolic Jacobian (never summed).  A non-square map
(``d`` inputs, ``m > d`` outputs, e.g. stick-breaking) has no ``|det J|``: its forward map and
round trip are checked and the log-determinant is reported as not applicable.

Maps with generic conditioner functions (``s(x1)``, ``mu(x1, x2)``...) are
checked at a given parameter setting: ``values`` gives, for each applied
function, a callable returning its numeric value at the points (e.g. the
layer's own conditioner), which is substituted into the symbolic map.
"""

from __future__ import annotations

from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import sympy as sp
from numpyro.distributions.transforms import biject_to

from ._common import as_exprs, as_symbols, numpy_function
from .change_of_variables import log_abs

__all__ = ["check_transform", "CheckReport", "reference_log_abs_det"]


@dataclass(frozen=True)
class CheckReport:
    """Largest errors of a transform against its symbolic twin, and the verdict."""

    name: str
    n_points: int
    dtype: str
    forward_abs_err: float
    forward_rel_err: float
    log_det_abs_err: float
    log_det_rel_err: float
    rtol: float
    atol: float
    passed: bool
    inverse_abs_err: float = float("nan")  # |T^{-1}(T(x)) - x|; nan when the transform has no inverse
    log_det_checked: bool = True  # False for non-square maps (no |det J|)
    notes: tuple = ()

    def __str__(self) -> str:
        return f"[{'PASS' if self.passed else 'FAIL'}] {self.details()}"

    def details(self) -> str:
        """The errors and tolerance, without the verdict."""
        log_det = (f"log|det J| max abs {self.log_det_abs_err:.2e} rel {self.log_det_rel_err:.2e}"
                   if self.log_det_checked else "log|det J| not applicable (non-square map)")
        inverse = "no inverse" if np.isnan(self.inverse_abs_err) else f"round trip max abs {self.inverse_abs_err:.2e}"
        text = (
            f"{self.name}: {self.n_points} points ({self.dtype}), tolerance "
            f"|err| <= {self.atol:.1e} + {self.rtol:.1e}|ref|; forward max abs {self.forward_abs_err:.2e} "
            f"rel {self.forward_rel_err:.2e}; {log_det}; {inverse}"
        )
        return text + "".join(f"; {n}" for n in self.notes)


def reference_log_abs_det(forward, inputs) -> sp.Expr:
    r"""Simplified :math:`\log\lvert\det J_f\rvert` of a square map (``ValueError`` if not square)."""
    forward, inputs = as_exprs(forward), as_symbols(inputs)
    if len(forward) != len(inputs):
        raise ValueError(
            f"the Jacobian is not square ({len(forward)} outputs, {len(inputs)} inputs): "
            "log|det J| is undefined"
        )
    det = sp.Matrix(forward).jacobian(inputs).det()
    return log_abs(sp.simplify(det))


def _unpack(forward, inputs, log_abs_det):
    """Accept expressions or a derivation object carrying forward/inputs/log_abs_det."""
    if hasattr(forward, "forward") and hasattr(forward, "inputs"):
        derivation = forward
        inputs = derivation.inputs if inputs is None else inputs
        if log_abs_det is None:
            log_abs_det = getattr(derivation, "log_abs_det", None)
        forward = derivation.forward
    if inputs is None:
        raise TypeError("check_transform needs the input symbols (inputs=...)")
    forward, inputs = as_exprs(forward), as_symbols(inputs)
    if len(forward) != len(inputs):
        return forward, inputs, None  # non-square: no |det J|
    if log_abs_det is None:  # for a numerical comparison: no simplification (it could run for minutes)
        log_abs_det = sp.log(sp.Abs(sp.Matrix(forward).jacobian(inputs).det(method="berkowitz")))
    return forward, inputs, sp.sympify(log_abs_det)


def _random_points(transform, d, n, seed):
    """Half the points from the bulk of the domain, half from its tails (unconstrained sd 4)."""
    domain = transform.domain
    shape = (n,) if d == 1 and domain.event_dim == 0 else (n, d)
    z = jax.random.normal(jax.random.PRNGKey(seed), shape)
    scale = jnp.where(jnp.arange(n) < n // 2, 1.0, 4.0).reshape((n,) + (1,) * (len(shape) - 1))
    return biject_to(domain)(z * scale)


def _replacements(exprs, values):
    """Swap numeric-valued objects (symbols or applied functions) for fresh symbols."""
    subs, order = {}, []
    for obj in values:
        obj = sp.sympify(obj)
        dummy = sp.Dummy(str(obj))
        subs[obj] = dummy
        order.append((obj, dummy))
    out = [e.xreplace(subs) for e in exprs]
    left = {f for e in out for f in e.atoms(sp.core.function.AppliedUndef)}
    derivs = [d for e in out for d in e.atoms(sp.Derivative)]
    if derivs:
        raise ValueError(
            f"the symbolic map still contains derivatives {sorted(map(str, set(derivs)))} after "
            "substituting values; give values for them too"
        )
    if left:
        raise ValueError(
            f"no numeric values given for {sorted(map(str, left))}: pass them in values={{...}}"
        )
    return out, order


_EAGER = (TypeError, NotImplementedError, jax.errors.JAXTypeError, jax.errors.ConcretizationTypeError)


def _evaluate(transform, x):
    """``T(x)``, its ``log_abs_det_jacobian`` and ``T^{-1}(T(x))`` (None without an inverse).

    Jitted (one compilation) when the transform is a pytree; run eagerly otherwise (a user's own
    ``Transform`` subclass need not be a pytree).
    """

    def run(t, x):
        y = t(x)
        return y, t.log_abs_det_jacobian(x, y)

    def back(t, y):
        return t.inv(y)

    try:
        y, ladj = jax.jit(run)(transform, x)
    except _EAGER:
        y, ladj = run(transform, x)
    try:
        try:
            x_back = jax.jit(back)(transform, y)
        except _EAGER:
            x_back = back(transform, y)
    except NotImplementedError:
        x_back = None
    return y, ladj, x_back


def _evaluate_values(given, x):
    """Numeric conditioner values at the points (callables evaluated together under ``jit``)."""
    def run(x):
        return [v(x) if callable(v) else jnp.asarray(v) for v in given]

    try:
        return jax.jit(run)(x)
    except _EAGER:
        return run(x)


def _errors(actual, reference):
    diff = np.abs(actual - reference)
    ref = np.abs(reference)
    rel = np.where(ref > 0, diff / np.where(ref > 0, ref, 1.0), diff)
    return diff, rel


def check_transform(transform, forward, inputs=None, *, log_abs_det=None, values=None, params=None,
                    points=None, n_points: int = 64, seed: int = 0, rtol: float | None = None,
                    atol: float | None = None, name: str | None = None) -> CheckReport:
    """Compare ``transform`` (any NumPyro transform) with the symbolic map ``forward(inputs)``.

    Parameters
    ----------
    transform:
        The numeric transform; it is applied to arrays of shape ``(n,)`` (one
        input, elementwise domain) or ``(n, d)``.
    forward, inputs:
        The symbolic twin, or a derivation object (``.forward``, ``.inputs``,
        ``.log_abs_det``) as ``forward`` and ``inputs=None``.
    log_abs_det:
        Override for the symbolic log-determinant (default: derived).
    values:
        ``{symbol or applied function: callable(x) -> array (n,) | number}``,
        numeric values substituted into the symbolic map at each point.
    params:
        ``{symbol: number}`` constants of the symbolic map.
    points:
        Points to use instead of random points of ``transform.domain``: shape ``(n, d)``.

    The report holds the largest errors of the forward map, of ``log|det J|`` (per coordinate for
    an elementwise transform; not applicable for a non-square map) and of the round trip
    ``T^{-1}(T(x))`` (when the transform has an inverse), and ``passed`` when all are within
    tolerance and finite.
    """
    if not callable(transform) or not hasattr(transform, "log_abs_det_jacobian"):
        raise TypeError("transform must be a NumPyro transform (callable, with log_abs_det_jacobian); got "
                        f"{type(transform).__name__}")
    forward, inputs, logdet = _unpack(forward, inputs, log_abs_det)
    d, m = len(inputs), len(forward)
    x = _random_points(transform, d, n_points, seed) if points is None else _check_points(points, d)
    try:
        y, ladj, x_back = _evaluate(transform, x)
    except Exception as err:  # a transform of another size fails deep inside JAX: say what does not fit
        raise ValueError(f"{type(transform).__name__} could not be applied to points of shape {tuple(x.shape)} "
                         f"(the symbolic map has {d} inputs): {type(err).__name__}: {err}") from err
    y_size = 1 if jnp.ndim(y) == 1 else int(jnp.shape(y)[-1])
    if y_size != m:
        raise ValueError(f"the symbolic map is not square or does not match: it has {m} outputs and {d} inputs, "
                         f"but {type(transform).__name__} gives {y_size} coordinates per point")

    event_dim = getattr(getattr(transform, "domain", None), "event_dim", 1)
    elementwise = event_dim == 0 and d > 1
    ref_exprs = list(forward)
    if logdet is not None:
        ref_exprs += _diagonal_log_dets(forward, inputs) if elementwise else [logdet]
    values = {sp.sympify(k): v for k, v in (values or {}).items()}
    params = {sp.sympify(k): v for k, v in (params or {}).items()}
    exprs, order = _replacements(ref_exprs, list(values) + list(params))
    given = [values[obj] if obj in values else params[obj] for obj, _ in order]
    extra = [np.asarray(v, dtype=np.float64) for v in _evaluate_values(given, x)]
    xs = np.asarray(x, dtype=np.float64).reshape(x.shape[0], d)
    ref = numpy_function(list(inputs) + [dummy for _, dummy in order], exprs)(*xs.T, *extra)
    ref_f = ref[:m].T

    actual_f = np.asarray(y, dtype=np.float64).reshape(ref_f.shape)
    eps = float(jnp.finfo(jnp.result_type(y)).eps)
    rtol = float(np.sqrt(eps)) if rtol is None else rtol
    atol = float(np.sqrt(eps)) if atol is None else atol
    df, rf = _errors(actual_f, ref_f)
    ok = [np.all(np.isfinite(actual_f)), np.all(np.isfinite(ref_f)), np.all(df <= atol + rtol * np.abs(ref_f))]
    dl = rl = np.array([np.nan])
    if logdet is not None:
        ref_l = ref[m:].T if elementwise else ref[m]
        actual_l = np.asarray(ladj, dtype=np.float64)
        if actual_l.shape != ref_l.shape:
            raise ValueError(f"{type(transform).__name__}.log_abs_det_jacobian gives shape {actual_l.shape}; expected "
                             f"{ref_l.shape} (event_dim={event_dim}: "
                             f"{'one per coordinate' if elementwise else 'one per point'})")
        dl, rl = _errors(actual_l, ref_l)
        ok += [np.all(np.isfinite(actual_l)), np.all(np.isfinite(ref_l)), np.all(dl <= atol + rtol * np.abs(ref_l))]
    inverse_err = float("nan")
    if x_back is not None:  # in the bulk only: in the tails rounding y may lose x (tanh(9) == 1 in float32)
        bulk = slice(0, xs.shape[0] // 2) if points is None else slice(None)
        back = np.asarray(x_back, dtype=np.float64).reshape(xs.shape)[bulk]
        diff_back = np.abs(back - xs[bulk])
        inverse_err = float(np.nanmax(diff_back)) if np.all(np.isfinite(back)) else float("inf")
        ok.append(np.all(np.isfinite(back)) and np.all(diff_back <= atol + rtol * np.abs(xs[bulk])))
    notes = ("elementwise transform: log|det J| compared per coordinate",) if elementwise and logdet is not None else ()
    return CheckReport(
        name=name or type(transform).__name__,
        n_points=int(xs.shape[0]),
        dtype=str(jnp.result_type(y)),
        forward_abs_err=float(np.nanmax(df)),
        forward_rel_err=float(np.nanmax(rf)),
        log_det_abs_err=float(np.max(dl)),
        log_det_rel_err=float(np.max(rl)),
        rtol=rtol,
        atol=atol,
        passed=bool(all(ok)),
        inverse_abs_err=inverse_err,
        log_det_checked=logdet is not None,
        notes=notes,
    )


def _check_points(points, d):
    x = jnp.asarray(points)
    if x.ndim not in (1, 2) or (x.ndim == 2 and x.shape[-1] != d) or (x.ndim == 1 and d != 1):
        raise ValueError(f"points must have shape (n, {d}) (or (n,) for one input), one row per point; "
                         f"got shape {tuple(x.shape)}")
    return x


def _diagonal_log_dets(forward, inputs):
    """``log|df_i/dx_i|`` per coordinate; refuses a map whose Jacobian is not diagonal."""
    jac = sp.Matrix(forward).jacobian(inputs)
    off = [(i, j) for i in range(len(inputs)) for j in range(len(inputs)) if i != j and sp.simplify(jac[i, j]) != 0]
    if off:
        raise ValueError(f"the transform is elementwise (event_dim=0) but the symbolic map is not: d f_{off[0][0] + 1}"
                         f"/d x_{off[0][1] + 1} = {jac[off[0]]} is not zero; compare a vector transform instead")
    return [log_abs(sp.simplify(jac[i, i])) for i in range(len(inputs))]
