// SPDX-License-Identifier: GPL-2.0
/* Kernels carry several structs named syscall_tp_t (and irq_info) from different files.
 * libbpf keeps, per local type, only the candidates that matched the previous relocation,
 * so `args` is not found after `ret` narrowed the list; the last relocation (type size of
 * irq_info, whose candidates have different sizes) is ambiguous and fails the load. */
#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";
__u64 out[8];

struct syscall_tp_t {
	int syscall_nr;
	unsigned long ret;
	unsigned long args[6];
} __attribute__((preserve_access_index));

struct irq_info {
	int irq;
} __attribute__((preserve_access_index));

SEC("raw_tp/sys_enter")
int prune(void *ctx)
{
	out[0] = bpf_core_field_offset(struct syscall_tp_t, syscall_nr);
	out[1] = bpf_core_field_offset(struct syscall_tp_t, ret);
	out[2] = bpf_core_field_exists(struct syscall_tp_t, args);
	out[3] = bpf_core_type_size(struct irq_info);
	return 0;
}
