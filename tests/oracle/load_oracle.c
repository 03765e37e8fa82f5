// SPDX-License-Identifier: MIT
/* load_oracle: libbpf as the load oracle for corepy's load-parity tests.
 *
 *   load_oracle [-p PIN_ROOT] [-t PROG=TYPE:ATTACH]... OBJ [PROG]...
 *
 * Opens OBJ with libbpf (pin_root_path = PIN_ROOT), loads exactly the named programs (all of
 * them, '?'-sections included, when none is named), with -t setting a program's type and
 * expected attach type by number (for sections libbpf 1.1 does not know), and calls
 * bpf_object__load(). Prints, one record a line:
 *
 *   LIBBPF <line>                                    libbpf's warnings and info, a line each
 *   LOAD <err>                                       bpf_object__load()'s result
 *   MAP <id> <type> <key> <value> <max> <flags> <extra> <btf_key_id> <btf_value_id> <name>
 *                                                    each map of the object, then any other map
 *                                                    a program uses, from bpf_map_info
 *   MAPDATA <hex>                                    after a global data map's MAP line (one-element
 *                                                    ARRAY named <obj>.<section>): element 0
 *   PROG <name> <type> <id> <nr_func_info> <nr_line_info> <gpl> <btf_id> <attach_btf_id>
 *   TAG <hex>, SUBTAGS <hex>                         the program's tag, each subprogram's tag
 *   FUNCINFO <hex>, LINEINFO <hex>                   the kernel's func/line info records
 *   BTF <id> <hex>                                   the raw BTF of each btf_id above, once
 *   INSN <16 hex digits>                             each xlated instruction, the 8 bytes as stored
 *   LOADED <16 hex digits>                           each instruction libbpf gave BPF_PROG_LOAD
 *   MAPIDS <id>...                                   the program's used maps, in the kernel's order
 *
 * bpf_object__close() then releases every map and program; pins are left for the caller. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#define MAX_TYPED 64
#define MAX_MAPS 256

static struct {
	const char *prog;
	int type, attach;
} typed[MAX_TYPED];
static int n_typed;
static __u32 printed[MAX_MAPS];
static int n_printed;

static int print_info(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	char buf[16384], *line, *save = NULL;

	if (level == LIBBPF_DEBUG)
		return 0;
	vsnprintf(buf, sizeof(buf), fmt, ap);
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save))
		printf("LIBBPF %s\n", line);
	return 0;
}

static void print_hex(const char *label, const void *data, size_t size)
{
	const unsigned char *b = data;
	size_t i;

	printf("%s ", label);
	for (i = 0; i < size; i++)
		printf("%02x", b[i]);
	printf("\n");
}

static void print_map(int fd)
{
	struct bpf_map_info info;
	__u32 len = sizeof(info);
	int i;

	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(fd, &info, &len)) {
		printf("MAPERR %d\n", -errno);
		return;
	}
	for (i = 0; i < n_printed; i++)
		if (printed[i] == info.id)
			return;
	if (n_printed < MAX_MAPS)
		printed[n_printed++] = info.id;
	printf("MAP %u %u %u %u %u %u %llu %u %u %s\n", info.id, info.type, info.key_size, info.value_size,
	       info.max_entries, info.map_flags, (unsigned long long)info.map_extra, info.btf_key_type_id,
	       info.btf_value_type_id, info.name);
	if (info.type == BPF_MAP_TYPE_ARRAY && info.max_entries == 1 && strchr(info.name, '.')) {
		__u32 zero = 0;
		void *value = calloc(1, info.value_size);

		if (value && bpf_map_lookup_elem(fd, &zero, value) == 0)
			print_hex("MAPDATA", value, info.value_size);
		else
			printf("MAPERR %d\n", value ? -errno : -ENOMEM);
		free(value);
	}
}

static __u32 printed_btf;

static void print_btf(__u32 id)
{
	struct bpf_btf_info info;
	__u32 len = sizeof(info), size, i;
	unsigned char *blob;
	int fd;

	if (!id || id == printed_btf)
		return;
	printed_btf = id;
	fd = bpf_btf_get_fd_by_id(id);
	if (fd < 0) {
		printf("BTFERR %d\n", -errno);
		return;
	}
	memset(&info, 0, sizeof(info));
	if (bpf_obj_get_info_by_fd(fd, &info, &len)) {
		printf("BTFERR %d\n", -errno);
		close(fd);
		return;
	}
	size = info.btf_size;
	blob = malloc(size + 1);
	memset(&info, 0, sizeof(info));
	info.btf = (__u64)(unsigned long)blob;
	info.btf_size = size;
	len = sizeof(info);
	if (!blob || bpf_obj_get_info_by_fd(fd, &info, &len)) {
		printf("BTFERR %d\n", blob ? -errno : -ENOMEM);
	} else {
		printf("BTF %u ", id);
		for (i = 0; i < size && i < info.btf_size; i++)
			printf("%02x", blob[i]);
		printf("\n");
	}
	free(blob);
	close(fd);
}

static int print_prog(struct bpf_program *prog)
{
	struct bpf_prog_info info, want;
	__u32 len = sizeof(info), i;
	void *insns, *func_info, *line_info, *tags;
	__u32 *map_ids;
	int fd = bpf_program__fd(prog), err = 0;

	memset(&want, 0, sizeof(want));
	if (bpf_obj_get_info_by_fd(fd, &want, &len))
		return -errno;
	insns = calloc(want.xlated_prog_len + 1, 1);
	map_ids = calloc(want.nr_map_ids + 1, sizeof(*map_ids));
	func_info = calloc(want.nr_func_info + 1, want.func_info_rec_size);
	line_info = calloc(want.nr_line_info + 1, want.line_info_rec_size);
	tags = calloc(want.nr_prog_tags + 1, BPF_TAG_SIZE);
	memset(&info, 0, sizeof(info));
	info.xlated_prog_len = want.xlated_prog_len;
	info.xlated_prog_insns = (__u64)(unsigned long)insns;
	info.nr_map_ids = want.nr_map_ids;
	info.map_ids = (__u64)(unsigned long)map_ids;
	info.nr_func_info = want.nr_func_info;
	info.func_info_rec_size = want.func_info_rec_size;
	info.func_info = (__u64)(unsigned long)func_info;
	info.nr_line_info = want.nr_line_info;
	info.line_info_rec_size = want.line_info_rec_size;
	info.line_info = (__u64)(unsigned long)line_info;
	info.nr_prog_tags = want.nr_prog_tags;
	info.prog_tags = (__u64)(unsigned long)tags;
	len = sizeof(info);
	if (!insns || !map_ids || !func_info || !line_info || !tags)
		err = -ENOMEM;
	else if (bpf_obj_get_info_by_fd(fd, &info, &len))
		err = -errno;
	else if (info.xlated_prog_len != want.xlated_prog_len || info.nr_map_ids != want.nr_map_ids ||
		 info.nr_func_info != want.nr_func_info || info.nr_line_info != want.nr_line_info ||
		 info.nr_prog_tags != want.nr_prog_tags)
		err = -EAGAIN; /* changed between the two calls: cannot happen to a loaded program */
	if (err)
		goto out;
	printf("PROG %s %u %u %u %u %u %u %u\n", bpf_program__name(prog), info.type, info.id,
	       info.nr_func_info, info.nr_line_info, info.gpl_compatible, info.btf_id, info.attach_btf_id);
	print_hex("TAG", info.tag, BPF_TAG_SIZE);
	print_hex("SUBTAGS", tags, (size_t)info.nr_prog_tags * BPF_TAG_SIZE);
	print_hex("FUNCINFO", func_info, (size_t)info.nr_func_info * info.func_info_rec_size);
	print_hex("LINEINFO", line_info, (size_t)info.nr_line_info * info.line_info_rec_size);
	for (i = 0; i < info.xlated_prog_len / 8; i++)
		print_hex("INSN", (char *)insns + 8 * i, 8);
	for (i = 0; i < bpf_program__insn_cnt(prog); i++)
		print_hex("LOADED", bpf_program__insns(prog) + i, 8);
	print_btf(info.btf_id);
	printf("MAPIDS");
	for (i = 0; i < info.nr_map_ids; i++)
		printf(" %u", map_ids[i]);
	printf("\n");
	for (i = 0; i < info.nr_map_ids; i++) {
		int map_fd = bpf_map_get_fd_by_id(map_ids[i]);

		if (map_fd < 0) {
			printf("MAPERR %d\n", -errno);
			continue;
		}
		print_map(map_fd);
		close(map_fd);
	}
out:
	free(insns);
	free(map_ids);
	free(func_info);
	free(line_info);
	free(tags);
	return err;
}

int main(int argc, char **argv)
{
	const char *pin_root = NULL;
	struct bpf_program *prog;
	struct bpf_object *obj;
	struct bpf_map *map;
	int err, opt, i;

	while ((opt = getopt(argc, argv, "p:t:")) != -1) {
		char *eq, *colon;

		switch (opt) {
		case 'p':
			pin_root = optarg;
			break;
		case 't':
			eq = strchr(optarg, '=');
			colon = eq ? strchr(eq, ':') : NULL;
			if (!colon || n_typed == MAX_TYPED)
				goto usage;
			*eq = 0;
			typed[n_typed].prog = optarg;
			typed[n_typed].type = atoi(eq + 1);
			typed[n_typed].attach = atoi(colon + 1);
			n_typed++;
			break;
		default:
			goto usage;
		}
	}
	if (optind >= argc)
		goto usage;
	setvbuf(stdout, NULL, _IOLBF, 0);
	libbpf_set_print(print_info);
	LIBBPF_OPTS(bpf_object_open_opts, opts, .pin_root_path = pin_root);
	obj = bpf_object__open_file(argv[optind], &opts);
	err = libbpf_get_error(obj);
	if (err) {
		printf("OPEN %d\n", err);
		return 1;
	}
	bpf_object__for_each_program(prog, obj) {
		int want = optind + 1 == argc;

		for (i = optind + 1; i < argc; i++)
			want |= strcmp(argv[i], bpf_program__name(prog)) == 0;
		bpf_program__set_autoload(prog, want);
		for (i = 0; i < n_typed; i++) {
			if (strcmp(typed[i].prog, bpf_program__name(prog)) != 0)
				continue;
			bpf_program__set_type(prog, typed[i].type);
			bpf_program__set_expected_attach_type(prog, typed[i].attach);
		}
	}
	err = bpf_object__load(obj);
	printf("LOAD %d\n", err);
	if (!err) {
		bpf_object__for_each_map(map, obj)
			print_map(bpf_map__fd(map));
		bpf_object__for_each_program(prog, obj) {
			if (!bpf_program__autoload(prog))
				continue;
			err = print_prog(prog);
			if (err)
				printf("PROGERR %s %d\n", bpf_program__name(prog), err);
		}
	}
	bpf_object__close(obj);
	return 0;
usage:
	fprintf(stderr, "usage: %s [-p PIN_ROOT] [-t PROG=TYPE:ATTACH]... OBJ [PROG]...\n", argv[0]);
	return 2;
}
