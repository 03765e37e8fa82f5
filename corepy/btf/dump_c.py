"""BTF to compilable C (``vmlinux.h``), as ``bpftool btf dump ... format c``.

This follows libbpf's ``btf_dump.c``: types are topologically ordered with
"strong" (by value: must be fully defined first) and "weak" (through a
pointer: a forward declaration is enough) dependencies; anonymous
structs/unions/enums are written inline; struct layouts are reproduced exactly
(``__attribute__((packed))`` when natural alignment cannot explain the offsets,
``long: N`` style padding for holes); duplicate names get ``___N`` suffixes.
"""

from __future__ import annotations

from ..errors import BTFError
from .types import (
    Array, Const, Datasec, DeclTag, Enum, Enum64, Float, Func, FuncProto, Fwd, Int, Ptr,
    Restrict, Struct, Type, Typedef, TypeTag, Union, Var, Volatile,
)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TextIO

    from .spec import BTF

__all__ = ["CDumper", "dump_c", "write_c"]

HEADER = """\
#ifndef __VMLINUX_H__
#define __VMLINUX_H__

#ifndef BPF_NO_PRESERVE_ACCESS_INDEX
#pragma clang attribute push (__attribute__((preserve_access_index)), apply_to = record)
#endif

"""
FOOTER = """\
#ifndef BPF_NO_PRESERVE_ACCESS_INDEX
#pragma clang attribute pop
#endif

#endif /* __VMLINUX_H__ */
"""

# order / emit states
_NOT, _DOING, _DONE = 0, 1, 2
_MODS = (Volatile, Const, Restrict, TypeTag)
_COMPOSITE = (Struct, Union)
# GCC's internal Arm SIMD types, aliased to standard types (libbpf missing_base_types)
_MISSING_BASE_TYPES = {
    "__Poly8_t": "unsigned char", "__Poly16_t": "unsigned short",
    "__Poly64_t": "unsigned long long", "__Poly128_t": "unsigned __int128",
}
_TABS = "\t" * 13


def _pfx(lvl: int) -> str:
    return _TABS[: min(lvl, 13)]


def _roundup(x: int, y: int) -> int:
    return -(-x // y) * y


class CDumper:
    """Writes C declarations of BTF types; each type at most once across calls."""

    def __init__(self, btf: BTF) -> None:
        self.btf = btf
        self.types: list[Type] = [btf[i] for i in range(len(btf))]
        n = len(self.types)
        self.ptr_sz: int = btf.pointer_size
        self.order_state = bytearray(n)
        self.emit_state = bytearray(n)
        self.fwd_emitted = bytearray(n)
        self.referenced = bytearray(n)
        self.order_state[0] = _DONE
        self.emit_state[0] = _DONE
        self.names: dict[int, str] = {}  # resolved (deduplicated) names
        self.type_names: dict[str, int] = {}  # struct/union/enum tags -> occurrences
        self.ident_names: dict[str, int] = {}  # typedefs and enumerators -> occurrences
        self._align: dict[int, int] = {}
        self._size: dict[int, int] = {}
        self.out: list[str] = []
        self._queue: list[int] = []
        for t in self.types[1:]:
            self._mark_referenced(t)

    # --- public ------------------------------------------------------------
    def dump_type(self, type_id: int) -> None:
        """Append the definitions ``type_id`` needs, then its own, to :attr:`out`."""
        if not 0 <= type_id < len(self.types):
            raise BTFError(f"type id {type_id} out of range (0..{len(self.types) - 1})",
                           source=getattr(self.btf, "source", None))
        self._queue = []
        try:
            self._order(type_id, False)
            for qid in self._queue:
                self._emit_type(qid, 0)
        except RecursionError:
            raise BTFError(f"type [{type_id}] nests too deeply to write as C",
                           source=getattr(self.btf, "source", None)) from None

    def type_decl(self, type_id: int, name: str = "", lvl: int = 0) -> str:
        """C declaration of ``name`` with type ``type_id`` (``int (*name)(void)``...)."""
        start = len(self.out)
        self._emit_decl(type_id, name, lvl)
        text = "".join(self.out[start:])
        del self.out[start:]
        return text

    def take(self) -> str:
        """Everything emitted so far, clearing the buffer."""
        text = "".join(self.out)
        self.out.clear()
        return text

    # --- layout helpers ---------------------------------------------------------
    # libbpf's btf_dump tolerates sizeless/alignless types (0 / -1) where BTF.alignment and
    # BTF.resolve_size raise, and the dump asks for the same types thousands of times: memoized.
    def align_of(self, type_id: int) -> int:
        """libbpf btf__align_of: 1 for packed structs, 0 if the type has no alignment."""
        cached = self._align.get(type_id)
        if cached is not None:
            return cached
        t = self.types[type_id]
        if isinstance(t, (Int, Enum, Enum64, Float)):
            align = min(self.ptr_sz, t.size)
        elif isinstance(t, Ptr):
            align = self.ptr_sz
        elif isinstance(t, (Typedef, *_MODS)):
            align = self.align_of(t.type_id)
        elif isinstance(t, Array):
            align = self.align_of(t.type_id)
        elif isinstance(t, _COMPOSITE):
            align = 1
            for m in t.members:
                a = self.align_of(m.type_id)
                if a <= 0:
                    align = 0
                    break
                if m.bitfield_size == 0 and m.bit_offset % (8 * a):
                    align = 1  # misaligned member: the struct is packed
                    break
                align = max(align, a)
            else:
                if t.size % align:
                    align = 1
        else:
            align = 0
        self._align[type_id] = align
        return align

    def resolve_size(self, type_id: int) -> int:
        """Size in bytes, or -1 if the type has none (void, FWD, FUNC_PROTO)."""
        cached = self._size.get(type_id)
        if cached is not None:
            return cached
        nelems, size, tid = 1, -1, type_id
        for _ in range(32):
            t = self.types[tid]
            if tid == 0:
                break
            if isinstance(t, (Int, Struct, Union, Enum, Enum64, Datasec, Float)):
                size = t.size
                break
            if isinstance(t, Ptr):
                size = self.ptr_sz
                break
            if isinstance(t, (Typedef, Var, DeclTag, *_MODS)):
                tid = t.type_id
            elif isinstance(t, Array):
                nelems *= t.nelems
                tid = t.type_id
            else:
                break
        result = -1 if size < 0 else nelems * size
        self._size[type_id] = result
        return result

    # --- ordering ------------------------------------------------------------
    def _mark_referenced(self, t: Type) -> None:
        ref = self.referenced
        if isinstance(t, (Volatile, Const, Restrict, Ptr, Typedef, Func, Var, DeclTag, TypeTag)):
            ref[t.type_id] = 1
        elif isinstance(t, Array):
            ref[t.index_type_id] = 1
            ref[t.type_id] = 1
        elif isinstance(t, _COMPOSITE):
            for m in t.members:
                ref[m.type_id] = 1
        elif isinstance(t, FuncProto):
            for p in t.params:
                ref[p.type_id] = 1
        elif isinstance(t, Datasec):
            for v in t.vars:
                ref[v.type_id] = 1

    def _order(self, type_id: int, through_ptr: bool) -> int:
        """libbpf btf_dump_order_type: 1 if a strong link, 0 if weak; queues named definitions."""
        state = self.order_state
        if state[type_id] == _DONE:
            return 1
        t = self.types[type_id]
        if state[type_id] == _DOING:
            if isinstance(t, _COMPOSITE) and through_ptr and t.name:
                return 0
            raise BTFError(f"unsatisfiable type cycle through type [{type_id}] {t.name!r}",
                           source=getattr(self.btf, "source", None))
        if isinstance(t, (Int, Float)):
            state[type_id] = _DONE
            return 0
        if isinstance(t, Ptr):
            strong = self._order(t.type_id, True)
            state[type_id] = _DONE
            return strong
        if isinstance(t, Array):
            return self._order(t.type_id, False)
        if isinstance(t, _COMPOSITE):
            # strong only if embedded (no pointer on the path) or anonymous (defined inline)
            if through_ptr and t.name:
                return 0
            state[type_id] = _DOING
            for m in t.members:
                self._order(m.type_id, False)
            if t.name:
                self._queue.append(type_id)
            state[type_id] = _DONE
            return 1
        if isinstance(t, (Enum, Enum64, Fwd)):
            # named or unreferenced (top-level anonymous) enums are declarations of their own
            if t.name or not self.referenced[type_id]:
                self._queue.append(type_id)
            state[type_id] = _DONE
            return 1
        if isinstance(t, Typedef):
            strong = self._order(t.type_id, through_ptr)
            if through_ptr and not strong:
                return 0
            self._queue.append(type_id)
            state[type_id] = _DONE
            return 1
        if isinstance(t, _MODS):
            return self._order(t.type_id, through_ptr)
        if isinstance(t, FuncProto):
            strong = self._order(t.return_type_id, through_ptr) > 0
            for p in t.params:
                if self._order(p.type_id, through_ptr) > 0:
                    strong = True
            return int(strong)
        state[type_id] = _DONE  # FUNC, VAR, DATASEC, DECL_TAG: nothing to declare
        return 0

    # --- emitting --------------------------------------------------------------
    def _emit_type(self, type_id: int, cont_id: int) -> None:
        """libbpf btf_dump_emit_type: definitions, with forward declarations as needed."""
        state = self.emit_state
        if state[type_id] == _DONE:
            return
        t = self.types[type_id]
        w = self.out.append
        if state[type_id] == _DOING:
            if self.fwd_emitted[type_id]:
                return
            if isinstance(t, _COMPOSITE):
                if type_id == cont_id or not t.name:  # self-reference / anonymous loop
                    return
                self._emit_struct_fwd(type_id, t)
                w(";\n\n")
                self.fwd_emitted[type_id] = 1
            elif isinstance(t, Typedef):
                # the typedef serves as a forward declaration for pointer uses
                if t.name != "__builtin_va_list":
                    self._emit_typedef_def(type_id, t, 0)
                    w(";\n\n")
                self.fwd_emitted[type_id] = 1
            return
        top_level = cont_id == 0
        if isinstance(t, Int):
            alias = _MISSING_BASE_TYPES.get(self._type_name(type_id))
            if alias:
                w(f"typedef {alias} {self._type_name(type_id)};\n\n")
            state[type_id] = _DONE
        elif isinstance(t, (Enum, Enum64)):
            if top_level:
                self._emit_enum_def(type_id, t, 0)
                w(";\n\n")
            state[type_id] = _DONE
        elif isinstance(t, (Ptr, *_MODS)):
            self._emit_type(t.type_id, cont_id)
        elif isinstance(t, Array):
            self._emit_type(t.type_id, cont_id)
        elif isinstance(t, Fwd):
            self._emit_fwd_def(type_id, t)
            w(";\n\n")
            state[type_id] = _DONE
        elif isinstance(t, Typedef):
            state[type_id] = _DOING
            self._emit_type(t.type_id, type_id)
            if not self.fwd_emitted[type_id] and t.name != "__builtin_va_list":
                self._emit_typedef_def(type_id, t, 0)
                w(";\n\n")
            state[type_id] = _DONE
        elif isinstance(t, _COMPOSITE):
            state[type_id] = _DOING
            if top_level or not t.name:
                # all fields will be written: their types need declarations first
                new_cont = cont_id if not t.name else type_id
                for m in t.members:
                    self._emit_type(m.type_id, new_cont)
            elif not self.fwd_emitted[type_id] and type_id != cont_id:
                self._emit_struct_fwd(type_id, t)
                w(";\n\n")
                self.fwd_emitted[type_id] = 1
            if top_level:
                self._emit_struct_def(type_id, t, 0)
                w(";\n\n")
                state[type_id] = _DONE
            else:
                state[type_id] = _NOT
        elif isinstance(t, FuncProto):
            self._emit_type(t.return_type_id, cont_id)
            for p in t.params:
                self._emit_type(p.type_id, cont_id)

    def _is_packed(self, t: Struct | Union) -> bool:
        max_align = 1
        for m in t.members:
            align = self.align_of(m.type_id)
            if align and m.bitfield_size == 0 and m.bit_offset % (8 * align):
                return True
            max_align = max(align, max_align)
        return t.size % max_align != 0

    def _emit_bit_padding(self, cur_off: int, next_off: int, next_align: int, in_bitfield: bool,
                          lvl: int) -> None:
        if cur_off >= next_off:
            return
        pads = (("long", self.ptr_sz * 8), ("int", 32), ("short", 16), ("char", 8))
        w = self.out.append
        pfx = _pfx(lvl)
        new_off = pad_bits = 0
        pad_type = ""
        # the largest type whose natural alignment lands at or before next_off
        for pad_type, pad_bits in pads:
            new_off = _roundup(cur_off, pad_bits)
            if new_off <= next_off:
                break
        if cur_off < new_off <= next_off:
            # an explicit `<type>: 0` marker when the compiler would not align by itself
            if (in_bitfield
                    or (new_off == next_off and _roundup(cur_off, next_align * 8) != new_off)
                    or (new_off != next_off and next_off - new_off <= new_off - cur_off)):
                w(f"\n{pfx}{pad_type}: {new_off - cur_off if in_bitfield else 0};")
            cur_off = new_off
        while cur_off != next_off:
            bits = min(next_off - cur_off, pad_bits)
            if bits == pad_bits:
                w(f"\n{pfx}{pad_type}: {pad_bits};")
                cur_off += bits
                continue
            # the remainder, with the smallest type that holds it
            for pad_type, pad_bits in reversed(pads):
                if pad_bits < bits:
                    continue
                w(f"\n{pfx}{pad_type}: {bits};")
                cur_off += bits
                break

    def _emit_struct_fwd(self, type_id: int, t: Struct | Union) -> None:
        kw = "struct" if isinstance(t, Struct) else "union"
        self.out.append(f"{kw} {self._type_name(type_id)}" if t.name else kw)

    def _emit_struct_def(self, type_id: int, t: Struct | Union, lvl: int) -> None:
        w = self.out.append
        is_struct = isinstance(t, Struct)
        align = self.align_of(type_id)
        # libbpf checks structs only; a union whose size is no multiple of its members'
        # alignment (e.g. a __packed union of a u64 and a u8[18]) needs the attribute too
        packed = self._is_packed(t)
        kw = "struct" if is_struct else "union"
        w(f"{kw} {self._type_name(type_id)} {{" if t.name else f"{kw} {{")
        off = 0
        prev_bitfield = False
        inner = _pfx(lvl + 1)
        for m in t.members:
            m_sz = m.bitfield_size
            m_off = m.bit_offset
            m_align = 1 if packed else self.align_of(m.type_id)
            self._emit_bit_padding(off, m_off, m_align, prev_bitfield and m_sz != 0, lvl + 1)
            w("\n" + inner)
            self._emit_decl(m.type_id, m.name, lvl + 1)
            if m_sz:
                w(f": {m_sz}")
                off = m_off + m_sz
                prev_bitfield = True
            else:
                off = m_off + max(0, self.resolve_size(m.type_id)) * 8
                prev_bitfield = False
            w(";")
        if is_struct:
            self._emit_bit_padding(off, t.size * 8, align, False, lvl + 1)
        if t.members or t.size:
            w(f"\n{_pfx(lvl)}}}")
        else:
            w("}")
        if packed:
            w(" __attribute__((packed))")

    def _emit_enum_def(self, type_id: int, t: Enum | Enum64, lvl: int) -> None:
        w = self.out.append
        w(f"enum {self._type_name(type_id)}" if t.name else "enum")
        if not t.values:
            return
        w(" {")
        pfx = _pfx(lvl + 1)
        is64 = isinstance(t, Enum64)
        for v in t.values:
            name = v.name
            dups = self._name_dups(self.ident_names, name)
            if dups > 1:
                name = f"{name}___{dups}"
            if is64:
                raw = v.value & 0xFFFFFFFFFFFFFFFF
                val = f"{raw - (1 << 64) if raw >> 63 else raw}LL" if t.signed else f"{raw}ULL"
            else:
                raw = v.value & 0xFFFFFFFF
                val = str(raw - (1 << 32) if t.signed and raw >> 31 else raw)
            w(f"\n{pfx}{name} = {val},")
        w(f"\n{_pfx(lvl)}}}")
        if t.size == 1:
            w(" __attribute__((mode(byte)))")
        elif t.size == 8 and self.ptr_sz == 8:
            # a 64-bit enum needs mode(word) unless some value already makes it 64-bit
            if not is64 or not any((v.value & 0xFFFFFFFFFFFFFFFF) >> 32 for v in t.values):
                w(" __attribute__((mode(word)))")

    def _emit_fwd_def(self, type_id: int, t: Fwd) -> None:
        self.out.append(f"{'union' if t.union else 'struct'} {self._type_name(type_id)}")

    def _emit_typedef_def(self, type_id: int, t: Typedef, lvl: int) -> None:
        name = self._ident_name(type_id)
        if t.type_id == 0 and name == "__gnuc_va_list":  # old GCC's invalid typedef
            self.out.append("typedef __builtin_va_list __gnuc_va_list")
            return
        self.out.append("typedef ")
        self._emit_decl(t.type_id, name, lvl)

    # --- declarations ------------------------------------------------------------
    def _emit_decl(self, type_id: int, fname: str, lvl: int) -> None:
        """libbpf btf_dump_emit_type_decl: push the chain of types down to a terminal one."""
        stack: list[int] = []
        types = self.types
        while True:
            stack.append(type_id)
            if type_id == 0:
                break
            t = types[type_id]
            if isinstance(t, (Ptr, *_MODS, Array)):
                type_id = t.type_id
            elif isinstance(t, FuncProto):
                type_id = t.return_type_id
            else:
                break  # INT, ENUM, FWD, STRUCT, UNION, TYPEDEF, FLOAT (or unexpected)
        self._emit_chain(stack, fname, lvl)

    def _emit_mods(self, stack: list[int]) -> None:
        w = self.out.append
        while stack:
            t = self.types[stack[-1]]
            if isinstance(t, Volatile):
                w("volatile ")
            elif isinstance(t, Const):
                w("const ")
            elif isinstance(t, Restrict):
                w("restrict ")
            else:
                return
            stack.pop()

    def _drop_mods(self, stack: list[int]) -> None:
        while stack and isinstance(self.types[stack[-1]], _MODS):
            stack.pop()

    def _emit_name(self, name: str, last_was_ptr: bool) -> None:
        self.out.append(" " + name if name and not last_was_ptr else name)

    def _emit_chain(self, stack: list[int], fname: str, lvl: int) -> None:
        """libbpf btf_dump_emit_type_chain: C declarator syntax from the innermost type out."""
        w = self.out.append
        last_was_ptr = True
        while stack:
            type_id = stack.pop()
            if type_id == 0:
                self._emit_mods(stack)
                w("void")
                last_was_ptr = False
                continue
            t = self.types[type_id]
            if isinstance(t, (Int, Float)):
                self._emit_mods(stack)
                w(t.name)
            elif isinstance(t, _COMPOSITE):
                self._emit_mods(stack)
                if not t.name:
                    self._emit_struct_def(type_id, t, lvl)
                else:
                    self._emit_struct_fwd(type_id, t)
            elif isinstance(t, (Enum, Enum64)):
                self._emit_mods(stack)
                if not t.name:
                    self._emit_enum_def(type_id, t, lvl)
                else:
                    w(f"enum {self._type_name(type_id)}")
            elif isinstance(t, Fwd):
                self._emit_mods(stack)
                self._emit_fwd_def(type_id, t)
            elif isinstance(t, Typedef):
                self._emit_mods(stack)
                w(self._ident_name(type_id))
            elif isinstance(t, Ptr):
                w("*" if last_was_ptr else " *")
            elif isinstance(t, Volatile):
                w(" volatile")
            elif isinstance(t, Const):
                w(" const")
            elif isinstance(t, Restrict):
                w(" restrict")
            elif isinstance(t, TypeTag):
                self._emit_mods(stack)
                w(f' __attribute__((btf_type_tag("{t.name}")))')
            elif isinstance(t, Array):
                # const/volatile on arrays (a GCC quirk) mean nothing: drop them
                self._drop_mods(stack)
                if not stack:
                    self._emit_name(fname, last_was_ptr)
                    w(f"[{t.nelems}]")
                    return
                multidim = isinstance(self.types[stack[-1]], Array)
                if fname and not last_was_ptr:
                    w(" ")
                if not multidim:
                    w("(")
                self._emit_chain(stack, fname, lvl)
                if not multidim:
                    w(")")
                w(f"[{t.nelems}]")
                return
            elif isinstance(t, FuncProto):
                self._drop_mods(stack)  # GCC's volatile on noreturn function pointers
                if stack:
                    w(" (")
                    self._emit_chain(stack, fname, lvl)
                    w(")")
                else:
                    self._emit_name(fname, last_was_ptr)
                w("(")
                params = t.params
                if not params or (len(params) == 1 and params[0].type_id == 0):
                    w("void)")
                    return
                last = len(params) - 1
                for i, p in enumerate(params):
                    if i:
                        w(", ")
                    if i == last and p.type_id == 0:
                        w("...")
                        break
                    self._emit_decl(p.type_id, p.name, lvl)
                w(")")
                return
            else:
                raise BTFError(f"unexpected {t.kind.name} [{type_id}] in a C type declaration",
                               source=getattr(self.btf, "source", None))
            last_was_ptr = isinstance(t, Ptr)
        self._emit_name(fname, last_was_ptr)

    # --- names --------------------------------------------------------------------
    @staticmethod
    def _name_dups(names: dict[str, int], name: str) -> int:
        count = names.get(name, 0) + 1
        names[name] = count
        return count

    def _resolve_name(self, type_id: int, names: dict[str, int]) -> str:
        resolved = self.names.get(type_id)
        if resolved is not None:
            return resolved
        t = self.types[type_id]
        name = t.name
        if name and not isinstance(t, Fwd) and not (isinstance(t, Enum) and not t.values):
            dups = self._name_dups(names, name)
            if dups > 1:
                name = f"{name}___{dups}"
        self.names[type_id] = name
        return name

    def _type_name(self, type_id: int) -> str:
        return self._resolve_name(type_id, self.type_names)

    def _ident_name(self, type_id: int) -> str:
        return self._resolve_name(type_id, self.ident_names)


def dump_c(btf: BTF) -> str:
    """The whole BTF as a vmlinux.h-style C header."""
    dumper = CDumper(btf)
    for type_id in range(1, len(dumper.types)):
        dumper.dump_type(type_id)
    return HEADER + dumper.take() + FOOTER


def write_c(btf: BTF, out: TextIO) -> None:
    """Write :func:`dump_c` to ``out`` in chunks."""
    dumper = CDumper(btf)
    out.write(HEADER)
    for type_id in range(1, len(dumper.types)):
        dumper.dump_type(type_id)
        if len(dumper.out) > 65536:
            out.write(dumper.take())
    out.write(dumper.take())
    out.write(FOOTER)
