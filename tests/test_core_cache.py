"""The on-disk caches of kernel facts: the running kernel BTF's digest remembered per boot
(corepy.cache) and CO-RE results against it (corepy.object.core_cache)."""

from __future__ import annotations

import marshal
import os
from pathlib import Path

import pytest

import corepy
from corepy import cache
from corepy.btf import spec as btf_spec
from corepy.btf.core import Target
from corepy.btf.core.result import CoreResult
from corepy.btf.spec import BTF
from corepy.object import ObjectSpec
from corepy.object import core_cache
from corepy.object.core import relocate_core

from conftest import fixture_obj, requires_root

pytestmark = pytest.mark.skipif(not os.path.exists(cache.KERNEL_BTF_PATH), reason="no /sys/kernel/btf/vmlinux")


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty private cache directory, caches on, and no kernel BTF opened yet in this process."""
    monkeypatch.setenv("COREPY_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("COREPY_BTF_CACHE", raising=False)
    monkeypatch.setattr(btf_spec, "_kernel", None)
    yield tmp_path
    if btf_spec._kernel is not None:
        btf_spec._kernel.close()


def _fail(what: str):
    def fail(*args, **kwargs):  # noqa: ANN002, ANN003
        raise AssertionError(f"{what} although the cache should have answered")
    return fail


def test_kernel_btf_digest_is_remembered_for_this_boot(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cache.kernel_btf_digest() is None
    first = BTF.kernel()
    expected = cache.blob_digest(open(cache.KERNEL_BTF_PATH, "rb").read())
    assert cache.kernel_btf_digest() == expected
    assert (cache_dir / "kernel-btf.key").stat().st_mode & 0o777 == 0o600
    ids = first.ids_by_name("task_struct")
    size = first[ids[0]].size
    first.close()

    monkeypatch.setattr(btf_spec, "_kernel", None)
    monkeypatch.setattr(btf_spec, "blob_digest", _fail("checksummed the kernel BTF"))
    second = BTF.kernel()
    assert second is not first and second.ids_by_name("task_struct") == ids
    assert second[ids[0]].size == size


@pytest.mark.parametrize("change", ["none", "boot id", "file size", "version", "garbage", "writable by others"])
def test_kernel_btf_digest_of_another_boot_or_file_is_ignored(cache_dir: Path, change: str) -> None:
    BTF.kernel().close()
    path = cache_dir / "kernel-btf.key"
    magic = cache._KERNEL_KEY_MAGIC
    version, identity, digest = marshal.loads(cache.read_entry("kernel-btf.key", magic))
    boot_id, dev, ino, size, mtime = identity
    changed = {"none": (version, identity), "boot id": (version, ("0" * 36, dev, ino, size, mtime)),
               "file size": (version, (boot_id, dev, ino, size + 1, mtime)), "version": (version + 1, identity)}
    if change in changed:
        cache.write_entry("kernel-btf.key", magic, marshal.dumps((*changed[change], digest)))
    elif change == "garbage":
        path.write_bytes(path.read_bytes()[:-1] + b"\xff")
    else:
        path.chmod(0o666)
    assert cache.kernel_btf_digest() == (digest if change == "none" else None)


def test_core_results_come_from_the_cache(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second relocation of an object against this kernel neither opens nor searches the kernel
    BTF, and gives the same records (results, candidates tried, places)."""
    spec = ObjectSpec.from_file(fixture_obj("bootstrap"))
    fresh = core_cache.relocate_running_kernel(spec)
    assert fresh and len(list(cache_dir.glob("core-*.rel"))) == 1
    assert fresh == relocate_core(spec, Target.running_kernel())
    assert any(r.result.candidates for r in fresh)

    monkeypatch.setattr(Target, "running_kernel", _fail("opened the kernel BTF"))
    monkeypatch.setattr(btf_spec.BTF, "kernel", _fail("opened the kernel BTF"))
    again = ObjectSpec.from_file(fixture_obj("bootstrap"))
    assert core_cache.relocate_running_kernel(again) == fresh


@pytest.mark.parametrize("change", ["kernel", "engine", "autoload", "corrupt", "other object"])
def test_core_cache_misses_when_an_input_changed(cache_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                 change: str) -> None:
    spec = ObjectSpec.from_file(fixture_obj("bootstrap"))
    core_cache.relocate_running_kernel(spec)
    (entry,) = cache_dir.glob("core-*.rel")
    computed = []
    real = Target.running_kernel.__func__

    def counting(cls):  # noqa: ANN001
        computed.append(1)
        return real(cls)

    monkeypatch.setattr(Target, "running_kernel", classmethod(counting))
    other = ObjectSpec.from_file(fixture_obj("bootstrap"))
    if change == "kernel":
        monkeypatch.setattr(core_cache, "kernel_btf_digest", lambda: b"\x01" * 8)
    elif change == "engine":
        monkeypatch.setattr(core_cache, "__version__", "0.0.0-other")
    elif change == "autoload":
        other.programs["handle_exit"].autoload = False
    elif change == "corrupt":
        data = bytearray(entry.read_bytes())
        data[-3] ^= 0xFF
        entry.write_bytes(bytes(data))
    else:
        other = ObjectSpec.from_file(fixture_obj("minimal"))
    records = core_cache.relocate_running_kernel(other)
    assert computed == [1]
    assert records == relocate_core(other, real(Target))
    # one entry per object: another kernel or engine replaces it, another object adds one
    entries = len(list(cache_dir.glob("core-*.rel")))
    assert entries == (2 if change in ("autoload", "other object") else 1)


def test_core_cache_is_off_with_cache_off_and_after_module_search(cache_dir: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """COREPY_BTF_CACHE=0 stores nothing; nor does a relocation that searched module BTFs
    (core_zoo asks for types vmlinux lacks): modules come and go within a boot."""
    monkeypatch.setenv("COREPY_BTF_CACHE", "0")
    assert core_cache.relocate_running_kernel(ObjectSpec.from_file(fixture_obj("bootstrap")))
    assert not list(cache_dir.iterdir())
    monkeypatch.delenv("COREPY_BTF_CACHE")
    zoo = ObjectSpec.from_file(fixture_obj("core_zoo"))
    target = Target.running_kernel()
    expected = relocate_core(zoo, target)
    assert target.searched_modules
    assert core_cache.relocate_running_kernel(zoo) == expected
    assert not list(cache_dir.glob("core-*.rel"))


def test_core_results_round_trip_as_builtins() -> None:
    """Every result of the richest fixture (poisoned ones, rejected candidates) survives
    as_tuple -> marshal -> from_tuple unchanged."""
    zoo = ObjectSpec.from_file(fixture_obj("core_zoo"))
    records = relocate_core(zoo, Target.running_kernel())
    assert any(r.result.poisoned for r in records) and any(
        not c.matched for r in records for c in r.result.candidates)
    for r in records:
        assert CoreResult.from_tuple(marshal.loads(marshal.dumps(r.result.as_tuple()))) == r.result


@requires_root
def test_load_from_cached_core_results(cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second load of bootstrap takes its CO-RE results from the cache; the kernel accepts the
    programs and its translated instructions equal the first load's (map ids normalised)."""
    from corepy.syscalls.objects import prog_info

    from parity_helpers import normalise

    def xlated(obj: corepy.Object) -> dict[str, list[tuple]]:
        names = {m.id: name for name, m in obj.maps.items()}
        return {name: normalise(prog_info(p).xlated, names) for name, p in obj.programs.items()}

    with corepy.open(fixture_obj("bootstrap"), pin_root=None) as obj:
        obj.load()
        first, records = xlated(obj), obj.core_records
    monkeypatch.setattr(Target, "running_kernel", _fail("relocated against the kernel BTF"))
    with corepy.open(fixture_obj("bootstrap"), pin_root=None) as obj:
        obj.load()
        assert obj.core_records == records
        assert xlated(obj) == first


def test_cache_command_lists_and_clears_only_corepy_files(cache_dir: Path, capsys: pytest.CaptureFixture) -> None:
    from corepy.cli import main

    BTF.kernel()
    core_cache.relocate_running_kernel(ObjectSpec.from_file(fixture_obj("bootstrap")))
    (cache_dir / "notes.txt").write_text("not corepy's")
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert f"{cache_dir}: 3 file(s)" in out
    for kind in ("kernel BTF type offsets", "CO-RE results of one object", "kernel BTF digest of this boot"):
        assert kind in out
    assert "notes.txt" not in out
    assert main(["cache", "--clear"]) == 0
    assert "removed 3 file(s)" in capsys.readouterr().out
    assert [p.name for p in cache_dir.iterdir()] == ["notes.txt"]
    assert cache.kernel_btf_digest() is None
