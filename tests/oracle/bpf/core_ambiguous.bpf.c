// SPDX-License-Identifier: GPL-2.0
/* irq_info.irq sits at different offsets in the kernel's several irq_info structs: libbpf
 * refuses the relocation (field offset ambiguity). */
#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";
__u64 out[2];

struct irq_info {
	int irq;
} __attribute__((preserve_access_index));

SEC("raw_tp/sys_enter")
int ambiguous(void *ctx)
{
	out[0] = bpf_core_field_offset(struct irq_info, irq);
	return 0;
}
