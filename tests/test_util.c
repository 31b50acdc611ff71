/* test_util.c: NIP checksum, hex, durations, sizes, secret files, buffers. */
#include "config.h"

#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include "log.h"
#include "util.h"
#include "tap.h"

static void
test_nip(void)
{
	static const struct { const char *nip; int valid; } t[] = {
		{ "5265877635", 1 },	/* seller of the official FA(3) sample */
		{ "1234563218", 1 },
		{ "5265877636", 0 },	/* wrong check digit */
		{ "526587763", 0 },	/* too short */
		{ "52658776350", 0 },	/* too long */
		{ "52658a7635", 0 },	/* not a digit */
		{ "", 0 },
		{ "0000000000", 1 },
		{ "1234567890", 0 },	/* sum mod 11 == 10 never valid */
	};
	size_t i;

	for (i = 0; i < nitems(t); i++)
		is_int(nip_valid(t[i].nip), t[i].valid, "nip_valid(%s)", t[i].nip);
	ok(!nip_valid(NULL), "nip_valid(NULL)");
}

static void
test_hex(void)
{
	unsigned char in[4] = { 0x00, 0xab, 0x7f, 0xff }, out[4];
	char h[9];

	hex_encode(in, 4, h);
	is_str(h, "00ab7fff", "hex_encode");
	ok(hex_decode("00AB7fff", out, 4) == 0 && memcmp(in, out, 4) == 0,
	    "hex_decode round trip");
	ok(hex_decode("00ab7ff", out, 4) == -1, "hex_decode short");
	ok(hex_decode("00ab7fgf", out, 4) == -1, "hex_decode bad digit");
}

static void
test_parse(void)
{
	is_int(parse_duration_ms("30"), 30000, "bare seconds");
	is_int(parse_duration_ms("30s"), 30000, "seconds");
	is_int(parse_duration_ms("250ms"), 250, "milliseconds");
	is_int(parse_duration_ms("5m"), 300000, "minutes");
	is_int(parse_duration_ms("2h"), 7200000, "hours");
	is_int(parse_duration_ms("1d"), 86400000, "days");
	is_int(parse_duration_ms("-1"), -1, "negative refused");
	is_int(parse_duration_ms("5x"), -1, "bad unit refused");
	is_int(parse_duration_ms(""), -1, "empty refused");
	is_int(parse_size("1M"), 1048576, "1M");
	is_int(parse_size("64K"), 65536, "64K");
	is_int(parse_size("2GiB"), 2147483648LL, "2GiB");
	is_int(parse_size("512"), 512, "bytes");
	is_int(parse_size("1Q"), -1, "bad unit");
}

static void
test_secret(void)
{
	char path[] = "/tmp/ksefd-test-secretXXXXXX", err[256];
	char *s;
	int fd = mkstemp(path);

	ok(fd != -1, "mkstemp");
	ok(write(fd, "tok|en\n", 7) == 7, "write secret");
	close(fd);
	chmod(path, 0600);
	s = file_read_secret(path, err, sizeof(err));
	is_str(s, "tok|en", "secret read, newline stripped");
	free(s);
	chmod(path, 0640);
	s = file_read_secret(path, err, sizeof(err));
	ok(s == NULL && strstr(err, "group or others") != NULL,
	    "group-readable secret refused: %s", err);
	chmod(path, 0604);
	s = file_read_secret(path, err, sizeof(err));
	ok(s == NULL, "world-readable secret refused");
	unlink(path);
	s = file_read_secret(path, err, sizeof(err));
	ok(s == NULL && strstr(err, "cannot open") != NULL, "missing secret");
}

static void
test_buf(void)
{
	struct buf b;
	size_t i, len;
	unsigned char *p;

	buf_init(&b);
	for (i = 0; i < 1000; i++)
		buf_addf(&b, "%zu,", i);
	ok(b.len > 3000 && b.data[b.len] == '\0', "buf grows, stays terminated");
	p = buf_release(&b, &len);
	ok(p != NULL && len > 3000 && b.data == NULL, "buf_release");
	free(p);
	is_str(log_escape("a\nb\\\x01", 5, 100), "a\\x0ab\\x5c\\x01",
	    "log_escape escapes control bytes");
	is_str(log_escape("abcdef", 6, 3), "abc...", "log_escape truncates");
}

int
main(void)
{
	test_nip();
	test_hex();
	test_parse();
	test_secret();
	test_buf();
	return tap_done();
}
