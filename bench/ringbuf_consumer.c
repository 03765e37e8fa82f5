// SPDX-License-Identifier: MIT
/* libbpf side of bench/ringbuf.py: load fixtures/ringbuf_bench.bpf.o with libbpf, then
 * pre-fill the ring buffer (perf buffer) with bursts of struct bench_record on one CPU and
 * time ring_buffer__consume (perf_buffer__consume) draining them, the callback checking
 * the sequence numbers. Built by the bench: gcc -O2 ringbuf_consumer.c -lbpf.
 *
 * usage: ringbuf_consumer OBJ RING_BYTES PERF_PAGES BURST BURSTS_PER_ROUND ROUNDS CPU
 *        ringbuf_consumer produce N CPU RATE   (the live producer for the corepy consumer: prints
 *        its pid, waits for a line on stdin, then calls getpid() N times on CPU, at most RATE
 *        calls per second (0: flat out), prints produce_ns=..)
 * The perf buffer is opened with wakeup_events = WAKEUP_EVENTS (libbpf's default is 1: an
 * irq_work self-IPI per sample, a VM exit each here, which makes filling the buffer slow);
 * consumption is what is timed, so the raw-event interface walks the same records.
 * Last line: libbpf_ns=.. libbpf_best_ns=.. libbpf_records=.. libbpf_bad=.. libbpf_perf_ns=..
 *            libbpf_perf_best_ns=.. libbpf_perf_records=.. libbpf_perf_bad=.. libbpf_perf_lost=..
 *            (*_ns: all rounds' drains; *_best_ns: the fastest round's)
 */
#define _GNU_SOURCE
#include <bpf/bpf.h>
#include <bpf/btf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <linux/perf_event.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

struct bench_record {
	__u64 seq;
	__u64 ts_ns;
	__u32 cpu;
	__u32 pid;
	__u64 payload;
};

struct counts {
	__u64 records, bad, expect, lost;
};

static void die(const char *what)
{
	fprintf(stderr, "ringbuf_consumer: %s: %s\n", what, strerror(errno));
	exit(1);
}

static __u64 now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

static int on_ring(void *ctx, void *data, size_t size)
{
	struct counts *c = ctx;
	const struct bench_record *r = data;

	if (size < sizeof(*r) || r->seq != c->expect || r->payload != (r->seq ^ 0xc0dec0de))
		c->bad++;
	c->expect = r->seq + 1;
	c->records++;
	return 0;
}

#define WAKEUP_EVENTS 10000

/* perf_buffer__new_raw hands over each perf record; samples are header, u32 size, data */
static enum bpf_perf_event_ret on_perf(void *ctx, int cpu, struct perf_event_header *hdr)
{
	struct counts *c = ctx;

	if (hdr->type == PERF_RECORD_SAMPLE) {
		__u32 *size = (__u32 *)(hdr + 1);

		on_ring(ctx, size + 1, *size);
	} else if (hdr->type == PERF_RECORD_LOST) {
		c->lost += ((__u64 *)(hdr + 1))[1];
	}
	return LIBBPF_PERF_EVENT_CONT;
}

/* offset of global `name` in the object's DATASEC `sec` */
static long var_offset(struct bpf_object *obj, const char *sec, const char *name)
{
	const struct btf *btf = bpf_object__btf(obj);
	int id = btf__find_by_name_kind(btf, sec, BTF_KIND_DATASEC);
	const struct btf_type *t;
	const struct btf_var_secinfo *v;

	if (id < 0)
		return -1;
	t = btf__type_by_id(btf, id);
	v = btf_var_secinfos(t);
	for (int i = 0; i < btf_vlen(t); i++, v++)
		if (!strcmp(btf__name_by_offset(btf, btf__type_by_id(btf, v->type)->name_off), name))
			return v->offset;
	return -1;
}

static int burst(struct bpf_program *prog, int cpu)
{
	__u64 ctx[2] = {};
	LIBBPF_OPTS(bpf_test_run_opts, opts, .ctx_in = ctx, .ctx_size_in = sizeof(ctx),
		    .flags = BPF_F_TEST_RUN_ON_CPU, .cpu = cpu);

	return bpf_prog_test_run_opts(bpf_program__fd(prog), &opts);
}


static void pin(int cpu)
{
	cpu_set_t set;

	CPU_ZERO(&set);
	CPU_SET(cpu, &set);
	if (sched_setaffinity(0, sizeof(set), &set))
		die("sched_setaffinity");
}

static int produce(long n, int cpu, double rate)
{
	char line[16];

	pin(cpu);
	printf("%d\n", getpid());
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		return 1;
	__u64 t = now_ns();
	for (long i = 0; i < n; i++) {
		if (rate > 0 && !(i & 63))
			while (now_ns() - t < (__u64)(i / rate * 1e9))
				;
		syscall(SYS_getpid);
	}
	printf("produce_ns=%llu\n", (unsigned long long)(now_ns() - t));
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 5 && !strcmp(argv[1], "produce"))
		return produce(atol(argv[2]), atoi(argv[3]), atof(argv[4]));
	if (argc != 8) {
		fprintf(stderr, "usage: %s OBJ RING_BYTES PERF_PAGES BURST BURSTS_PER_ROUND ROUNDS CPU\n", argv[0]);
		return 2;
	}
	const char *path = argv[1];
	__u32 ring_bytes = strtoul(argv[2], NULL, 0), perf_pages = strtoul(argv[3], NULL, 0);
	__u32 burst_size = strtoul(argv[4], NULL, 0), bursts = strtoul(argv[5], NULL, 0);
	int rounds = atoi(argv[6]), cpu = atoi(argv[7]);

	pin(cpu);

	struct bpf_object *obj = bpf_object__open_file(path, NULL);
	if (!obj)
		die("bpf_object__open_file");
	bpf_map__set_max_entries(bpf_object__find_map_by_name(obj, "bench_rb"), ring_bytes);
	bpf_program__set_autoload(bpf_object__find_program_by_name(obj, "ringbuf_getpid"), false);
	bpf_program__set_autoload(bpf_object__find_program_by_name(obj, "perf_getpid"), false);
	struct bpf_map *data = NULL, *m;
	bpf_object__for_each_map(m, obj)
		if (strstr(bpf_map__name(m), ".data"))
			data = m;
	long off = var_offset(obj, ".data", "record_count");
	size_t data_size;
	if (!data || off < 0)
		die("no .data record_count");
	*(__u32 *)((char *)bpf_map__initial_value(data, &data_size) + off) = burst_size;
	if (bpf_object__load(obj))
		die("bpf_object__load");

	struct bpf_program *rb_prog = bpf_object__find_program_by_name(obj, "ringbuf_burst");
	struct bpf_program *pb_prog = bpf_object__find_program_by_name(obj, "perf_burst");
	struct counts rc = {}, pc = {};
	struct ring_buffer *rb = ring_buffer__new(bpf_map__fd(bpf_object__find_map_by_name(obj, "bench_rb")),
						  on_ring, &rc, NULL);
	struct perf_event_attr attr = {
		.type = PERF_TYPE_SOFTWARE, .config = PERF_COUNT_SW_BPF_OUTPUT, .size = sizeof(attr),
		.sample_type = PERF_SAMPLE_RAW, .sample_period = 1, .wakeup_events = WAKEUP_EVENTS,
	};
	struct perf_buffer *pb = perf_buffer__new_raw(bpf_map__fd(bpf_object__find_map_by_name(obj, "bench_pb")),
						      perf_pages, &attr, on_perf, &pc, NULL);
	if (!rb || !pb)
		die("ring_buffer__new/perf_buffer__new");

	__u64 ring_ns = 0, perf_ns = 0, ring_best = ~0ULL, perf_best = ~0ULL, dt;
	for (int r = 0; r < rounds; r++) {
		for (__u32 b = 0; b < bursts; b++)
			if (burst(rb_prog, cpu))
				die("test run ringbuf_burst");
		__u64 t = now_ns();
		if (ring_buffer__consume(rb) < 0)
			die("ring_buffer__consume");
		dt = now_ns() - t;
		ring_ns += dt;
		ring_best = dt < ring_best ? dt : ring_best;

		for (__u32 b = 0; b < bursts; b++)
			if (burst(pb_prog, cpu))
				die("test run perf_burst");
		t = now_ns();
		if (perf_buffer__consume(pb) < 0)
			die("perf_buffer__consume");
		dt = now_ns() - t;
		perf_ns += dt;
		perf_best = dt < perf_best ? dt : perf_best;
	}
	printf("libbpf_ns=%llu libbpf_best_ns=%llu libbpf_records=%llu libbpf_bad=%llu libbpf_perf_ns=%llu "
	       "libbpf_perf_best_ns=%llu libbpf_perf_records=%llu libbpf_perf_bad=%llu libbpf_perf_lost=%llu\n",
	       (unsigned long long)ring_ns, (unsigned long long)ring_best, (unsigned long long)rc.records,
	       (unsigned long long)rc.bad, (unsigned long long)perf_ns, (unsigned long long)perf_best,
	       (unsigned long long)pc.records, (unsigned long long)pc.bad, (unsigned long long)pc.lost);
	ring_buffer__free(rb);
	perf_buffer__free(pb);
	bpf_object__close(obj);
	return 0;
}
