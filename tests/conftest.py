"""Test-suite settings.

The tests run tiny computations whose cost is almost all XLA compilation, so compilation is made
cheaper here: most XLA optimisation passes are switched off (about a third less CPU time) and,
where the running jaxlib knows the flag, the CPU backend uses its classic loop emitters instead of
the newer fusion emitters (``--xla_cpu_use_fusion_emitters=false``: about 40% less backend compile
time on the layer harness).  Results are the same computations, less optimised.

Newer jaxlib releases (0.12 and later) abort the whole process on an ``XLA_FLAGS`` entry they do
not know, before Python can report anything.  So each speed-only flag is first tried in a short
subprocess and kept only where that jaxlib starts with it, and the ``XLA_FLAGS`` the run ends up
with (the user's own plus the kept ones) is tried once more: if JAX cannot start with it, the run
stops at once with the XLA error instead of dying silently.  The verdict travels to pytest-xdist
workers and to subprocesses started by tests in the environment.  Library code and benchmarks
never change these settings.
"""

import gc
import os
import subprocess
import sys

import jax
import pytest

from jax_compat import enable_x64

SPEED_ONLY_XLA_FLAGS = ("--xla_cpu_use_fusion_emitters=false",)
_CHECKED = "NF_PPL_TEST_XLA_FLAGS_CHECKED"
_PROBE = "import jax, jax.numpy as jnp; jax.block_until_ready(jnp.ones(2) + 1)"


def _jax_starts_with(xla_flags: str) -> tuple[bool, str]:
    """Whether a fresh Python can start JAX's CPU backend with ``XLA_FLAGS=xla_flags`` (and its error)."""
    env = dict(os.environ, XLA_FLAGS=xla_flags, JAX_PLATFORMS=os.environ.get("JAX_PLATFORMS", "cpu"))
    try:
        run = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return False, "JAX did not start within 120 s"
    return run.returncode == 0, (run.stderr or run.stdout).strip()[-2000:]


def _settle_xla_flags() -> None:
    """Add the speed-only flags the running jaxlib accepts; stop loudly if JAX cannot start at all."""
    if os.environ.get(_CHECKED) == os.environ.get("XLA_FLAGS", ""):
        return  # decided by the pytest process that started this one (an xdist worker)
    flags = os.environ.get("XLA_FLAGS", "").split()
    for flag in SPEED_ONLY_XLA_FLAGS:
        if flag not in flags and _jax_starts_with(" ".join(flags + [flag]))[0]:
            flags.append(flag)
    ok, err = _jax_starts_with(" ".join(flags))
    if not ok:
        pytest.exit(f"JAX cannot start with XLA_FLAGS={' '.join(flags)!r} (an unknown or invalid flag?); "
                    f"fix XLA_FLAGS and run again. JAX said:\n{err}", returncode=4)
    os.environ["XLA_FLAGS"] = " ".join(flags)
    os.environ[_CHECKED] = os.environ["XLA_FLAGS"]


def pytest_configure(config):
    _settle_xla_flags()  # before any test makes JAX create its CPU backend (importing jax does not)
    jax.config.update("jax_disable_most_optimizations", True)
    if getattr(config.option, "dist", None) == "load":  # pytest -n N: keep each layer's harness tests together
        config.option.dist = "loadgroup"
    if getattr(config, "workerinput", {}).get("loadgroup"):  # an xdist worker of such a run (see below)
        config.option.loadgroup = True


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node):
    """Tell each pytest-xdist worker that the run schedules by group.

    A worker parses the command line again, where ``-n N`` alone does not ask for ``loadgroup``, so the
    switch above never reached it: it added no ``@group`` suffix to its test ids and the scheduler
    spread one layer's tests over both workers, each compiling that layer's programs.
    """
    node.workerinput["loadgroup"] = node.config.getvalue("dist") == "loadgroup"


GROUPED_BY_CASE = ("test_layer_properties.py", "test_flow_properties.py", "test_glow.py", "test_transformers.py")


MAPPINGS_BEFORE_CLEARING = 20_000  # a third of Linux's default vm.max_map_count (65,530)


def _memory_mappings() -> int:
    """Number of memory mappings of this process (Linux; 0 where /proc is absent)."""
    try:
        with open("/proc/self/maps", "rb") as maps:
            return maps.read().count(b"\n")
    except OSError:
        return 0


def pytest_runtest_teardown(item, nextitem):
    """Drop JAX's compiled programs once the process holds many memory mappings.

    Every cached XLA executable keeps about six mappings (code, constants, data), and the jit
    caches of long-lived functions keep every shape and configuration a test ever compiled: one
    worker of the full suite reached 31,000 mappings in three minutes of the layer harness, and at
    the kernel's limit (``vm.max_map_count``, 65,530 by default) the next compilation cannot map
    its code and the worker dies with a segmentation fault inside XLA (seen twice late in
    ``pytest -n 2`` runs).  Clearing the caches unmaps them (600 cached programs: 4,085 mappings
    before, 537 after) and frees their memory; later tests just compile again.
    """
    if _memory_mappings() > MAPPINGS_BEFORE_CLEARING:
        jax.clear_caches()
        gc.collect()


SMOKE_FILES = ("test_demo.py", "test_examples.py", "test_psis.py")
SMOKE_HARNESS_LAYERS = ("AffineCoupling", "MAF-layer")  # the property harness runs on these in the smoke subset


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """Mark the smoke subset (``pytest -m smoke``) that CI runs on the oldest supported versions, and
    send the property-harness tests of one layer or flow to one pytest-xdist worker.

    A layer's tests share the small programs that build it (one per parameter shape, compiled by each
    process that builds it); spread over two workers, both compiled them.
    """
    for item in items:
        file = item.path.name
        case = getattr(item, "callspec", None) and item.callspec.params.get("name")
        if file in GROUPED_BY_CASE and case:
            item.add_marker(pytest.mark.xdist_group(str(case)))  # one group across files: same builds
        harness_layer = file == "test_layer_properties.py" and case in SMOKE_HARNESS_LAYERS
        if file in SMOKE_FILES or harness_layer:
            item.add_marker(pytest.mark.smoke)
    if config.getoption("loadgroup", False):
        for item in items:
            _add_group_to_id(item)


def _add_group_to_id(item):
    """Give a test marked ``xdist_group(g)`` the id ``...@g``, by which pytest-xdist's scheduler groups.

    pytest-xdist (3.8) appends the suffix to ``item._nodeid``, but pytest 9.2 reads ids from the
    structured ``item._id``: there the suffix never reached the scheduler, which spread each layer's
    tests over both workers.  On older pytest releases (no ``_pytest.nodeid``) xdist's own suffix works.
    """
    try:
        from _pytest.nodeid import NodeId
    except ImportError:
        return
    groups = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                     for m in item.iter_markers("xdist_group")})
    old = getattr(item, "_id", None)
    if groups and isinstance(old, NodeId) and old.names:  # "test_f[params]@group" as the last name, no params
        last = old.rest.split("::")[-1] + "@" + "_".join(groups)
        item._id = NodeId(path=old.path, names=(*old.names[:-1], last))


@pytest.fixture
def x64():
    """Enable float64 for one test (tight tolerances), restoring the previous setting after."""
    with enable_x64(True):
        yield
