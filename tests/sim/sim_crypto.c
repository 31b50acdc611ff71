/*
 * sim_crypto.c: the simulator's own crypto and encodings, straight on OpenSSL
 * EVP (deliberately not shared with src/ksef/): Base64, SHA-256, HMAC, CRC-8,
 * the RSA keys with their self-signed certificates, RSA-OAEP and AES-CBC.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>
#include <openssl/x509.h>

#include "log.h"
#include "sim.h"

static const char b64chars[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Encode with the given alphabet; pad adds '='. Caller frees. */
static char *
b64_encode_with(const void *p, size_t n, const char *alpha, int pad)
{
	const unsigned char *s = p;
	char *out = xmalloc(4 * ((n + 2) / 3) + 1), *o = out;
	size_t i;

	for (i = 0; i + 2 < n; i += 3) {
		*o++ = alpha[s[i] >> 2];
		*o++ = alpha[((s[i] & 3) << 4) | (s[i + 1] >> 4)];
		*o++ = alpha[((s[i + 1] & 15) << 2) | (s[i + 2] >> 6)];
		*o++ = alpha[s[i + 2] & 63];
	}
	if (n - i == 1) {
		*o++ = alpha[s[i] >> 2];
		*o++ = alpha[(s[i] & 3) << 4];
		if (pad) {
			*o++ = '=';
			*o++ = '=';
		}
	} else if (n - i == 2) {
		*o++ = alpha[s[i] >> 2];
		*o++ = alpha[((s[i] & 3) << 4) | (s[i + 1] >> 4)];
		*o++ = alpha[(s[i + 1] & 15) << 2];
		if (pad)
			*o++ = '=';
	}
	*o = '\0';
	return out;
}

char *
sim_b64_encode(const void *p, size_t n)
{
	return b64_encode_with(p, n, b64chars, 1);
}

char *
sim_b64url_encode(const void *p, size_t n)
{
	return b64_encode_with(p, n,
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", 0);
}

/* Value of a Base64 digit, 64 for anything else; built on first use. */
static unsigned char b64_table[256];

static void
b64_table_init(void)
{
	const char *d = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	    "0123456789+/";
	int i;

	memset(b64_table, 64, sizeof(b64_table));
	for (i = 0; i < 64; i++)
		b64_table[(unsigned char)d[i]] = (unsigned char)i;
}

/* Strict Base64 (canonical padding): 0, or -1 for anything else. */
int
sim_b64_decode(const char *s, size_t n, unsigned char **outp, size_t *outlen)
{
	const unsigned char *in = (const unsigned char *)s;
	unsigned char *out;
	size_t i, o = 0, pad = 0;
	unsigned v[4];
	int k;

	*outp = NULL;
	*outlen = 0;
	if (n % 4 != 0)
		return -1;
	if (b64_table['='] != 64)
		b64_table_init();
	if (n > 0 && s[n - 1] == '=')
		pad++;
	if (pad == 1 && n > 1 && s[n - 2] == '=')
		pad++;
	out = xmalloc(n / 4 * 3 + 1);
	for (i = 0; i < n; i += 4) {
		for (k = 0; k < 4; k++) {
			if (i + k >= n - pad) {
				v[k] = 0;	/* the padding */
				continue;
			}
			if ((v[k] = b64_table[in[i + k]]) == 64) {
				free(out);
				return -1;
			}
		}
		out[o++] = (unsigned char)(v[0] << 2 | v[1] >> 4);
		out[o++] = (unsigned char)(v[1] << 4 | v[2] >> 2);
		out[o++] = (unsigned char)(v[2] << 6 | v[3]);
	}
	/* The bits dropped by the padding must be zero (canonical form). */
	if ((pad == 1 && (v[2] & 3) != 0) || (pad == 2 && (v[1] & 15) != 0)) {
		free(out);
		return -1;
	}
	*outp = out;
	*outlen = o - pad;
	return 0;
}

void
sim_sha256(const void *p, size_t n, unsigned char out[32])
{
	SHA256(p, n, out);
}

void
sim_sha256_b64(const void *p, size_t n, char out[48])
{
	unsigned char md[32];
	char *s;

	sim_sha256(p, n, md);
	s = sim_b64_encode(md, 32);
	snprintf(out, 48, "%s", s);
	free(s);
}

void
sim_hmac(const void *key, size_t klen, const void *p, size_t n, unsigned char out[32])
{
	unsigned int len = 32;

	if (HMAC(EVP_sha256(), key, (int)klen, p, n, out, &len) == NULL)
		fatalx("sim: HMAC failed");
}

void
sim_random(void *p, size_t n)
{
	if (RAND_bytes(p, (int)n) != 1)
		fatalx("sim: RAND_bytes failed");
}

uint8_t
sim_crc8(const void *p, size_t n)
{
	const unsigned char *s = p;
	uint8_t crc = 0;
	int b;

	while (n--) {
		crc ^= *s++;
		for (b = 0; b < 8; b++)
			crc = (crc & 0x80) ? (uint8_t)((crc << 1) ^ 0x07) : (uint8_t)(crc << 1);
	}
	return crc;
}

static int64_t
asn1_time_ms(const ASN1_TIME *t)
{
	struct tm tm;

	if (ASN1_TIME_to_tm(t, &tm) != 1)
		return 0;
	return (int64_t)timegm(&tm) * 1000;
}

/* Fill the derived fields (DER Base64, ids, validity) from key and certificate. */
static int
key_describe(struct sim_key *k, X509 *x)
{
	unsigned char *der = NULL;
	int n;

	if ((n = i2d_X509(x, &der)) <= 0)
		return -1;
	k->cert_b64 = sim_b64_encode(der, (size_t)n);
	sim_sha256_b64(der, (size_t)n, k->cert_id);
	OPENSSL_free(der);
	der = NULL;
	if ((n = i2d_PUBKEY(k->pkey, &der)) <= 0)
		return -1;
	sim_sha256_b64(der, (size_t)n, k->key_id);
	OPENSSL_free(der);
	k->valid_from = asn1_time_ms(X509_get0_notBefore(x));
	k->valid_to = asn1_time_ms(X509_get0_notAfter(x));
	return 0;
}

/* Write a PEM object to path with the given mode. */
static int
pem_save(const char *path, int mode, int (*wr)(FILE *, void *), void *obj)
{
	FILE *f;
	int fd, ok;

	if ((fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode)) == -1)
		return -1;
	if ((f = fdopen(fd, "w")) == NULL) {
		close(fd);
		return -1;
	}
	ok = wr(f, obj);
	if (fclose(f) != 0)
		ok = 0;
	return ok ? 0 : -1;
}

static int
wr_key(FILE *f, void *k)
{
	return PEM_write_PrivateKey(f, k, NULL, NULL, 0, NULL, NULL);
}

static int
wr_x509(FILE *f, void *x)
{
	return PEM_write_X509(f, x);
}

int
sim_key_create(struct sim_key *k, const char *dir, const char *name, char *err, size_t errlen)
{
	X509 *x = NULL;
	X509_NAME *xn;
	unsigned char serial[8];
	BIGNUM *bn = NULL;
	char *path;
	int rc = -1;

	memset(k, 0, sizeof(*k));
	if ((k->pkey = EVP_RSA_gen(2048)) == NULL || (x = X509_new()) == NULL) {
		snprintf(err, errlen, "RSA key generation failed");
		goto out;
	}
	sim_random(serial, sizeof(serial));
	serial[0] &= 0x7f;
	bn = BN_bin2bn(serial, sizeof(serial), NULL);
	X509_set_version(x, 2);
	BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x));
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 4L * 365 * 86400);
	X509_set_pubkey(x, k->pkey);
	xn = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(xn, "C", MBSTRING_ASC, (const unsigned char *)"PL", -1, -1, 0);
	X509_NAME_add_entry_by_txt(xn, "CN", MBSTRING_UTF8,
	    (const unsigned char *)"Ministerstwo Finans\xc3\xb3w (ksef-sim)", -1, -1, 0);
	X509_NAME_add_entry_by_txt(xn, "OU", MBSTRING_ASC, (const unsigned char *)name, -1, -1, 0);
	X509_set_issuer_name(x, xn);
	if (X509_sign(x, k->pkey, EVP_sha256()) == 0 || key_describe(k, x) == -1) {
		snprintf(err, errlen, "self-signed certificate failed");
		goto out;
	}
	if (dir != NULL) {
		path = xasprintf("%s/%s.key", dir, name);
		rc = pem_save(path, 0600, wr_key, k->pkey);
		free(path);
		path = xasprintf("%s/%s.crt", dir, name);
		if (rc == 0)
			rc = pem_save(path, 0644, wr_x509, x);
		free(path);
		if (rc == -1) {
			snprintf(err, errlen, "cannot save key %s in %s: %s", name, dir,
			    strerror(errno));
			goto out;
		}
	}
	rc = 0;
out:
	BN_free(bn);
	X509_free(x);
	if (rc == -1)
		sim_key_free(k);
	return rc;
}

int
sim_key_load(struct sim_key *k, const char *dir, const char *name, char *err, size_t errlen)
{
	char *kp, *cp;
	FILE *f;
	X509 *x = NULL;
	int rc;

	if (dir == NULL)
		return sim_key_create(k, NULL, name, err, errlen);
	memset(k, 0, sizeof(*k));
	kp = xasprintf("%s/%s.key", dir, name);
	cp = xasprintf("%s/%s.crt", dir, name);
	if ((f = fopen(kp, "r")) == NULL) {
		free(kp);
		free(cp);
		if (errno != ENOENT) {
			snprintf(err, errlen, "%s/%s.key: %s", dir, name, strerror(errno));
			return -1;
		}
		return sim_key_create(k, dir, name, err, errlen);
	}
	k->pkey = PEM_read_PrivateKey(f, NULL, NULL, NULL);
	fclose(f);
	if ((f = fopen(cp, "r")) != NULL) {
		x = PEM_read_X509(f, NULL, NULL, NULL);
		fclose(f);
	}
	rc = (k->pkey == NULL || x == NULL || key_describe(k, x) == -1) ? -1 : 0;
	if (rc == -1) {
		snprintf(err, errlen, "%s or %s: not a valid PEM key/certificate", kp, cp);
		sim_key_free(k);
	}
	X509_free(x);
	free(kp);
	free(cp);
	return rc;
}

void
sim_key_free(struct sim_key *k)
{
	EVP_PKEY_free(k->pkey);
	free(k->cert_b64);
	memset(k, 0, sizeof(*k));
}

int
sim_oaep_decrypt(EVP_PKEY *pkey, const unsigned char *in, size_t inlen,
    unsigned char **outp, size_t *outlen)
{
	EVP_PKEY_CTX *ctx;
	unsigned char *out = NULL;
	size_t n = 0;
	int rc = -1;

	*outp = NULL;
	if ((ctx = EVP_PKEY_CTX_new(pkey, NULL)) == NULL)
		return -1;
	if (EVP_PKEY_decrypt_init(ctx) <= 0 ||
	    EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_OAEP_PADDING) <= 0 ||
	    EVP_PKEY_CTX_set_rsa_oaep_md(ctx, EVP_sha256()) <= 0 ||
	    EVP_PKEY_CTX_set_rsa_mgf1_md(ctx, EVP_sha256()) <= 0 ||
	    EVP_PKEY_decrypt(ctx, NULL, &n, in, inlen) <= 0)
		goto out;
	out = xmalloc(n + 1);
	if (EVP_PKEY_decrypt(ctx, out, &n, in, inlen) <= 0)
		goto out;
	out[n] = '\0';
	*outp = out;
	*outlen = n;
	out = NULL;
	rc = 0;
out:
	free(out);
	EVP_PKEY_CTX_free(ctx);
	return rc;
}

int
sim_aes_decrypt(const unsigned char key[32], const unsigned char iv[16],
    const unsigned char *in, size_t inlen, unsigned char **outp, size_t *outlen)
{
	EVP_CIPHER_CTX *ctx;
	unsigned char *out;
	int n1 = 0, n2 = 0, rc = -1;

	*outp = NULL;
	if (inlen == 0 || inlen % 16 != 0 || inlen > INT32_MAX)
		return -1;
	if ((ctx = EVP_CIPHER_CTX_new()) == NULL)
		return -1;
	out = xmalloc(inlen + 16);
	if (EVP_DecryptInit_ex(ctx, EVP_aes_256_cbc(), NULL, key, iv) == 1 &&
	    EVP_DecryptUpdate(ctx, out, &n1, in, (int)inlen) == 1 &&
	    EVP_DecryptFinal_ex(ctx, out + n1, &n2) == 1) {
		out[n1 + n2] = '\0';
		*outp = out;
		*outlen = (size_t)(n1 + n2);
		out = NULL;
		rc = 0;
	}
	free(out);
	EVP_CIPHER_CTX_free(ctx);
	return rc;
}
