// SPDX-License-Identifier: MIT
/* core_oracle: libbpf as the CO-RE oracle for corepy's differential tests.
 *
 *   core_oracle OBJ [TARGET_BTF]
 *
 * Opens OBJ with libbpf (btf_custom_path = TARGET_BTF when given), marks every program for
 * loading (so '?'-sections are relocated too) and calls bpf_object__load(), which performs
 * CO-RE relocation and then loads programs. Every libbpf message, debug level included, goes
 * to stdout; the test parses "prog 'X': relo #N: ..." lines. Loading may fail after relocation
 * (other kernels' BTF, poisoned instructions): the last line is "ORACLE load <err>" either way.
 * bpf_object__close() releases all maps and programs. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <bpf/libbpf.h>

static int print_all(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	(void)level;
	return vfprintf(stdout, fmt, ap);
}

int main(int argc, char **argv)
{
	struct bpf_program *prog;
	struct bpf_object *obj;
	int err;

	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: %s OBJ [TARGET_BTF]\n", argv[0]);
		return 2;
	}
	libbpf_set_print(print_all);
	LIBBPF_OPTS(bpf_object_open_opts, opts, .btf_custom_path = argc == 3 ? argv[2] : NULL);
	obj = bpf_object__open_file(argv[1], &opts);
	err = libbpf_get_error(obj);
	if (err) {
		printf("ORACLE open %d\n", err);
		return 1;
	}
	bpf_object__for_each_program(prog, obj)
		bpf_program__set_autoload(prog, true);
	err = bpf_object__load(obj);
	printf("ORACLE load %d\n", err);
	bpf_object__close(obj);
	return 0;
}
