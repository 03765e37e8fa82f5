// SPDX-License-Identifier: GPL-2.0
/* CO-RE corner cases for the differential tests (compiled by the tests, never loaded to run):
 * load-size adjustment of direct loads (unsigned widen/narrow allowed, signed refused and
 * poisoned), fields renamed or retyped between kernels, arrays of structs behind pointers,
 * anonymous unions in the kernel's sk_buff, bitfields, 32-bit enums that are signed here and
 * unsigned in old kernels (libbpf sign-extends), 64-bit enums (ld_imm64), enumerators that only
 * newer kernels have, relocations inside a static and a global subprogram.
 * Local definitions only (no vmlinux.h): this is how CO-RE programs describe what they need. */
#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";
__u64 out[64];

struct rlimit {
	__u64 rlim_cur;
	__u64 rlim_max;
} __attribute__((preserve_access_index));

struct signal_struct {
	int nr_threads;
	struct rlimit rlim[16];
} __attribute__((preserve_access_index));

struct task_struct {
	unsigned long flags;      /* kernel: unsigned int: 8-byte load narrowed to 4 */
	long prio;                /* kernel: int: signed, cannot be narrowed: poisoned */
	int pid;
	char comm[16];
	struct signal_struct *signal;
	unsigned int __state;     /* 5.14+ */
	unsigned int in_iowait:1;
} __attribute__((preserve_access_index));

struct task_struct___old {
	unsigned int state;       /* before 5.14: long: signed 8 bytes, poisoned */
} __attribute__((preserve_access_index));

struct net_device {
	char name[16];
	int ifindex;
} __attribute__((preserve_access_index));

struct sk_buff {
	struct net_device *dev;   /* kernel: inside anonymous unions */
	unsigned int len;
	__u16 protocol;
	__u8 cb[48];
} __attribute__((preserve_access_index));

struct sock_common {
	unsigned short skc_family;
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
	unsigned char sk_protocol; /* kernel: u16: 1-byte load widened to 2 */
	unsigned short sk_type;
} __attribute__((preserve_access_index));

enum perf_event_state {
	PERF_EVENT_STATE_DEAD = -5,
	PERF_EVENT_STATE_OFF = -1,
	PERF_EVENT_STATE_ACTIVE = 1,
};

enum perf_callchain_context {
	PERF_CONTEXT_HV = (__u64)-32,
	PERF_CONTEXT_KERNEL = (__u64)-128,
	PERF_CONTEXT_MAX = (__u64)-4095,
};

enum bpf_map_type___x {
	BPF_MAP_TYPE_BLOOM_FILTER___x = 1,  /* 5.16 */
	BPF_MAP_TYPE_USER_RINGBUF___x = 2,  /* 6.1 */
	BPF_MAP_TYPE_CGRP_STORAGE___x = 3,  /* 6.2 */
};

SEC("raw_tp/sys_enter")
int direct_loads(void *ctx)
{
	struct task_struct *t = (void *)bpf_get_current_task_btf();
	struct task_struct___old *o = (void *)t;
	struct sock *sk = (void *)ctx;

	out[0] = t->flags;
	out[1] = t->prio;
	out[2] = t->comm[5];
	out[3] = t->__state;
	out[4] = o->state;
	out[5] = t->signal->rlim[3].rlim_max;
	out[6] = sk->sk_protocol;
	return 0;
}

SEC("raw_tp/sys_enter")
int probed_reads(void *ctx)
{
	struct task_struct *t = (void *)bpf_get_current_task();

	out[10] = BPF_CORE_READ(t, signal, rlim[3].rlim_max);
	out[11] = bpf_core_field_size(t->comm);
	out[12] = bpf_core_field_offset(struct sk_buff, cb[7]);
	out[13] = bpf_core_field_offset(struct sk_buff, dev);
	out[14] = BPF_CORE_READ_BITFIELD_PROBED(t, in_iowait);
	out[15] = bpf_core_field_exists(struct sock, sk_protocol);
	out[16] = bpf_core_field_size(struct sock, sk_protocol);
	out[17] = bpf_core_field_exists(struct task_struct___old, state);
	out[18] = bpf_core_field_offset(struct signal_struct, rlim[15].rlim_cur);
	return 0;
}

SEC("raw_tp/sys_enter")
int enums(void *ctx)
{
	out[20] = bpf_core_enum_value(enum perf_event_state, PERF_EVENT_STATE_DEAD);
	out[21] = bpf_core_enum_value(enum perf_event_state, PERF_EVENT_STATE_ACTIVE);
	out[22] = bpf_core_enum_value(enum perf_callchain_context, PERF_CONTEXT_KERNEL);
	out[23] = bpf_core_enum_value_exists(enum perf_callchain_context, PERF_CONTEXT_MAX);
	out[24] = bpf_core_enum_value_exists(enum bpf_map_type___x, BPF_MAP_TYPE_BLOOM_FILTER___x);
	if (bpf_core_enum_value_exists(enum bpf_map_type___x, BPF_MAP_TYPE_USER_RINGBUF___x))
		out[25] = bpf_core_enum_value(enum bpf_map_type___x, BPF_MAP_TYPE_USER_RINGBUF___x);
	if (bpf_core_enum_value_exists(enum bpf_map_type___x, BPF_MAP_TYPE_CGRP_STORAGE___x))
		out[26] = bpf_core_enum_value(enum bpf_map_type___x, BPF_MAP_TYPE_CGRP_STORAGE___x);
	out[27] = bpf_core_type_size(enum perf_callchain_context);
	out[28] = bpf_core_type_matches(enum perf_event_state);
	out[29] = bpf_core_type_matches(struct rlimit);
	return 0;
}

static __attribute__((noinline)) int sub_static(struct task_struct *t)
{
	return BPF_CORE_READ(t, pid) + bpf_core_field_offset(struct task_struct, signal);
}

__attribute__((noinline)) int sub_global(struct task_struct *t)
{
	return bpf_core_field_offset(struct task_struct, comm) + bpf_core_type_size(struct sk_buff);
}

SEC("raw_tp/sys_enter")
int subprogs(void *ctx)
{
	struct task_struct *t = (void *)bpf_get_current_task();

	out[30] = sub_static(t) + sub_global(t);
	out[31] = bpf_core_type_id_kernel(struct sk_buff);
	out[32] = bpf_core_type_exists(struct task_struct___old);
	return 0;
}
