r"""SymPy twins of numeric transforms, for :func:`symbolic.check_transform`.

A :class:`Twin` pairs a numeric transform with its symbolic map and, for
layers with neural conditioners, callables giving the conditioner's numeric
output at the evaluation points (substituted for the generic functions
:math:`s, t, \mu` of the symbolic map).

``numpyro_twins()`` covers NumPyro's own closed-form transforms;
``nf_ppl_twin(layer)`` builds the twin of an ``nf_ppl`` layer from the math
stated in that layer's docstring (``nf_ppl`` is imported lazily).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import sympy as sp

from .check import CheckReport, check_transform

__all__ = ["Twin", "numpyro_twins", "nf_ppl_twin", "NF_PPL_LAYERS"]

NF_PPL_LAYERS = ("ElementwiseAffine", "LeakyReLU", "ELU", "Softplus", "Tanh", "SinhArcsinh", "AffineCoupling",
                 "AdditiveCoupling", "MaskedAffineAutoregressive", "LULinear", "Permutation",
                 "RationalQuadraticSpline")


@dataclass
class Twin:
    """A numeric transform and its symbolic map (plus numeric conditioner values)."""

    name: str
    transform: object
    forward: tuple
    inputs: tuple
    values: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    log_abs_det: object = None  # when None, derived (and simplified) from ``forward``

    def check(self, **kwargs) -> CheckReport:
        if self.log_abs_det is not None:
            kwargs.setdefault("log_abs_det", self.log_abs_det)
        return check_transform(self.transform, self.forward, self.inputs, values=self.values,
                               params=self.params, name=self.name, **kwargs)


def _last_call(fn):
    """Memoise ``fn`` on the identity of its argument (conditioners are evaluated once per point set)."""
    memo = {}

    def wrapped(x):
        if memo.get("x") is not x:
            memo["x"], memo["value"] = x, fn(x)
        return memo["value"]

    return wrapped


def _xs(d, positive=False):
    kw = {"positive": True} if positive else {"real": True}
    return tuple(sp.Symbol(f"x{i + 1}", **kw) for i in range(d))


def numpyro_twins() -> list[Twin]:
    """Twins of NumPyro's closed-form transforms (fixed, non-trivial parameters)."""
    from numpyro.distributions import transforms as T

    (x,) = _xs(1)
    (xp,) = _xs(1, positive=True)
    x3 = _xs(3)
    ordered = (x3[0], x3[0] + sp.exp(x3[1]), x3[0] + sp.exp(x3[1]) + sp.exp(x3[2]))
    return [
        Twin("AffineTransform(1.5, -2)", T.AffineTransform(1.5, -2.0), (1.5 - 2 * x,), (x,)),
        Twin("ExpTransform", T.ExpTransform(), (sp.exp(x),), (x,)),
        Twin("SigmoidTransform", T.SigmoidTransform(), (1 / (1 + sp.exp(-x)),), (x,)),
        Twin("SoftplusTransform", T.SoftplusTransform(), (sp.log(1 + sp.exp(x)),), (x,)),
        Twin("PowerTransform(3)", T.PowerTransform(3.0), (xp**3,), (xp,)),
        Twin("OrderedTransform (d=3)", T.OrderedTransform(), ordered, x3),
    ]


# ----------------------------------------------------------------------------- nf_ppl


def _elementwise(layer, d):
    name = type(layer).__name__
    xs = _xs(d)
    if name == "ElementwiseAffine":
        loc, log_scale = np.asarray(layer.loc, float), np.asarray(layer.log_scale, float)
        return tuple(float(loc[i]) + sp.exp(float(log_scale[i])) * xs[i] for i in range(d)), xs
    if name == "LeakyReLU":
        a = float(layer.negative_slope)
        return tuple(sp.Piecewise((x, x >= 0), (a * x, True)) for x in xs), xs
    if name == "ELU":
        a = float(layer.alpha)
        return tuple(sp.Piecewise((x, x > 0), (a * (sp.exp(x) - 1), True)) for x in xs), xs
    if name == "Softplus":
        return tuple(sp.log(1 + sp.exp(x)) for x in xs), xs
    if name == "Tanh":
        return tuple(sp.tanh(x) for x in xs), xs
    if name == "SinhArcsinh":
        e, logd = np.asarray(layer.skew, float), np.asarray(layer.log_tailweight, float)
        return tuple(sp.sinh(sp.exp(float(logd[i])) * sp.asinh(xs[i]) - float(e[i])) for i in range(d)), xs
    raise TypeError(f"no elementwise twin for {name}")


def _coupling(layer):
    keep, change = (np.asarray(i) for i in layer._index)
    d = len(layer.mask)
    xs = _xs(d)
    cond = tuple(xs[i] for i in keep)
    affine = type(layer).__name__ == "AffineCoupling"
    shift = [sp.Function(f"t{j + 1}", real=True)(*cond) for j in range(len(change))]
    logsc = [sp.Function(f"s{j + 1}", real=True)(*cond) for j in range(len(change))]
    forward = list(xs)
    for j, i in enumerate(change):
        forward[i] = xs[i] * sp.exp(logsc[j]) + shift[j] if affine else xs[i] + shift[j]

    @_last_call
    def params_at(x):
        from nf_ppl.layers.coupling import soft_clamp

        p = layer._params_for(x[..., keep])
        if affine:
            return p[..., 0, :], soft_clamp(p[..., 1, :], layer.log_scale_bound)
        return p[..., 0, :], None

    values = {shift[j]: (lambda x, j=j: params_at(x)[0][..., j]) for j in range(len(change))}
    if affine:
        values.update({logsc[j]: (lambda x, j=j: params_at(x)[1][..., j]) for j in range(len(change))})
    return tuple(forward), xs, values


def _autoregressive(layer):
    """The one-pass map ``g(v)_i = v_i e^{s_i(v_<i)} + mu_i(v_<i)``: IAF's forward, MAF's inverse (``layer.inv``)."""
    d = layer.event_size
    xs = _xs(d)
    mu = [sp.Function(f"mu{i + 1}", real=True)(*xs[:i]) if i else sp.Symbol("mu1", real=True) for i in range(d)]
    s = [sp.Function(f"s{i + 1}", real=True)(*xs[:i]) if i else sp.Symbol("s1", real=True) for i in range(d)]
    transform = layer if layer.mode == "iaf" else layer.inv
    forward = tuple(x * sp.exp(si) + m for x, si, m in zip(xs, s, mu))
    cond = _last_call(layer._shift_log_scale)
    values = {mu[i]: (lambda v, i=i: cond(v)[0][..., i]) for i in range(d)}
    values.update({s[i]: (lambda v, i=i: cond(v)[1][..., i]) for i in range(d)})
    return transform, forward, xs, values


def _lu_linear(layer):
    d = layer.event_size
    xs = _xs(d)
    lower = sp.Matrix(d, d, lambda i, j: 1 if i == j else (sp.Symbol(f"L{i}{j}") if i > j else 0))
    upper = sp.Matrix(d, d, lambda i, j: sp.exp(sp.Symbol(f"l{i}")) if i == j else (
        sp.Symbol(f"U{i}{j}") if i < j else 0))
    bias = [sp.Symbol(f"b{i}") for i in range(d)]
    z = lower * upper * sp.Matrix(xs)
    order = range(d) if layer.perm is None else np.argsort(np.asarray(layer.perm))
    forward = tuple(z[int(k)] + bias[i] for i, k in enumerate(order))
    lo, up = np.asarray(layer.lower, float), np.asarray(layer.upper, float)
    params = {sp.Symbol(f"L{i}{j}"): lo[i, j] for i in range(d) for j in range(i)}
    params.update({sp.Symbol(f"U{i}{j}"): up[i, j] for i in range(d) for j in range(i + 1, d)})
    params.update({sp.Symbol(f"l{i}"): float(layer.log_diag[i]) for i in range(d)})
    params.update({bias[i]: float(layer.bias[i]) for i in range(d)})
    return forward, xs, params


def _softmax(v):
    e = np.exp(v - v.max())
    return e / e.sum()


def _rq_spline(layer):
    r"""Piecewise rational-quadratic map of each coordinate (Durkan et al., 2019).

    Knots from the layer's stated parametrisation, computed here with NumPy:
    bin sizes ``m + (1 - m K) softmax(raw)`` scaled to ``[-B, B]``, inner derivatives
    ``m_d + softplus(raw + log(expm1(1 - m_d)))``, end derivatives 1.  In bin ``k`` with
    :math:`\theta = (x - x_k) / w_k`, :math:`s_k = h_k / w_k`:

    .. math:: y = y_k + h_k \frac{s_k \theta^2 + d_k \theta (1 - \theta)}
                      {s_k + (d_k + d_{k+1} - 2 s_k) \theta (1 - \theta)},

    and the identity outside ``[-B, B]``.
    """
    bound = float(layer.tail_bound)
    widths, heights = np.asarray(layer.raw_widths, float), np.asarray(layer.raw_heights, float)
    derivs = np.asarray(layer.raw_derivatives, float)
    d, k = widths.shape
    xs = _xs(d)

    def knots(raw, minimum):
        frac = minimum + (1 - minimum * k) * _softmax(raw)
        pts = bound * (2 * np.cumsum(frac) - 1)
        return np.concatenate([[-bound], pts[:-1], [bound]])

    forward = []
    for i, x in enumerate(xs):
        xk, yk = knots(widths[i], layer.min_bin_width), knots(heights[i], layer.min_bin_height)
        shift = np.log(np.expm1(1 - layer.min_derivative))
        dk = np.concatenate([[1.0], layer.min_derivative + np.logaddexp(0, derivs[i] + shift), [1.0]])
        pieces = [(x, x < -bound)]
        for j in range(k):
            w, h = xk[j + 1] - xk[j], yk[j + 1] - yk[j]
            slope = h / w
            theta = (x - float(xk[j])) / float(w)
            mix = theta * (1 - theta)
            y = float(yk[j]) + float(h) * (float(slope) * theta ** 2 + float(dk[j]) * mix) / (
                float(slope) + float(dk[j] + dk[j + 1] - 2 * slope) * mix)
            pieces.append((y, x <= float(xk[j + 1])))
        pieces.append((x, True))
        forward.append(sp.Piecewise(*pieces))
    return tuple(forward), xs


def nf_ppl_twin(layer, dim: int | None = None) -> Twin:
    """The symbolic twin of an ``nf_ppl`` layer (math as stated in its docstring).

    ``dim`` is the event size for parameter-free elementwise layers.
    """
    name = type(layer).__name__
    if name in ("ElementwiseAffine", "SinhArcsinh"):
        forward, xs = _elementwise(layer, layer.event_size)
        return Twin(name, layer, forward, xs)
    if name in ("LeakyReLU", "ELU", "Softplus", "Tanh"):
        forward, xs = _elementwise(layer, dim or 3)
        return Twin(name, layer, forward, xs)
    if name in ("AffineCoupling", "AdditiveCoupling"):
        forward, xs, values = _coupling(layer)
        return Twin(name, layer, forward, xs, values)
    if name == "MaskedAffineAutoregressive":
        transform, forward, xs, values = _autoregressive(layer)
        return Twin(f"{name}({layer.mode})", transform, forward, xs, values)
    if name == "LULinear":
        forward, xs, params = _lu_linear(layer)
        return Twin(name, layer, forward, xs, params=params)
    if name == "RationalQuadraticSpline":
        forward, xs = _rq_spline(layer)
        # elementwise: log|det J| = sum_i log f_i'(x_i); differentiated piece by piece, not
        # simplified (simplifying float-heavy rational pieces loses digits)
        log_det = sum(sp.log(sp.diff(f, x)) for f, x in zip(forward, xs))
        return Twin(name, layer, forward, xs, log_abs_det=log_det)
    if name == "Permutation":
        xs = _xs(len(layer.perm))
        return Twin(name, layer, tuple(xs[p] for p in layer.perm), xs)
    raise TypeError(f"no symbolic twin for {name}; known layers: {', '.join(NF_PPL_LAYERS)}")

