"""Safe storage of trained flows: a spec registry, ``save``/``load`` and atomic file writes.

File format (``.npz``, readable with ``np.load(path, allow_pickle=False)``; no pickle anywhere):

* ``__header__``: a uint8 array holding UTF-8 JSON with ``format``, ``version``, ``kind``
  (``"flow"`` or ``"checkpoint"``), the builder ``spec`` (or ``None``), the flow's pytree
  structure as a string, the shape and dtype of every leaf, free ``metadata``, the SHA-256 of
  the payload (``sha256``) and the SHA-256 of the header itself (``header_sha256``, over the
  canonical JSON of every other header field, ``sha256`` included);
* ``leaf_00000``, ``leaf_00001``, ...: the float arrays (payload).  The payload digest covers
  each array's name, dtype, shape and bytes;
* the zip archive's comment, ``nf-ppl-sha256:<hex>``: the SHA-256 of every byte of the file
  before it (zip metadata included).

So one chain of digests covers everything that is read back: a truncated, edited or foreign
file is refused with a :class:`FlowFileError` (a ``ValueError``) that says which part changed
(the arrays, or the header: metadata, spec, structure).  Files of format version 2 (written
before the header and whole-file digests) still load, with a :class:`LegacyFileWarning` that
their header is unverified.

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
import struct
import tempfile
import warnings
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import nf_ppl
from nf_ppl._checks import check_finite_params, is_int

from ._standardize import with_data_affine

FORMAT = "nf-ppl"
VERSION = 3  # 2: MAF layers compute the density direction as g(y) = y * scale + shift (softplus scale)
#              3: a digest of the header (header_sha256) and of the whole file (in the zip comment)
READABLE_VERSIONS = (2, 3)

__all__ = ["FlowFileError", "PrecisionCastWarning", "build", "build_flow", "builders", "load", "register_builder", "save",
           "spec_of", "atomic_write_bytes", "LegacyFileWarning"]


class FlowFileError(ValueError):
    """A flow or checkpoint file is truncated, tampered with, foreign, or does not fit the flow."""


class LegacyFileWarning(UserWarning):
    """A file of an older format version was read: what that version did not cover is unverified."""


# -- builder registry ----------------------------------------------------------------------------

_SPECS: dict[Any, dict] = {}

# one registry for the whole package (nf_ppl/registry.py): inference re-exports it
builders, get_builder, register_builder = nf_ppl.builders, nf_ppl.get_builder, nf_ppl.register_builder


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
    """Build the flow described by ``spec`` (``{"builder", "seed", "dim", "options"}``, and
    ``"standardized": true`` for a flow behind ``fit``'s standardising layer) and remember the spec."""
    if not isinstance(spec, dict) or not {"builder", "seed", "dim"} <= set(spec):
        raise ValueError(f"spec must be a dict with keys 'builder', 'seed', 'dim' (and 'options'); got {spec!r}")
    options = {k: _from_json(v) for k, v in dict(spec.get("options") or {}).items()}
    flow = build_flow(spec["builder"], spec["seed"], spec["dim"], **options)
    if not spec.get("standardized"):
        return flow
    return remember_standardized(flow, with_data_affine(flow))


def remember_standardized(flow, standardized_flow):
    """Record ``standardized_flow`` (``flow`` behind ``fit``'s standardising layer) under ``flow``'s spec, so
    ``save`` finds it and ``load`` rebuilds it; returns ``standardized_flow``."""
    spec = spec_of(flow)
    if spec is not None and standardized_flow is not flow:
        _SPECS[jax.tree_util.tree_structure(standardized_flow)] = {**spec, "standardized": True}
    return standardized_flow


def build_flow(name: str, seed: int, dim: int, **options):
    """``builders()[name](PRNGKey(seed), dim, **options)``; the spec is recorded so ``save`` can find it."""
    fn = get_builder(name)
    for arg, value in (("seed", seed), ("dim", dim)):
        if not is_int(value):
            raise TypeError(f"build_flow: {arg} must be an int; got {value!r}")
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

def check_folder(path, mkdir: bool = False, what: str = "path", probe: bool = True) -> str:
    """The folder that will hold ``path``; refuse (before any work) one that is missing or not writable.

    A missing folder is created only with ``mkdir=True`` (a typo in a folder name should not
    silently create a new tree).  With ``probe`` writability is tested by creating and removing
    a temporary file there, which also catches read-only file systems.
    """
    folder = os.path.dirname(os.path.abspath(os.fspath(path)))
    if not os.path.isdir(folder):
        if os.path.exists(folder):
            raise NotADirectoryError(f"{what} {os.fspath(path)!r}: {folder!r} is not a folder")
        if not mkdir:
            raise FileNotFoundError(f"{what} {os.fspath(path)!r}: the folder {folder!r} does not exist "
                                    "(pass mkdir=True to create it)")
        os.makedirs(folder, exist_ok=True)
    if not probe:
        return folder
    try:
        fd, test_file = tempfile.mkstemp(prefix=".nf-ppl-write-test-", dir=folder)
        os.close(fd)
        os.unlink(test_file)
    except OSError as err:
        raise PermissionError(f"{what} {os.fspath(path)!r}: cannot write into {folder!r} ({err.strerror or err})") from None
    return folder


def atomic_write_bytes(path, data: bytes, mkdir: bool = False) -> None:
    """Write ``data`` to ``path`` atomically: temp file in the same folder, fsync, ``os.replace``.

    The folder must exist unless ``mkdir=True``.  A crash at any point leaves either the old file
    or the new one, never a mix (the temporary file is removed on errors).
    """
    path = os.fspath(path)
    folder = check_folder(path, mkdir, probe=False)  # writing the temporary file is the probe
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


def _header_digest(header: dict) -> str:
    body = {k: v for k, v in header.items() if k != "header_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()


def write_container(path, arrays: dict[str, np.ndarray], header: dict, mkdir: bool = False) -> None:
    """Atomically write float/int arrays plus a JSON header (with both digests) as ``.npz``."""
    arrays = {k: np.asarray(v) for k, v in arrays.items()}
    for k, v in arrays.items():
        if v.dtype == object:
            raise TypeError(f"array {k!r} has dtype object; only numeric arrays can be saved")
    header = dict(header, format=FORMAT, version=VERSION, sha256=_digest(arrays))
    header["header_sha256"] = _header_digest(header)
    buf = io.BytesIO()
    np.savez(buf, __header__=np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8), **arrays)
    atomic_write_bytes(path, _seal(buf.getvalue()), mkdir=mkdir)


_TRAILER_TAG = b"nf-ppl-sha256:"
_TRAILER_LEN = len(_TRAILER_TAG) + 64


def _seal(data: bytes) -> bytes:
    """Put the SHA-256 of every byte before it into the zip archive's comment (the file's last bytes).

    ``np.savez`` ends the archive with an end-of-central-directory record whose last two bytes
    give the comment length (0).  The comment becomes ``nf-ppl-sha256:<hex>``, the digest of the
    whole file up to the comment (the new comment length included), so any changed byte
    anywhere is detected; zip readers, ``np.load`` included, ignore the comment.
    """
    if data[-2:] != b"\0\0":
        raise ValueError("internal: the archive already has a comment")
    body = data[:-2] + struct.pack("<H", _TRAILER_LEN)
    return body + _TRAILER_TAG + hashlib.sha256(body).hexdigest().encode("ascii")


def _sealed_ok(raw: bytes) -> bool:
    tail = raw[-_TRAILER_LEN:]
    return tail.startswith(_TRAILER_TAG) and hashlib.sha256(raw[:-_TRAILER_LEN]).hexdigest().encode("ascii") == \
        tail[len(_TRAILER_TAG):]


def read_container(path, kind: str | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and verify a file written by :func:`write_container`; raise :class:`FlowFileError` if it is bad.

    Checks, in order, so the error says what changed: the zip archive can be read; the header is
    an nf-ppl header of a readable version; the header's own digest; the arrays' digest; and the
    digest of the whole file (anything else, e.g. zip metadata).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        with np.load(io.BytesIO(raw), allow_pickle=False) as npz:
            names = list(npz.files)
            if "__header__" not in names:
                raise FlowFileError(f"{path!r} is not an nf-ppl file (no __header__ entry)")
            header = json.loads(bytes(npz["__header__"]).decode("utf-8"))
            arrays = {n: np.asarray(npz[n]) for n in names if n != "__header__"}
    except FlowFileError:
        raise
    except Exception as err:  # zip, zlib, npy-format or JSON errors: all mean a damaged file
        raise FlowFileError(f"{path!r} is truncated, corrupted or not an nf-ppl .npz file ({type(err).__name__}: "
                            f"{err})") from err
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise FlowFileError(f"{path!r} is not an nf-ppl file (header format {header.get('format') if isinstance(header, dict) else header!r})")
    version = header.get("version")
    if version not in READABLE_VERSIONS:
        raise FlowFileError(f"{path!r} has format version {version!r}; this nf-ppl reads versions "
                            f"{', '.join(map(str, READABLE_VERSIONS))}")
    if version >= 3 and _header_digest(header) != header.get("header_sha256"):
        raise FlowFileError(f"{path!r}: SHA-256 of the header (metadata, spec, structure) does not match its "
                            "header_sha256; the header was edited or damaged after the file was written")
    if _digest(arrays) != header.get("sha256"):
        raise FlowFileError(f"{path!r}: SHA-256 of the stored arrays does not match the header; "
                            "the arrays were modified or damaged after the file was written")
    if version >= 3 and not _sealed_ok(raw):
        raise FlowFileError(f"{path!r}: SHA-256 of the whole file does not match the one sealed into it; the zip "
                            "container was modified or damaged after the file was written")
    if kind is not None and header.get("kind") != kind:
        raise FlowFileError(f"{path!r} holds a {header.get('kind')!r}, expected a {kind!r}")
    if version < 3:
        warnings.warn(f"{path!r} has format version {version} (written before header and whole-file digests): its "
                      "arrays are verified, its header (metadata, spec) is not; save it again to upgrade it",
                      LegacyFileWarning, stacklevel=3)
    return header, arrays


def leaves_to_arrays(leaves, prefix: str = "leaf") -> dict[str, np.ndarray]:
    return {f"{prefix}_{i:05d}": np.asarray(leaf) for i, leaf in enumerate(leaves)}


def arrays_to_leaves(arrays: dict, template_leaves, prefix: str, path: str, what: str = "flow",
                     cast_floats: bool = False):
    """Check stored arrays against a template's leaves (count, shape, dtype) and return them as jax arrays.

    With ``cast_floats`` a floating-point array stored at another precision than the template's
    (a float32 file read by a float64 program, or the reverse) is cast to the template's dtype
    and a ``PrecisionCastWarning`` says so once; otherwise any dtype difference is an error.
    """
    names = sorted(n for n in arrays if n.startswith(prefix + "_"))
    if len(names) != len(template_leaves):
        raise FlowFileError(f"{path!r} stores {len(names)} {what} arrays but the {what} has {len(template_leaves)} leaves")
    out, casts = [], set()
    for i, (name, ref) in enumerate(zip(names, template_leaves)):
        a, ref_dtype = arrays[name], np.asarray(ref).dtype
        if tuple(a.shape) == tuple(np.shape(ref)) and a.dtype != ref_dtype and cast_floats \
                and np.issubdtype(a.dtype, np.floating) and np.issubdtype(ref_dtype, np.floating):
            casts.add((a.dtype.name, ref_dtype.name))
            a = a.astype(ref_dtype)
        if tuple(a.shape) != tuple(np.shape(ref)) or a.dtype != ref_dtype:
            raise FlowFileError(f"{path!r}: {what} leaf {i} has shape {a.shape} and dtype {a.dtype}, "
                                f"expected {tuple(np.shape(ref))} and {ref_dtype}")
        out.append(jnp.asarray(a))
    for stored, running in sorted(casts):
        warnings.warn(f"{path!r} was saved at {stored}; its parameters were cast to {running}, the precision "
                      "of this program (jax_enable_x64 decides it)",
                      PrecisionCastWarning, stacklevel=3)
    return out


class PrecisionCastWarning(UserWarning):
    """A loaded flow's parameters were cast to the running program's floating-point precision."""


# -- public save / load -----------------------------------------------------------------------------

def save(flow, path, *, spec: dict | None = None, metadata: dict | None = None, mkdir: bool = False) -> str:
    """Save a flow's parameters and how to rebuild it; atomic, no pickle.

    ``spec`` defaults to the one recorded by :func:`build_flow` for a flow of this structure;
    without any spec the file can still be loaded with ``load(path, like=template_flow)``.
    The folder must exist unless ``mkdir=True``.  A flow whose parameters hold NaN or inf is
    refused (the error names the layer and parameter).  Returns the path.
    """
    if not isinstance(flow, nf_ppl.Flow):
        raise TypeError(f"save expects an nf_ppl.Flow; got {type(flow).__name__}")
    check_finite_params(flow, "flow to save")
    flow = _unbound(flow)
    spec = spec if spec is not None else spec_of(flow)
    if spec is not None:
        standardized = bool(spec.get("standardized"))
        spec = _make_spec(spec["builder"], spec["seed"], spec["dim"], _from_json(spec.get("options") or {}))
        spec.update({"standardized": True} if standardized else {})
    leaves, treedef = jax.tree_util.tree_flatten(flow)
    header = {"kind": "flow", "spec": spec, "treedef": str(treedef),
              "leaves": [[list(np.shape(l)), str(np.asarray(l).dtype)] for l in leaves],
              "metadata": _jsonable(metadata or {}, "metadata")}
    write_container(path, leaves_to_arrays(leaves), header, mkdir=mkdir)
    return os.fspath(path)


# Builder defaults that changed, with their earlier values: a file whose spec did not name the option
# was written with the earlier default, and is rebuilt with it when today's default gives another structure.
# ``{"permutation": "random"}``: "auto" drew its permutations above two dimensions from the builder's key
# before it drew them from one fixed stream (2026-12-05).  iaf's layers were written from the base side
# and reversed between layers until its density defaults (2026-12-05).  bnaf's layers had no linear skip
# term, slope 0.5 and one layer (2026-12-05).  realnvp's, nsf's and spline_coupling's conditioners read their
# inputs unbounded until ``conditioner_bound=3.0`` (2026-12-06).


def _unbounded(*earlier):
    """Earlier option sets of a builder whose conditioners read their inputs unbounded, newest first."""
    return tuple({"conditioner_bound": None, **options} for options in earlier)


LEGACY_DEFAULTS = {  # earlier builder defaults, newest first: a file saved under them still loads
    "bnaf": ({"num_layers": 1, "slope": 0.5, "skip": 0.0},),
    "iaf": ({"affine_from": "base", "permutation": "reverse"},),
    "maf": ({"permutation": "random"}, {"permutation": "reverse"}, {"num_layers": 5, "permutation": "reverse"}),
    "realnvp": _unbounded({}, {"permutation": "random"},
                          {"affine_from": "base", "log_scale_bound": 3.0, "permutation": "random"},
                          {"affine_from": "base", "log_scale_bound": 3.0},
                          {"affine_from": "base", "log_scale_bound": 3.0, "num_layers": 6, "permutation": "reverse"},
                          {"affine_from": "base", "log_scale_bound": 5.0, "num_layers": 6, "permutation": "reverse"}),
    "spline_coupling": _unbounded({}, {"permutation": "random"}, {"permutation": "reverse"}),
    "nsf": _unbounded({}, {"permutation": "random"}, {"permutation": "reverse"}),
}


def _unbound(flow):
    """The flow without a bound context (files store the parameters only)."""
    return flow.replace(context=None) if flow.context is not None else flow


def _rebuild_with_legacy_defaults(spec, stored_treedef):
    """The flow of ``spec`` built with an earlier set of builder defaults whose structure matches the file's."""
    options = dict(spec.get("options") or {})
    for old in LEGACY_DEFAULTS.get(spec.get("builder"), ()):
        trial = dict(spec, options={**old, **options})
        try:
            flow = build(trial)
        except (ValueError, TypeError):
            continue
        if str(jax.tree_util.tree_structure(_unbound(flow))) == stored_treedef:
            return flow
    return None


def load(path, *, like=None, return_metadata: bool = False):
    """Load a flow saved by :func:`save`.

    The structure comes from ``like`` (a flow of the same structure) or else from the stored spec
    (rebuilt by calling the builder); the stored arrays must match it leaf by leaf.  A flow saved
    at another floating-point precision than the running program's (float32 vs float64, see
    ``jax_enable_x64``) is cast to the running precision with a :class:`PrecisionCastWarning`.
    ``return_metadata=True`` returns ``(flow, metadata)``, the ``metadata`` dict given to :func:`save`
    (the file is read once).
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
    leaves, treedef = jax.tree_util.tree_flatten(_unbound(like))
    if str(treedef) != header.get("treedef") and header.get("spec") is not None:
        legacy = _rebuild_with_legacy_defaults(header["spec"], header.get("treedef"))
        if legacy is not None:  # re-saving it then names the earlier default in its spec
            like, header["spec"] = legacy, spec_of(legacy)
            leaves, treedef = jax.tree_util.tree_flatten(_unbound(like))
    if str(treedef) != header.get("treedef"):
        raise FlowFileError(f"{path!r} stores a flow of a different structure:\n  stored: {header.get('treedef')}\n  "
                            f"expected: {treedef}")
    new = arrays_to_leaves(arrays, leaves, "leaf", path, cast_floats=True)
    flow = jax.tree_util.tree_unflatten(treedef, new)
    check_finite_params(flow, f"flow in {path!r}")
    if header.get("spec") is not None:
        _SPECS[treedef] = header["spec"]
    return (flow, dict(header.get("metadata") or {})) if return_metadata else flow
