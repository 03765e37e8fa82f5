// SPDX-License-Identifier: MIT
/* core_oracle: libbpf as the CO-RE oracle for corepy's differential tests and bench.
 *
 *   core_oracle [-q] OBJ [TARGET_BTF]
 *
 * Opens OBJ with libbpf (btf_custom_path = TARGET_BTF when given), marks every program for
 * loading (so '?'-sections are relocated too) and calls bpf_object__load(), which performs
 * CO-RE relocation and then loads programs. Every libbpf message, debug level included, goes
 * to stdout (with -q: none, for timing); the tests parse "prog 'X': relo #N: ..." lines.
 * Loading may fail after relocation (other kernels' BTF, poisoned instructions). The last
 * line is always "ORACLE load <err> relocated_ns <ns> total_ns <ns>": nanoseconds from just
 * before bpf_object__open_file() to libbpf's last CO-RE relocation message, and to the end
 * of bpf_object__load(). bpf_object__close() releases all maps and programs. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <bpf/libbpf.h>

static int quiet;
static struct timespec last_core;

static int print_all(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	(void)level;
	/* CO-RE messages: "prog '%s': relo #%d: ..." (not ELF relocations, "sec '%s': relo") */
	if (strncmp(fmt, "libbpf: prog '%s': relo #%d: ", 29) == 0)
		clock_gettime(CLOCK_MONOTONIC, &last_core);
	return quiet ? 0 : vfprintf(stdout, fmt, ap);
}

static long long ns_since(const struct timespec *a, const struct timespec *b)
{
	return (b->tv_sec - a->tv_sec) * 1000000000LL + (b->tv_nsec - a->tv_nsec);
}

int main(int argc, char **argv)
{
	struct timespec start, end;
	struct bpf_program *prog;
	struct bpf_object *obj;
	int err, arg = 1;

	if (arg < argc && strcmp(argv[arg], "-q") == 0) {
		quiet = 1;
		arg++;
	}
	if (argc - arg < 1 || argc - arg > 2) {
		fprintf(stderr, "usage: %s [-q] OBJ [TARGET_BTF]\n", argv[0]);
		return 2;
	}
	libbpf_set_print(print_all);
	LIBBPF_OPTS(bpf_object_open_opts, opts, .btf_custom_path = argc - arg == 2 ? argv[arg + 1] : NULL);
	clock_gettime(CLOCK_MONOTONIC, &start);
	last_core = start;
	obj = bpf_object__open_file(argv[arg], &opts);
	err = libbpf_get_error(obj);
	if (err) {
		printf("ORACLE open %d\n", err);
		return 1;
	}
	bpf_object__for_each_program(prog, obj)
		bpf_program__set_autoload(prog, true);
	err = bpf_object__load(obj);
	clock_gettime(CLOCK_MONOTONIC, &end);
	printf("ORACLE load %d relocated_ns %lld total_ns %lld\n", err, ns_since(&start, &last_core),
	       ns_since(&start, &end));
	bpf_object__close(obj);
	return 0;
}
