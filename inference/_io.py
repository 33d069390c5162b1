"""Safe storage of trained flows: a spec registry, ``save``/``load`` and atomic file writes.

File format (``.npz``, readable with ``np.load(path, allow_pickle=False)``; no pickle anywhere):

* ``__header__``: a uint8 array holding UTF-8 JSON with ``format``, ``version``, ``kind``
  (``"flow"`` or ``"checkpoint"``), the builder ``spec`` (or ``None``), the flow's pytree
  structure as a string, the shape and dtype of every leaf, free ``metadata`` and the SHA-256
  of the payload;
* ``leaf_00000``, ``leaf_00001``, ...: the float arrays (payload).  The digest covers each
  array's name, dtype, shape and bytes, so a truncated, edited or foreign file is refused with
  a :class:`FlowFileError` (a ``ValueError``).

A flow does not remember how it was built, so ``load`` needs a *spec*: a JSON dict
``{"builder": name, "seed": int, "dim": int, "options": {...}}``.  :func:`build_flow` builds a
flow from a registered builder and remembers its spec under the flow's pytree structure (which
training does not change), so ``save(trained_flow, path)`` finds it; otherwise pass ``spec=``
or, at load time, a template flow (``load(path, like=flow)``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import zipfile
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

import nf_ppl

FORMAT = "nf-ppl"
VERSION = 2  # 2: MAF layers compute the density direction as g(y) = y * scale + shift (softplus scale)

__all__ = ["FlowFileError", "build", "build_flow", "builders", "load", "register_builder", "save",
           "spec_of", "atomic_write_bytes"]


class FlowFileError(ValueError):
    """A flow or checkpoint file is truncated, tampered with, foreign, or does not fit the flow."""


# -- builder registry ----------------------------------------------------------------------------

_EXTRA_BUILDERS: dict[str, Callable] = {}
_SPECS: dict[Any, dict] = {}


def builders() -> dict[str, Callable]:
    """Every builder usable by name: ``nf_ppl.BUILDERS`` plus those added by :func:`register_builder`."""
    out = dict(nf_ppl.BUILDERS)
    out.update(_EXTRA_BUILDERS)
    return out


def register_builder(name: str, fn: Callable) -> None:
    """Make ``fn(key, dim, **options) -> Flow`` available by ``name`` to ``build_flow``/``AutoFlow``."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"builder name must be a non-empty string; got {name!r}")
    if not callable(fn):
        raise TypeError(f"builder {name!r} must be callable; got {type(fn).__name__}")
    _EXTRA_BUILDERS[name] = fn


def get_builder(name: str) -> Callable:
    table = builders()
    if not isinstance(name, str) or name not in table:
        raise ValueError(f"unknown flow {name!r}; valid names are {sorted(table)} "
                         f"(or pass a callable builder(key, dim, **options) -> Flow)")
    return table[name]


def _jsonable(value, where: str):
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (tuple, list)):
        return [_jsonable(v, where) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v, where) for k, v in value.items()}
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (np.dtype, type)) or type(value).__name__ == "_ScalarMeta":
        try:
            return {"__dtype__": jnp.dtype(value).name}
        except TypeError:
            pass
    raise TypeError(f"{where} must be JSON-serialisable (numbers, strings, lists, dicts, dtypes); got {value!r}")


def _from_json(value):
    if isinstance(value, dict):
        if set(value) == {"__dtype__"}:
            return jnp.dtype(value["__dtype__"])
        return {k: _from_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_from_json(v) for v in value)
    return value


def _make_spec(name: str, seed: int, dim: int, options: dict) -> dict:
    if not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int (a spec must be JSON); got {type(seed).__name__}")
    return {"builder": name, "seed": int(seed), "dim": int(dim), "options": _jsonable(options, "builder options")}


def build(spec: dict):
    """Build the flow described by ``spec`` (``{"builder", "seed", "dim", "options"}``) and remember the spec."""
    if not isinstance(spec, dict) or not {"builder", "seed", "dim"} <= set(spec):
        raise ValueError(f"spec must be a dict with keys 'builder', 'seed', 'dim' (and 'options'); got {spec!r}")
    options = {k: _from_json(v) for k, v in dict(spec.get("options") or {}).items()}
    return build_flow(spec["builder"], spec["seed"], spec["dim"], **options)


def build_flow(name: str, seed: int, dim: int, **options):
    """``builders()[name](PRNGKey(seed), dim, **options)``; the spec is recorded so ``save`` can find it."""
    fn = get_builder(name)
    spec = _make_spec(name, seed, dim, options)
    flow = fn(jax.random.PRNGKey(int(seed)), int(dim), **options)
    _SPECS[jax.tree_util.tree_structure(flow)] = spec
    return flow


def spec_of(flow) -> dict | None:
    """The spec of a flow made by :func:`build_flow`/:func:`build` (or of any flow of identical structure)."""
    spec = getattr(flow, "spec", None)
    if isinstance(spec, dict):
        return spec
    return _SPECS.get(jax.tree_util.tree_structure(flow))


# -- low-level file handling -----------------------------------------------------------------------

def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same folder, fsync, ``os.replace``."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path) + "-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    try:  # make the rename itself durable where the platform allows it
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def write_container(path, arrays: dict[str, np.ndarray], header: dict) -> None:
    """Atomically write float/int arrays plus a JSON header (with the payload's SHA-256) as ``.npz``."""
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    for k, v in arrays.items():
        if v.dtype == object:
            raise TypeError(f"array {k!r} has dtype object; only numeric arrays can be saved")
    header = dict(header, format=FORMAT, version=VERSION, sha256=_digest(arrays))
    buf = io.BytesIO()
    np.savez(buf, __header__=np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8), **arrays)
    atomic_write_bytes(path, buf.getvalue())


def read_container(path, kind: str | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and verify a file written by :func:`write_container`; raise :class:`FlowFileError` if it is bad."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            names = list(npz.files)
            if "__header__" not in names:
                raise FlowFileError(f"{path!r} is not an nf-ppl file (no __header__ entry)")
            header = json.loads(bytes(npz["__header__"]).decode("utf-8"))
            arrays = {n: np.asarray(npz[n]) for n in names if n != "__header__"}
    except FlowFileError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError, UnicodeDecodeError) as err:
        raise FlowFileError(f"{path!r} is truncated, corrupted or not an nf-ppl .npz file ({type(err).__name__}: {err})") from err
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise FlowFileError(f"{path!r} is not an nf-ppl file (header format {header.get('format') if isinstance(header, dict) else header!r})")
    if header.get("version") != VERSION:
        raise FlowFileError(f"{path!r} has format version {header.get('version')!r}; this nf-ppl reads version {VERSION}")
    if kind is not None and header.get("kind") != kind:
        raise FlowFileError(f"{path!r} holds a {header.get('kind')!r}, expected a {kind!r}")
    if _digest(arrays) != header.get("sha256"):
        raise FlowFileError(f"{path!r}: SHA-256 of the stored arrays does not match the header; "
                            "the file was modified or damaged after it was written")
    return header, arrays


def leaves_to_arrays(leaves, prefix: str = "leaf") -> dict[str, np.ndarray]:
    return {f"{prefix}_{i:05d}": np.asarray(leaf) for i, leaf in enumerate(leaves)}


def arrays_to_leaves(arrays: dict, template_leaves, prefix: str, path: str, what: str = "flow"):
    """Check stored arrays against a template's leaves (count, shape, dtype) and return them as jax arrays."""
    names = sorted(n for n in arrays if n.startswith(prefix + "_"))
    if len(names) != len(template_leaves):
        raise FlowFileError(f"{path!r} stores {len(names)} {what} arrays but the {what} has {len(template_leaves)} leaves")
    out = []
    for i, (name, ref) in enumerate(zip(names, template_leaves)):
        a = arrays[name]
        if tuple(a.shape) != tuple(np.shape(ref)) or a.dtype != np.asarray(ref).dtype:
            raise FlowFileError(f"{path!r}: {what} leaf {i} has shape {a.shape} and dtype {a.dtype}, "
                                f"expected {tuple(np.shape(ref))} and {np.asarray(ref).dtype}")
        out.append(jnp.asarray(a))
    return out


# -- public save / load -----------------------------------------------------------------------------

def save(flow, path, *, spec: dict | None = None, metadata: dict | None = None) -> str:
    """Save a flow's parameters and how to rebuild it; atomic, no pickle.

    ``spec`` defaults to the one recorded by :func:`build_flow` for a flow of this structure;
    without any spec the file can still be loaded with ``load(path, like=template_flow)``.
    Returns the path.
    """
    if not isinstance(flow, nf_ppl.Flow):
        raise TypeError(f"save expects an nf_ppl.Flow; got {type(flow).__name__}")
    if flow.context is not None:
        flow = flow.replace(context=None)
    spec = spec if spec is not None else spec_of(flow)
    if spec is not None:
        spec = _make_spec(spec["builder"], spec["seed"], spec["dim"], _from_json(spec.get("options") or {}))
    leaves, treedef = jax.tree_util.tree_flatten(flow)
    header = {"kind": "flow", "spec": spec, "treedef": str(treedef),
              "leaves": [[list(np.shape(l)), str(np.asarray(l).dtype)] for l in leaves],
              "metadata": _jsonable(metadata or {}, "metadata")}
    write_container(path, leaves_to_arrays(leaves), header)
    return os.fspath(path)


def load(path, *, like=None):
    """Load a flow saved by :func:`save`.

    The structure comes from ``like`` (a flow of the same structure) or else from the stored spec
    (rebuilt by calling the builder); the stored arrays must match it leaf by leaf.
    """
    path = os.fspath(path)
    header, arrays = read_container(path, kind="flow")
    if like is None:
        if header.get("spec") is None:
            raise FlowFileError(f"{path!r} has no builder spec; pass like=<a flow of the same structure>")
        try:
            like = build(header["spec"])
        except (ValueError, TypeError) as err:
            raise FlowFileError(f"{path!r}: cannot rebuild the flow from its spec {header['spec']!r}: {err}") from err
    leaves, treedef = jax.tree_util.tree_flatten(like.replace(context=None) if like.context is not None else like)
    if str(treedef) != header.get("treedef"):
        raise FlowFileError(f"{path!r} stores a flow of a different structure:\n  stored: {header.get('treedef')}\n  "
                            f"expected: {treedef}")
    new = arrays_to_leaves(arrays, leaves, "leaf", path)
    flow = jax.tree_util.tree_unflatten(treedef, new)
    if header.get("spec") is not None:
        _SPECS[treedef] = header["spec"]
    return flow
