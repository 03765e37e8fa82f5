// SPDX-License-Identifier: GPL-2.0
/* Relocation order matters: libbpf narrows a local type's candidates as relocations match,
 * walking the .BTF.ext sections in their order (clang writes the program section first here,
 * although .text comes first among the ELF sections). The program's `ret` (only in one of
 * the kernel's syscall_tp_t structs) narrows the list, so the subprogram's `args` (only in
 * the other) is then not found. */
#include <linux/types.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";
__u64 out[4];

struct syscall_tp_t {
	int syscall_nr;
	unsigned long ret;
	unsigned long args[6];
} __attribute__((preserve_access_index));

int args_exist(void);

SEC("raw_tp/sys_enter")
int order(void *ctx)
{
	out[0] = bpf_core_field_offset(struct syscall_tp_t, ret);
	out[1] = args_exist();
	return 0;
}

__attribute__((noinline)) int args_exist(void)
{
	return bpf_core_field_exists(struct syscall_tp_t, args);
}
