"""Text renderings of derivations: pretty (ASCII art), LaTeX and Markdown."""

from __future__ import annotations

import sympy as sp

__all__ = ["render", "render_change_of_variables", "render_layer", "tex_text", "FORMATS"]

FORMATS = ("pretty", "latex", "markdown")


def _check_format(fmt):
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {FORMATS}")


_TEX_SPECIAL = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "_": r"\_", "^": r"\^{}", "#": r"\#",
                "%": r"\%", "&": r"\&", "$": r"\$", "~": r"\~{}", "|": r"\textbar{}", "<": r"\textless{}",
                ">": r"\textgreater{}"}


def tex_text(text: str) -> str:
    """Plain text made safe for LaTeX's text mode (every special character escaped)."""
    return "".join(_TEX_SPECIAL.get(ch, ch) for ch in str(text))


def render(label: str, value, fmt: str) -> str:
    """One labelled item: ``label`` followed by ``value`` (a SymPy object or plain text)."""
    _check_format(fmt)
    if fmt == "latex":
        if isinstance(value, str):
            return f"\\noindent {tex_text(label)}: {tex_text(value)}\\par"
        return f"\\noindent {tex_text(label)}:\n\\[ {sp.latex(value)} \\]"
    if isinstance(value, str):
        return f"- {label}: {value}" if fmt == "markdown" else f"{label}: {value}"
    if fmt == "markdown":
        return f"- {label}: ${sp.latex(value)}$"
    art = sp.pretty(value, use_unicode=False)
    if "\n" in art:
        return f"{label}:\n" + "\n".join("    " + line for line in art.splitlines())
    return f"{label}: {art}"


def _map_equation(outputs, forward):
    if len(forward) == 1:
        return sp.Eq(outputs[0], forward[0])
    return sp.Eq(sp.Matrix(outputs), sp.Matrix(forward))


def render_change_of_variables(cov, fmt: str = "pretty") -> str:
    """The whole derivation of a :class:`~symbolic.ChangeOfVariables`."""
    _check_format(fmt)
    items = [("map", _map_equation(cov.outputs, cov.forward))]
    items.append(("support", sp.ProductSet(*cov.support) if len(cov.support) > 1 else cov.support[0]))
    if cov.base_density is not None:
        items.append(("base density", cov.base_density))
    items.append(("Jacobian", cov.jacobian))
    if cov.is_square:
        items += [("det J", cov.det), ("log|det J|", cov.log_abs_det)]
    if cov.has_density:
        for k, branch in enumerate(cov.branches):
            label = "inverse" if len(cov.branches) == 1 else f"inverse branch {k + 1}"
            items.append((label, _map_equation(cov.inputs, branch)))
        if cov.base_density is not None:
            items += cov.derivation
            items += [("pushforward density", cov.density), ("on", cov.output_support)]
    else:
        items.append(("no density", cov.reason))
    return "\n".join(render(label, value, fmt) for label, value in items)


def render_layer(layer, fmt: str = "pretty") -> str:
    """A :class:`~symbolic.layers.LayerDerivation` with its zero pattern and determinant."""
    _check_format(fmt)
    outputs = sp.symbols(f"y1:{len(layer.forward) + 1}", real=True)
    pattern = layer.zero_pattern
    if fmt == "markdown":
        pattern_text = "\n```\n" + pattern + "\n```"
    elif fmt == "latex":
        pattern_text = None
    else:
        pattern_text = "\n    " + pattern.replace("\n", "\n    ")
    items = [
        render("map", _map_equation(outputs, layer.forward), fmt),
        (f"\\noindent Jacobian zero pattern ({tex_text(layer.structure)}):\n\\begin{{verbatim}}\n{pattern}\n"
         "\\end{verbatim}") if fmt == "latex" else render(f"Jacobian zero pattern ({layer.structure})", pattern_text, fmt),
        render("det J", layer.det, fmt),
        render("log|det J|", layer.log_abs_det, fmt),
    ]
    return "\n".join(items)
