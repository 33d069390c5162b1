r"""Check numeric NumPyro transforms against SymPy derivations.

:func:`check_transform` evaluates a transform :math:`T` at random points
:math:`x` of its domain and compares, in float64 NumPy, with the symbolic map
:math:`f` and :math:`\log\lvert\det \partial f/\partial x\rvert`:

.. math::

    e_{abs} = \max \lvert T(x) - f(x) \rvert, \qquad
    e_{rel} = \max \frac{\lvert T(x) - f(x) \rvert}{\lvert f(x) \rvert}

and the same for ``log_abs_det_jacobian``. The verdict is
``all(|a - b| <= atol + rtol |b|)``; the default tolerance is
:math:`\sqrt{\varepsilon}` of the transform's output dtype.

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

    def __str__(self) -> str:
        return f"[{'PASS' if self.passed else 'FAIL'}] {self.details()}"

    def details(self) -> str:
        """The errors and tolerance, without the verdict."""
        return (
            f"{self.name}: {self.n_points} points ({self.dtype}), tolerance "
            f"|err| <= {self.atol:.1e} + {self.rtol:.1e}|ref|; forward max abs {self.forward_abs_err:.2e} "
            f"rel {self.forward_rel_err:.2e}; log|det J| max abs {self.log_det_abs_err:.2e} "
            f"rel {self.log_det_rel_err:.2e}"
        )


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
    if log_abs_det is None:
        log_abs_det = reference_log_abs_det(forward, inputs)
    return forward, inputs, sp.sympify(log_abs_det)


def _random_points(transform, d, n, seed):
    domain = transform.domain
    shape = (n,) if d == 1 and domain.event_dim == 0 else (n, d)
    z = jax.random.normal(jax.random.PRNGKey(seed), shape)
    return biject_to(domain)(z)


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


def _evaluate(transform, x):
    """``T(x)`` and the total ``log|det J|`` per point, jitted (one compilation) when possible."""

    def run(t, x):
        y = t(x)
        ladj = t.log_abs_det_jacobian(x, y)
        if jnp.ndim(ladj) == jnp.ndim(x) and jnp.ndim(x) == 2:
            ladj = jnp.sum(ladj, axis=-1)  # elementwise transform on a vector: total log|det J|
        return y, ladj

    try:
        return jax.jit(run)(transform, x)
    except (TypeError, jax.errors.JAXTypeError, jax.errors.ConcretizationTypeError):
        return run(transform, x)  # not a pytree, or needs concrete values


def _evaluate_values(given, x):
    """Numeric conditioner values at the points (callables evaluated together under ``jit``)."""
    def run(x):
        return [v(x) if callable(v) else jnp.asarray(v) for v in given]

    try:
        return jax.jit(run)(x)
    except (TypeError, jax.errors.JAXTypeError, jax.errors.ConcretizationTypeError):
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
        Points to use instead of random points of ``transform.domain``.
    """
    forward, inputs, logdet = _unpack(forward, inputs, log_abs_det)
    d = len(inputs)
    if len(forward) != d:
        raise ValueError(f"the Jacobian is not square ({len(forward)} outputs, {d} inputs)")
    x = _random_points(transform, d, n_points, seed) if points is None else jnp.asarray(points)
    y, ladj = _evaluate(transform, x)

    values = {sp.sympify(k): v for k, v in (values or {}).items()}
    params = {sp.sympify(k): v for k, v in (params or {}).items()}
    exprs, order = _replacements(list(forward) + [logdet], list(values) + list(params))
    given = [values[obj] if obj in values else params[obj] for obj, _ in order]
    extra = [np.asarray(v, dtype=np.float64) for v in _evaluate_values(given, x)]
    xs = np.asarray(x, dtype=np.float64).reshape(x.shape[0], d)
    ref = numpy_function(list(inputs) + [dummy for _, dummy in order], exprs)(*xs.T, *extra)
    ref_f, ref_l = ref[:d].T, ref[d]

    actual_f = np.asarray(y, dtype=np.float64).reshape(ref_f.shape)
    actual_l = np.asarray(ladj, dtype=np.float64).reshape(ref_l.shape)
    eps = float(jnp.finfo(jnp.result_type(y)).eps)
    rtol = float(np.sqrt(eps)) if rtol is None else rtol
    atol = float(np.sqrt(eps)) if atol is None else atol
    df, rf = _errors(actual_f, ref_f)
    dl, rl = _errors(actual_l, ref_l)
    finite = all(np.all(np.isfinite(a)) for a in (actual_f, actual_l, ref_f, ref_l))
    passed = finite and bool(np.all(df <= atol + rtol * np.abs(ref_f)) and np.all(dl <= atol + rtol * np.abs(ref_l)))
    return CheckReport(
        name=name or type(transform).__name__,
        n_points=int(xs.shape[0]),
        dtype=str(jnp.result_type(y)),
        forward_abs_err=float(np.nanmax(df)),
        forward_rel_err=float(np.nanmax(rf)),
        log_det_abs_err=float(np.nanmax(dl)),
        log_det_rel_err=float(np.nanmax(rl)),
        rtol=rtol,
        atol=atol,
        passed=passed,
    )
