"""What the open/load/attach path imports: no ``typing`` (~2.3 ms, and objects that slow the
interpreter's exit), no ``dataclasses``/``inspect``/``ast``/``dis``, no ``threading`` (~0.7 ms:
``_thread`` serves), and once CO-RE results are cached, not the relocation engine. Each check
runs in a fresh interpreter, since this one has imported everything by now."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import requires_root

ROOT = Path(__file__).resolve().parent.parent
BOOTSTRAP = ROOT / "fixtures" / "bootstrap.bpf.o"
HEAVY = ("typing", "dataclasses", "inspect", "ast", "dis", "threading")


def _imported_after(body: str) -> list[str]:
    """The HEAVY modules a fresh interpreter has imported after ``import corepy`` and ``body``."""
    code = f"import sys, corepy\n{body}\nprint(*sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()[-1].split()


def test_python_alone_imports_none_of_them() -> None:
    """The baseline: the interpreter's own start-up imports none of HEAVY (else the checks below
    would prove nothing)."""
    code = f"import sys; print(*sorted(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == []


def test_open_imports_no_typing() -> None:
    """Parsing an object (no kernel involved) imports none of HEAVY."""
    assert _imported_after(f"corepy.open({str(BOOTSTRAP)!r}).close()") == []


@requires_root
def test_open_load_attach_close_imports_no_typing() -> None:
    """The whole bench/load.py path, links and object closed at the end, imports none of HEAVY."""
    body = (f"with corepy.open({str(BOOTSTRAP)!r}) as obj:\n"
            "    obj.load()\n"
            "    obj.attach()")
    assert _imported_after(body) == []


def test_btf_type_alias_is_a_union_of_every_kind() -> None:
    """``corepy.btf.types.Type`` (an ``X | Y`` union, no typing) covers every kind's class."""
    from corepy.btf.types import KIND_CLASS, VOID, Type

    assert isinstance(VOID, Type)
    assert set(Type.__args__) == set(KIND_CLASS.values())
    assert not isinstance(1, Type)


@requires_root
def test_cached_load_imports_no_core_engine(tmp_path: Path) -> None:
    """Once bootstrap's CO-RE results are cached, a fresh load neither imports the relocation
    engine (candidate search, spec matching) nor opens the kernel BTF."""
    import os

    engine = ("corepy.btf.core.calc", "corepy.btf.core.target", "corepy.btf.core.access",
              "corepy.btf.core.match", "corepy.btf.core.compat")
    code = (f"import sys, corepy\nfrom corepy.btf import spec\n"
            f"with corepy.open({str(BOOTSTRAP)!r}) as obj:\n    obj.load()\n"
            f"print(spec._kernel is not None, *sorted(m for m in {engine!r} if m in sys.modules))\n")
    env = {**os.environ, "COREPY_CACHE_DIR": str(tmp_path)}
    env.pop("COREPY_BTF_CACHE", None)
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env)
            for _ in range(2)]
    assert all(r.returncode == 0 for r in runs), [r.stderr for r in runs]
    first, second = (r.stdout.splitlines()[-1].split() for r in runs)
    assert first == ["True", *sorted(engine)]  # (the first relocates: the check sees what it should miss)
    assert second == ["False"]


def test_lazy_package_exports() -> None:
    """Each package's exports resolve to their modules' objects, are listed by dir(), and an
    unknown name raises AttributeError naming the package."""
    import pytest

    import corepy
    import corepy.btf.core
    import corepy.object
    import corepy.skeleton

    for package in (corepy, corepy.object, corepy.skeleton, corepy.btf.core):
        names = package._LAZY
        assert set(names) <= set(dir(package))
        for name, module in names.items():
            assert getattr(package, name) is getattr(sys.modules[f"{package.__name__}.{module}"], name)
        with pytest.raises(AttributeError, match=f"module '{package.__name__}' has no attribute 'no_such_name'"):
            package.no_such_name  # noqa: B018
    # a name that is also its submodule's would turn into the module once that is imported
    from corepy._lazy import lazy_exports

    with pytest.raises(ValueError, match="shadowed"):
        lazy_exports("corepy.object", {"link": "link"})


@requires_root
def test_generated_skeleton_imports_none_of_them(tmp_path: Path) -> None:
    """A generated skeleton with record types (``--types event``): importing it, using a record,
    and open/load/attach/close import none of HEAVY (its records are corepy's light records)."""
    from corepy.cli import main as cli_main

    out = tmp_path / "bootstrap_skel.py"
    assert cli_main(["skeleton", str(BOOTSTRAP), "-o", str(out), "--types", "event", "--embed"]) == 0
    code = ("import sys\nsys.path.insert(0, sys.argv[1])\nimport bootstrap_skel as s\n"
            "assert s.Event.from_bytes(bytes(s.Event.SIZE)) == s.Event()\n"
            "with s.BootstrapSkeleton.open() as skel:\n    skel.load()\n    skel.attach()\n"
            f"print(*sorted(m for m in {HEAVY!r} if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].split() == []
