r"""Symbolic derivations of the flow layer families with generic conditioners.

Each builder returns a :class:`LayerDerivation`: the map, its Jacobian, the
Jacobian's zero pattern, the determinant SymPy finds, and the closed form the
theory predicts. Conditioners are undefined SymPy functions (``s``, ``t``,
``mu``, ``sigma``), so the results hold for *any* network.

============================  =====================================  ==============================
family                        map                                    :math:`\det J`
============================  =====================================  ==============================
elementwise                   :math:`y_i = \sigma(x_i)`              :math:`\prod_i \sigma'(x_i)`
linear                        :math:`y = A x + b`                    :math:`\det A`
LU linear                     :math:`y = L U x + b`                  :math:`\prod_i e^{l_i}`
affine coupling               :math:`y_B = x_B e^{s(x_A)} + t(x_A)`  :math:`\exp\sum_j s_j(x_A)`
affine autoregressive (MAF)   :math:`z_i = (x_i-\mu_i)/\sigma_i`     :math:`\prod_i \sigma_i^{-1}`
affine autoregressive (IAF)   :math:`x_i = \mu_i + \sigma_i z_i`     :math:`\prod_i \sigma_i`
permutation                   :math:`y_i = x_{\pi(i)}`               :math:`\operatorname{sgn}\pi`
composition                   :math:`g \circ f`                      :math:`\det J_g(f(x)) \det J_f(x)`
============================  =====================================  ==============================
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from .change_of_variables import log_abs

__all__ = [
    "LayerDerivation",
    "elementwise",
    "linear",
    "lu_linear",
    "affine_coupling",
    "additive_coupling",
    "affine_autoregressive",
    "permutation",
    "compose",
    "layer_families",
]


@dataclass
class LayerDerivation:
    """A layer's map with its Jacobian, derived and expected determinants."""

    name: str
    inputs: tuple
    forward: tuple
    expected_det: sp.Expr
    structure: str
    note: str = ""
    jacobian: sp.Matrix = field(init=False)
    det: sp.Expr = field(init=False)
    log_abs_det: sp.Expr = field(init=False)

    def __post_init__(self):
        self.jacobian = sp.Matrix(self.forward).jacobian(self.inputs)
        self.det = sp.simplify(self.jacobian.det(method="berkowitz"))
        self.log_abs_det = log_abs(self.det)

    @property
    def zero_pattern(self) -> str:
        """The Jacobian's structural zeros, one row per line (``*`` nonzero, ``0`` zero)."""
        return "\n".join(
            " ".join("0" if sp.simplify(e) == 0 else "*" for e in self.jacobian.row(i))
            for i in range(self.jacobian.rows)
        )

    @property
    def expected_log_abs_det(self) -> sp.Expr:
        return log_abs(self.expected_det)

    def matches_expected(self) -> bool:
        """Does SymPy's determinant equal the closed form (and are the log-dets equal)?"""
        same_det = sp.simplify(self.det - self.expected_det) == 0
        same_log = sp.simplify(sp.expand_log(self.log_abs_det - self.expected_log_abs_det)) == 0
        return bool(same_det and same_log)

    def is_lower_triangular(self) -> bool:
        return all(sp.simplify(self.jacobian[i, j]) == 0
                   for i in range(self.jacobian.rows) for j in range(i + 1, self.jacobian.cols))

    def summary(self, fmt: str = "pretty") -> str:
        from .report import render_layer

        return render_layer(self, fmt)


def _xs(d, name="x"):
    if d < 1:
        raise ValueError(f"the dimension must be a positive integer, got {d}")
    return tuple(sp.Symbol(f"{name}{i + 1}", real=True) for i in range(d))


def elementwise(d: int = 3, sigma=None) -> LayerDerivation:
    r"""Elementwise map :math:`y_i = \sigma(x_i)`: diagonal Jacobian, :math:`\det = \prod_i \sigma'(x_i)`."""
    xs = _xs(d)
    sigma = sigma or sp.Function("sigma", real=True)
    forward = tuple(sigma(x) for x in xs)
    expected = sp.Mul(*[sp.diff(sigma(x), x) for x in xs])
    return LayerDerivation("elementwise", xs, forward, expected, "diagonal")


def linear(d: int = 2) -> LayerDerivation:
    r"""Linear map :math:`y = A x + b`: constant Jacobian :math:`A`, :math:`\det = \det A`."""
    xs = _xs(d)
    a = sp.Matrix(d, d, lambda i, j: sp.Symbol(f"a{i + 1}{j + 1}", real=True))
    b = sp.Matrix(d, 1, lambda i, _: sp.Symbol(f"b{i + 1}", real=True))
    forward = tuple(a * sp.Matrix(xs) + b)
    expected = sp.Add(*[
        sp.combinatorics.Permutation(list(p)).signature() * sp.Mul(*[a[i, p[i]] for i in range(d)])
        for p in _permutations(d)
    ])  # Leibniz formula, independent of SymPy's det routines
    return LayerDerivation("linear", xs, forward, expected, "dense")


def _permutations(d):
    from itertools import permutations

    return permutations(range(d))


def lu_linear(d: int = 3) -> LayerDerivation:
    r"""LU linear map :math:`y = L U x + b` with unit-lower :math:`L` and :math:`U_{ii} = e^{l_i}`.

    :math:`\det = \prod_i e^{l_i}`, so :math:`\log\lvert\det\rvert = \sum_i l_i`.
    """
    xs = _xs(d)
    lower = sp.Matrix(d, d, lambda i, j: 1 if i == j else (sp.Symbol(f"L{i + 1}{j + 1}", real=True) if i > j else 0))
    logs = [sp.Symbol(f"l{i + 1}", real=True) for i in range(d)]
    upper = sp.Matrix(d, d, lambda i, j: sp.exp(logs[i]) if i == j else (
        sp.Symbol(f"U{i + 1}{j + 1}", real=True) if i < j else 0))
    b = sp.Matrix(d, 1, lambda i, _: sp.Symbol(f"b{i + 1}", real=True))
    forward = tuple(lower * upper * sp.Matrix(xs) + b)
    return LayerDerivation("LU linear", xs, forward, sp.exp(sp.Add(*logs)), "dense (W = L U)")


def affine_coupling(d: int = 2, k: int | None = None, suffix: str = "") -> LayerDerivation:
    r"""Affine coupling: :math:`y_{1:k} = x_{1:k}`, :math:`y_j = x_j e^{s_j(x_{1:k})} + t_j(x_{1:k})`.

    The Jacobian is block lower-triangular with blocks :math:`I` and
    :math:`\operatorname{diag}(e^{s_j})`, so :math:`\det = \exp \sum_j s_j(x_{1:k})`.
    """
    xs = _xs(d)
    k = d // 2 if k is None else k
    if not 1 <= k < d:
        raise ValueError(f"the split k must satisfy 1 <= k < d, got k={k} for d={d}")
    cond = xs[:k]
    s = [sp.Function(f"s{suffix}{j + 1}" if d - k > 1 else f"s{suffix}", real=True)(*cond) for j in range(d - k)]
    t = [sp.Function(f"t{suffix}{j + 1}" if d - k > 1 else f"t{suffix}", real=True)(*cond) for j in range(d - k)]
    forward = cond + tuple(x * sp.exp(sj) + tj for x, sj, tj in zip(xs[k:], s, t))
    return LayerDerivation(f"affine coupling (d={d}, k={k})", xs, forward, sp.exp(sp.Add(*s)),
                           "block lower triangular")


def additive_coupling(d: int = 2, k: int | None = None) -> LayerDerivation:
    r"""Additive (NICE) coupling :math:`y_B = x_B + t(x_A)`: volume preserving, :math:`\det = 1`."""
    xs = _xs(d)
    k = d // 2 if k is None else k
    if not 1 <= k < d:
        raise ValueError(f"the split k must satisfy 1 <= k < d, got k={k} for d={d}")
    t = [sp.Function(f"t{j + 1}", real=True)(*xs[:k]) for j in range(d - k)]
    forward = xs[:k] + tuple(x + tj for x, tj in zip(xs[k:], t))
    return LayerDerivation(f"additive coupling (d={d}, k={k})", xs, forward, sp.Integer(1),
                           "block lower triangular")


def _conditioner(name, i, args, positive=False):
    """``name_i(args)``, or a plain symbol for the first coordinate (no arguments)."""
    assumptions = {"positive": True} if positive else {"real": True}
    if not args:
        return sp.Symbol(f"{name}{i + 1}", **assumptions)
    return sp.Function(f"{name}{i + 1}", **assumptions)(*args)


def affine_autoregressive(d: int = 3, mode: str = "maf") -> LayerDerivation:
    r"""Affine autoregressive map with conditioners :math:`\mu_i, \sigma_i > 0` of the earlier coordinates.

    ``mode="maf"`` is the density direction :math:`z_i = (x_i - \mu_i(x_{<i}))/\sigma_i(x_{<i})`,
    with :math:`\log\lvert\det\rvert = -\sum_i \log\sigma_i`; ``mode="iaf"`` the sampling direction
    :math:`x_i = \mu_i(z_{<i}) + \sigma_i(z_{<i}) z_i`, with :math:`\log\lvert\det\rvert = \sum_i \log\sigma_i`.
    Both Jacobians are lower triangular.
    """
    if mode not in ("maf", "iaf"):
        raise ValueError(f"mode must be 'maf' or 'iaf', got {mode!r}")
    name = "x" if mode == "maf" else "z"
    xs = _xs(d, name)
    mu = [_conditioner("mu", i, xs[:i]) for i in range(d)]
    sigma = [_conditioner("sigma", i, xs[:i], positive=True) for i in range(d)]
    if mode == "maf":
        forward = tuple((x - m) / s for x, m, s in zip(xs, mu, sigma))
        expected = 1 / sp.Mul(*sigma)
    else:
        forward = tuple(m + s * x for x, m, s in zip(xs, mu, sigma))
        expected = sp.Mul(*sigma)
    return LayerDerivation(f"affine autoregressive ({mode.upper()}, d={d})", xs, forward, expected,
                           "lower triangular")


def permutation(perm) -> LayerDerivation:
    r"""Permutation :math:`y_i = x_{\pi(i)}`: :math:`\det = \operatorname{sgn}\pi`, :math:`\lvert\det\rvert = 1`."""
    perm = tuple(int(p) for p in perm)
    if sorted(perm) != list(range(len(perm))):
        raise ValueError(f"{perm} is not a permutation of 0..{len(perm) - 1}")
    xs = _xs(len(perm))
    sign = sp.combinatorics.Permutation(list(perm)).signature()
    return LayerDerivation(f"permutation {perm}", xs, tuple(xs[p] for p in perm), sp.Integer(sign),
                           "permutation matrix")


def compose(*layers: LayerDerivation) -> LayerDerivation:
    r"""Composition :math:`f_n \circ \dots \circ f_1` (``layers`` in application order).

    The expected determinant is the chain rule
    :math:`\prod_k \det J_{f_k}(f_{k-1} \circ \dots \circ f_1(x))`, compared with the
    determinant SymPy computes from the composed map's own Jacobian.
    """
    if not layers:
        raise ValueError("compose needs at least one layer")
    first = layers[0]
    values = first.forward
    expected = first.det
    for layer in layers[1:]:
        if len(layer.inputs) != len(values):
            raise ValueError(f"cannot compose: {layer.name} takes {len(layer.inputs)} inputs, "
                             f"previous layer gives {len(values)}")
        at = dict(zip(layer.inputs, values))
        expected = expected * layer.det.subs(at, simultaneous=True)
        values = tuple(e.subs(at, simultaneous=True) for e in layer.forward)
    name = " then ".join(layer.name for layer in layers)
    return LayerDerivation(f"composition: {name}", first.inputs, values, expected, "chain rule")


def layer_families(d: int = 3) -> list[LayerDerivation]:
    """The standard derivations shown by ``nf-ppl verify`` (small ``d``)."""
    return [
        elementwise(d),
        linear(2),
        lu_linear(d),
        affine_coupling(2),
        affine_coupling(4, 2),
        additive_coupling(d),
        affine_autoregressive(d, "maf"),
        affine_autoregressive(d, "iaf"),
        permutation(tuple(reversed(range(d)))),
        compose(affine_coupling(2, suffix="a"), permutation((1, 0)), affine_coupling(2, suffix="b")),
    ]
