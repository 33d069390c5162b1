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

__all__ = ["Twin", "numpyro_twins", "nf_ppl_twin", "register_twin", "NF_PPL_LAYERS"]


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


def _affine_map(layer, xs):
    loc, log_scale = np.asarray(layer.loc, float), np.asarray(layer.log_scale, float)
    return tuple(float(loc[i]) + sp.exp(float(log_scale[i])) * x for i, x in enumerate(xs))


def _leaky_relu_map(layer, xs):
    a = float(layer.negative_slope)
    return tuple(sp.Piecewise((x, x >= 0), (a * x, True)) for x in xs)


def _elu_map(layer, xs):
    a = float(layer.alpha)
    return tuple(sp.Piecewise((x, x > 0), (a * (sp.exp(x) - 1), True)) for x in xs)


def _sinh_arcsinh_map(layer, xs):
    e, logd = np.asarray(layer.skew, float), np.asarray(layer.log_tailweight, float)
    return tuple(sp.sinh(sp.exp(float(logd[i])) * sp.asinh(x) - float(e[i])) for i, x in enumerate(xs))


def _elementwise(elementwise_map, parametrised: bool):
    """A twin builder for an elementwise layer: ``elementwise_map(layer, xs)`` gives the coordinate maps;
    a parametrised layer has its own event size, a parameter-free one takes ``dim`` (default 3)."""
    def build(layer, dim):
        xs = _xs(layer.event_size if parametrised else (dim or 3))
        return Twin(type(layer).__name__, layer, elementwise_map(layer, xs), xs)
    return build


def _coupling(layer, affine: bool):
    keep, change = (np.asarray(i) for i in layer.partition)
    d = len(layer.mask)
    xs = _xs(d)
    cond = tuple(xs[i] for i in keep)
    shift = [sp.Function(f"t{j + 1}", real=True)(*cond) for j in range(len(change))]
    logsc = [sp.Function(f"s{j + 1}", real=True)(*cond) for j in range(len(change))]
    forward = list(xs)
    for j, i in enumerate(change):
        forward[i] = xs[i] * sp.exp(logsc[j]) + shift[j] if affine else xs[i] + shift[j]

    @_last_call
    def params_at(x):  # the layer's own conditioner outputs: (t, s) or (t,)
        return layer.transformer_params(x)

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
    cond = _last_call(layer.transformer_params)
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


def _coupling_twin(affine: bool):
    def build(layer, dim):
        forward, xs, values = _coupling(layer, affine)
        return Twin(type(layer).__name__, layer, forward, xs, values)
    return build


def _autoregressive_twin(layer, dim):
    transform, forward, xs, values = _autoregressive(layer)
    return Twin(f"{type(layer).__name__}({layer.mode})", transform, forward, xs, values)


def _lu_linear_twin(layer, dim):
    forward, xs, params = _lu_linear(layer)
    return Twin(type(layer).__name__, layer, forward, xs, params=params)


def _rq_spline_twin(layer, dim):
    forward, xs = _rq_spline(layer)
    # elementwise: log|det J| = sum_i log f_i'(x_i); differentiated piece by piece, not
    # simplified (simplifying float-heavy rational pieces loses digits)
    log_det = sum(sp.log(sp.diff(f, x)) for f, x in zip(forward, xs))
    return Twin(type(layer).__name__, layer, forward, xs, log_abs_det=log_det)


def _permutation_twin(layer, dim):
    xs = _xs(len(layer.perm))
    return Twin(type(layer).__name__, layer, tuple(xs[p] for p in layer.perm), xs)


def _by_transformer(builders):
    """A twin builder for a layer with a transformer (couplings, autoregressive layers): the twin of its
    transformer's class (names in ``nf_ppl.layers.transformers``), found along the class hierarchy."""
    def build(layer, dim):
        from nf_ppl.layers import transformers

        table = {getattr(transformers, name): fn for name, fn in builders.items()}
        for cls in type(layer.transformer).__mro__:
            if cls in table:
                return table[cls](layer, dim)
        raise TypeError(f"no symbolic twin for {type(layer).__name__} with transformer "
                        f"{type(layer.transformer).__name__}; twins exist for transformers {', '.join(builders)}")
    return build


_TWIN_BUILDERS = {  # layer class name in nf_ppl.layers -> twin builder; resolved to classes on first use
    "ElementwiseAffine": _elementwise(_affine_map, True), "SinhArcsinh": _elementwise(_sinh_arcsinh_map, True),
    "LeakyReLU": _elementwise(_leaky_relu_map, False), "ELU": _elementwise(_elu_map, False),
    "Softplus": _elementwise(lambda layer, xs: tuple(sp.log(1 + sp.exp(x)) for x in xs), False),
    "Tanh": _elementwise(lambda layer, xs: tuple(sp.tanh(x) for x in xs), False),
    "Coupling": _by_transformer({"Affine": _coupling_twin(affine=True), "Shift": _coupling_twin(affine=False)}),
    "MaskedAutoregressive": _by_transformer({"Affine": _autoregressive_twin}), "LULinear": _lu_linear_twin,
    "RationalQuadraticSpline": _rq_spline_twin, "Permutation": _permutation_twin,
}
NF_PPL_LAYERS = tuple(_TWIN_BUILDERS)
_TWINS_BY_CLASS: dict = {}


def register_twin(cls, builder) -> None:
    """Give layer class ``cls`` (and its subclasses) a twin: ``builder(layer, dim) -> Twin``."""
    if not isinstance(cls, type) or not callable(builder):
        raise TypeError(f"register_twin needs a class and a callable; got {cls!r}, {builder!r}")
    _twins_by_class()[cls] = builder


def _twins_by_class() -> dict:
    if not _TWINS_BY_CLASS:  # nf_ppl is imported here, on first use, not when symbolic is imported
        import nf_ppl.layers as layers

        _TWINS_BY_CLASS.update({getattr(layers, name): fn for name, fn in _TWIN_BUILDERS.items()})
    return _TWINS_BY_CLASS


def nf_ppl_twin(layer, dim: int | None = None) -> Twin:
    """The symbolic twin of an ``nf_ppl`` layer (math as stated in its docstring).

    Twins are registered by layer class and found along the layer's class hierarchy, so a
    subclass (``ActNorm``, an ``ElementwiseAffine``) gets its parent's twin; a new layer class
    adds its own with :func:`register_twin`.  ``dim`` is the event size for parameter-free
    elementwise layers (default 3).
    """
    table = _twins_by_class()
    for cls in type(layer).__mro__:
        if cls in table:
            return table[cls](layer, dim)
    known = sorted(c.__name__ for c in table)
    raise TypeError(f"no symbolic twin for {type(layer).__name__}; known layers (and their subclasses): "
                    f"{', '.join(known)}")
