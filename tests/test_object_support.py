"""Shared by the object-layer tests: BPF sources compiled in-test with clang-19, and a libbpf 1.1
oracle (a small C program linked with -lbpf) that prints what libbpf makes of an object."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import FIXTURES, ROOT

CLANG = shutil.which("clang-19") or shutil.which("clang")
CACHE = ROOT / ".pytest_cache" / "corepy-objects"

# A BPF object exercising what the object layer handles: maps of several kinds (map-in-map and
# prog-array initial slots), global data in .data/.rodata/.bss/.data.custom, static data,
# kconfig and ksym externs, kfuncs, subprograms in .text called from several programs,
# callbacks (bpf_loop), CO-RE relocations, two programs in one section, autoload off.
LINK_SRC = r"""
#include <linux/bpf.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

struct task_struct { int pid; int tgid; } __attribute__((preserve_access_index));

struct inner { __uint(type, BPF_MAP_TYPE_ARRAY); __uint(max_entries, 4); __type(key, __u32); __type(value, __u64); }
	in1 SEC(".maps"), in2 SEC(".maps");
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 3);
	__type(key, __u32);
	__array(values, struct inner);
} outer SEC(".maps") = { .values = { [0] = &in1, [2] = &in2 } };
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, __u64);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} counts SEC(".maps");
struct { __uint(type, BPF_MAP_TYPE_RINGBUF); __uint(max_entries, 5000); } rb SEC(".maps");
struct {
	__uint(type, BPF_MAP_TYPE_PERF_EVENT_ARRAY);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, sizeof(__u32));
	__uint(max_entries, 4);
} events SEC(".maps");
int tail_target(void *ctx);
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 2);
	__uint(key_size, sizeof(__u32));
	__array(values, int (void *));
} jmp SEC(".maps") = { .values = { [1] = (void *)&tail_target } };

const volatile int target_pid = 0;
const volatile char cfg_name[16] = "hello";
int counter = 5;
__u64 hits;
int arr[4] SEC(".data.custom") = {1, 2, 3, 4};

extern int LINUX_KERNEL_VERSION __kconfig;
extern _Bool CONFIG_BPF_SYSCALL __kconfig;
extern enum libbpf_tristate CONFIG_NF_CONNTRACK __kconfig __weak;
extern char CONFIG_DEFAULT_HOSTNAME[16] __kconfig __weak;
extern int CONFIG_COREPY_NOT_THERE __kconfig __weak;
extern const void init_task __ksym __weak;
extern struct task_struct *bpf_task_acquire(struct task_struct *p) __ksym __weak;
extern void bpf_task_release(struct task_struct *p) __ksym __weak;

static __noinline int helper_add(int a, int b) { counter += a; return a + b; }
__noinline int global_sub(int x) { hits++; return helper_add(x, 1) * 2; }
static long loop_cb(__u32 i, void *ctx) { counter += i; return 0; }

SEC("tp/syscalls/sys_enter_write")
int handle_write(void *ctx)
{
	int pid = bpf_get_current_pid_tgid() >> 32;
	__u64 *c;

	if (target_pid && pid != target_pid)
		return 0;
	c = bpf_map_lookup_elem(&counts, &pid);
	if (c)
		__sync_fetch_and_add(c, 1);
	bpf_loop(4, loop_cb, NULL, 0);
	arr[1] = LINUX_KERNEL_VERSION + CONFIG_BPF_SYSCALL + (CONFIG_NF_CONNTRACK == TRI_MODULE)
		 + CONFIG_DEFAULT_HOSTNAME[0] + CONFIG_COREPY_NOT_THERE;
	bpf_printk("pid %d", pid);
	return global_sub(pid) + helper_add(1, 2) + cfg_name[0];
}

SEC("tp_btf/sched_process_exec")
int on_exec(__u64 *ctx)
{
	struct task_struct *p = (void *)ctx[0], *t;
	int x = BPF_CORE_READ(p, pid);

	if (bpf_core_field_exists(p->tgid))
		x++;
	t = bpf_task_acquire(p);
	if (t)
		bpf_task_release(t);
	return x + (long)&init_task + global_sub(x);
}

SEC("raw_tp/sys_enter")
int tail_target(void *ctx) { return helper_add(2, 3); }

SEC("?raw_tp/sys_exit")
int optional_prog(void *ctx)
{
	struct task_struct *t = (void *)bpf_get_current_task();
	return BPF_CORE_READ(t, tgid) + helper_add(3, 4);
}

SEC("xdp")
int xdp_pass(struct xdp_md *ctx) { return XDP_PASS; }

SEC("xdp")
int xdp_drop(struct xdp_md *ctx) { return XDP_DROP + global_sub(1); }
"""

ORACLE_SRC = r"""
#include <stdio.h>
#include <stdlib.h>
#include <stdarg.h>
#include <string.h>
#include <bpf/libbpf.h>
#include <bpf/bpf.h>

static int quiet(enum libbpf_print_level level, const char *fmt, va_list args)
{
	return level == LIBBPF_WARN ? vfprintf(stderr, fmt, args) : 0;
}

int main(int argc, char **argv)
{
	struct bpf_object *obj;
	struct bpf_program *p;
	struct bpf_map *m;

	/* maps pinned by name go under a private pin root the test removes */
	LIBBPF_OPTS(bpf_object_open_opts, opts, .pin_root_path = getenv("COREPY_ORACLE_PIN_ROOT"));

	libbpf_set_print(quiet);
	obj = bpf_object__open_file(argv[1], &opts);
	if (!obj) {
		perror("bpf_object__open_file");
		return 2;
	}
	if (argc > 2 && strcmp(argv[2], "load") == 0 && bpf_object__load(obj)) {
		fprintf(stderr, "bpf_object__load failed\n");
		return 3;
	}
	bpf_object__for_each_map(m, obj) {
		size_t size = 0, i;
		const unsigned char *data = bpf_map__initial_value(m, &size);

		printf("map %s type=%u key=%u value=%u max=%u flags=%u numa=%u extra=%llu "
		       "btf_key=%u btf_value=%u fd=%d data=", bpf_map__name(m), bpf_map__type(m),
		       bpf_map__key_size(m), bpf_map__value_size(m), bpf_map__max_entries(m),
		       bpf_map__map_flags(m), bpf_map__numa_node(m),
		       (unsigned long long)bpf_map__map_extra(m), bpf_map__btf_key_type_id(m),
		       bpf_map__btf_value_type_id(m), bpf_map__fd(m));
		for (i = 0; data && i < size; i++)
			printf("%02x", data[i]);
		printf("%s\n", data ? "" : "-");
	}
	bpf_object__for_each_program(p, obj) {
		const struct bpf_insn *in = bpf_program__insns(p);
		size_t i, n = bpf_program__insn_cnt(p);

		printf("prog %s sec=%s type=%u attach=%u autoload=%d n=%zu\n", bpf_program__name(p),
		       bpf_program__section_name(p), bpf_program__type(p),
		       bpf_program__expected_attach_type(p), bpf_program__autoload(p), n);
		for (i = 0; i < n; i++)
			printf("insn %u %u %u %d %d\n", in[i].code, in[i].dst_reg, in[i].src_reg,
			       in[i].off, in[i].imm);
	}
	bpf_object__close(obj);
	return 0;
}
"""


def _cached(name: str, key: str, suffix: str) -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    return CACHE / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}{suffix}"


def build_bpf(name: str, source: str, extra: tuple[str, ...] = ()) -> Path:
    """Compile ``source`` with clang -target bpf -g -O2 (cached by content); skip without clang."""
    if CLANG is None:
        pytest.skip("clang-19 not installed (scripts/setup-system.sh installs it)")
    out = _cached(name, source + " ".join(extra), ".bpf.o")
    if not out.exists():
        src = out.with_suffix(".c")
        src.write_text(source)
        tmp = out.with_suffix(".tmp")
        multiarch = [f"-I{d}" for d in (f"/usr/include/{os.uname().machine}-linux-gnu",) if os.path.isdir(d)]
        r = subprocess.run([CLANG, "-g", "-O2", "-target", "bpf", "-D__TARGET_ARCH_x86", *multiarch, *extra,
                            "-c", str(src), "-o", str(tmp)], capture_output=True, text=True)
        assert r.returncode == 0, f"clang failed:\n{r.stderr}"
        tmp.rename(out)
    return out


def link_object() -> Path:
    return build_bpf("link", LINK_SRC)


def oracle_binary() -> Path:
    """The libbpf oracle, built once; skip if gcc or libbpf-dev is missing."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc not installed: needed to build the libbpf oracle")
    if not Path("/usr/include/bpf/libbpf.h").exists():
        pytest.skip("libbpf-dev not installed (/usr/include/bpf/libbpf.h): needed for the libbpf oracle")
    out = _cached("libbpf-oracle", ORACLE_SRC, "")
    if not out.exists():
        src = out.with_suffix(".c")
        src.write_text(ORACLE_SRC)
        tmp = out.with_suffix(".tmp")
        r = subprocess.run([gcc, "-O1", "-o", str(tmp), str(src), "-lbpf"], capture_output=True, text=True)
        assert r.returncode == 0, f"building the libbpf oracle failed:\n{r.stderr}"
        tmp.rename(out)
    return out


def oracle_process(obj: Path, load: bool = False) -> subprocess.CompletedProcess:
    """Run the libbpf oracle on ``obj``; maps it pins by name go to a private bpffs directory,
    removed afterwards (libbpf's default pin root is /sys/fs/bpf itself)."""
    pin_root = f"/sys/fs/bpf/corepy-oracle-{os.getpid()}-{os.urandom(4).hex()}"
    os.makedirs(pin_root)
    try:
        return subprocess.run([str(oracle_binary()), str(obj)] + (["load"] if load else []),
                              capture_output=True, text=True, timeout=60,
                              env={**os.environ, "COREPY_ORACLE_PIN_ROOT": pin_root})
    finally:
        for name in os.listdir(pin_root):
            os.unlink(os.path.join(pin_root, name))
        os.rmdir(pin_root)


def run_oracle(obj: Path, load: bool = False) -> dict:
    """libbpf's view: {'maps': {name: {...}}, 'progs': {name: {..., 'insns': [(code,dst,src,off,imm)]}}}."""
    r = oracle_process(obj, load)
    assert r.returncode == 0, f"libbpf oracle failed on {obj}:\n{r.stderr}"
    maps: dict = {}
    progs: dict = {}
    cur = None
    for line in r.stdout.splitlines():
        kind, rest = line.split(" ", 1)
        if kind == "insn":
            cur["insns"].append(tuple(int(x) for x in rest.split()))
            continue
        name, *fields = rest.split()
        rec = {k: (v if k in ("sec", "data") else int(v)) for k, v in (f.split("=", 1) for f in fields)}
        if "data" in rec:
            rec["data"] = None if rec["data"] == "-" else bytes.fromhex(rec["data"])
        if kind == "map":
            maps[name] = rec
        else:
            rec["insns"] = []
            progs[name] = cur = rec
    return {"maps": maps, "progs": progs}


def fixture_objects() -> list[Path]:
    return sorted(FIXTURES.glob("*.bpf.o"))


def test_oracle_reads_an_object():
    """The oracle itself works: libbpf opens the link object and lists its programs."""
    seen = run_oracle(link_object())
    assert {"handle_write", "on_exec", "tail_target", "optional_prog", "xdp_pass", "xdp_drop"} <= set(seen["progs"])
    assert seen["progs"]["optional_prog"]["autoload"] == 0
    assert os.path.exists(link_object())
