"""Object.load sanitizes the object's BTF exactly when a probed BTF kind is missing, and the
sanitized BTF keeps its string section, so the programs' func/line info still point at the right
names (the kernel refuses the programs otherwise)."""

from __future__ import annotations

import pytest

import corepy
from conftest import fixture_obj, requires_root
from corepy.btf import sanitize as sanitize_module
from corepy.syscalls import features


@requires_root
@pytest.mark.filterwarnings("ignore:map .* refused its BTF key/value types:RuntimeWarning")  # (DATASEC -> STRUCT)
# (not has_func: its FUNC_PROTO -> ENUM rewrite keeps unnamed params as enum values, which only
# the pre-5.0 kernels that need it accept; this kernel checks enum value names)
@pytest.mark.parametrize("missing", [None, "has_func_global", "has_datasec", "has_float", "has_decl_tag",
                                     "has_type_tag", "has_enum64", "has_qmark_datasec"])
def test_load_sanitizes_only_for_missing_kinds(monkeypatch: pytest.MonkeyPatch, missing: str | None) -> None:
    real = features.btf_features()
    assert all(real.values())  # this kernel has every kind: the missing one is simulated
    monkeypatch.setattr(features, "btf_features", lambda: {**real, **({missing: False} if missing else {})})
    calls = []
    real_sanitize = sanitize_module.sanitize
    monkeypatch.setattr(sanitize_module, "sanitize", lambda types, feats: calls.append(feats) or real_sanitize(types, feats))
    with corepy.open(fixture_obj("bootstrap"), pin_root=None) as obj:
        obj.load()
        assert obj.btf_fd is not None
    assert len(calls) == (missing is not None)
    if missing:
        assert calls[0][missing] is False
