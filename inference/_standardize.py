"""``fit``'s data standardisation: flows fitted to data in their own units.

Every builder's flow starts near its base, ``N(0, I)``, and its layers are tuned for data of about
that scale: a spline's knots span a fixed interval (outside it the layer is the identity), and an
affine layer moves its location by Adam steps of about the learning rate.  Data far from that
scale fit badly or slowly: on two moons scaled by 5 and shifted by 20, nsf reached -427 nats per
row and maf -5.16 in 276 epochs, against -4.39 and -4.44 (in 88 and 102 epochs) with the layer
below, their fits of the same rows standardised (bench/RESULTS.md, "fit standardises the data").

So ``fit`` puts an elementwise affine layer at the flow's data end,
``x = mean + sd * y``, started at the training rows' column means and standard deviations: the
flow it trains sees standardised rows, and the flow it returns is a density in the data's own
units (log-likelihoods in the history are too).  The layer's location and log-scale are ordinary
trainable parameters, and its location steps in standardised units (:func:`update_scales`): Adam
moves a parameter by about the learning rate a step, which for data of sd 1e-6 is a million sds.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from nf_ppl.layers import Chain, ElementwiseAffine

STANDARDIZE = ("auto", True, False)
STANDARD_MEAN = 0.5  # standardize="auto": columns with |mean| at most this ...
STANDARD_SD = (0.5, 2.0)  # ... and sd in this range are standard enough (a fresh flow's sds are within it)


def float_dtype(leaves):
    """The promoted dtype of the floating-point ``leaves`` (JAX's default float when there are none)."""
    floats = [l for l in leaves if jnp.issubdtype(jnp.result_type(l), jnp.floating)]
    return jnp.result_type(*floats) if floats else jnp.result_type(float)


def check_standardize(standardize):
    if not any(standardize is option or (isinstance(standardize, str) and standardize == option)
               for option in STANDARDIZE):
        raise ValueError(f"standardize must be 'auto', True or False; got {standardize!r}")


def _trailing_affine(flow):
    """The flow's own elementwise affine layer at its data end, if it has one (a flow ``fit`` standardised)."""
    transform = flow.transform
    last = transform.layers[-1] if isinstance(transform, Chain) else transform
    return last if isinstance(last, ElementwiseAffine) else None


def _moments(rows):
    mean = rows.mean(axis=0)
    sd = rows.std(axis=0)
    return mean, np.where(sd > 0, sd, 1.0)  # a constant column is shifted, not scaled


def standardized(flow, train_y, standardize):
    """``flow`` with a data-end affine layer at ``train_y``'s column moments when
    ``standardize`` asks for one (``"auto"``: when a column is off the standard scale, as seen through
    the flow's own data-end affine layer if it has one), else ``flow`` itself.  ``standardize`` is
    one of ``STANDARDIZE`` (``fit`` checks it before any work)."""
    if len(flow.flow_event_shape) != 1:
        if standardize is True:
            raise ValueError(f"standardize=True needs a flow over vectors; this flow's event shape is "
                             f"{tuple(flow.flow_event_shape)} (scale images yourself, e.g. to [0, 1])")
        return flow
    if standardize is False:
        return flow
    rows = np.asarray(train_y, dtype=np.float64)
    if standardize == "auto":
        affine = _trailing_affine(flow)
        seen = rows if affine is None else (rows - np.asarray(affine.loc)) * np.exp(-np.asarray(affine.log_scale))
        mean, sd = _moments(seen)
        if np.all(np.abs(mean) <= STANDARD_MEAN) and np.all((sd >= STANDARD_SD[0]) & (sd <= STANDARD_SD[1])):
            return flow
    mean, sd = _moments(rows)
    return with_data_affine(flow, mean, np.log(sd))


def with_data_affine(flow, loc=0.0, log_scale=0.0):
    """``flow`` followed, at its data end, by ``x = loc + exp(log_scale) * y`` (in the flow's float dtype;
    the identity by default)."""
    dtype = float_dtype(jax.tree_util.tree_leaves(flow))
    loc, log_scale = (jnp.broadcast_to(jnp.asarray(v, dtype), flow.flow_event_shape) for v in (loc, log_scale))
    return flow.replace(transform=Chain([flow.transform, ElementwiseAffine(loc, log_scale)]))


def update_scales(flow):
    """Per-leaf factors for ``fit``'s optimiser updates, or None when all are 1: the location of the
    flow's data-end affine layer steps in units of that layer's scale (the data's sd), so a fit does
    not depend on the data's units.  Adam steps a parameter by about the learning rate whatever its
    gradient's size: a location in data units of sd 1e-6 jumped a million sds a step (the fit of
    such data stopped at its start, 2.3 nats a row below a Gaussian), one of sd 1e3 crept."""
    affine = _trailing_affine(flow)
    if affine is None:
        return None
    ones = jax.tree_util.tree_map(jnp.ones_like, flow)
    transform = ones.transform
    layers = list(transform.layers) if isinstance(transform, Chain) else [transform]
    layers[-1] = ElementwiseAffine(jnp.exp(affine.log_scale).astype(affine.loc.dtype), layers[-1].log_scale)
    ones = ones.replace(transform=Chain(layers) if isinstance(transform, Chain) else layers[0])
    return jax.tree_util.tree_leaves(ones)
