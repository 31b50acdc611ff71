/*
 * test_ksef_crypto.c: the KSeF layer's crypto against independent checks:
 * SHA-256 and Base64 vectors, RSA-OAEP-SHA256 decrypted back here with a
 * key made by the test, AES-256-CBC against the NIST vector and sizes.
 */
#include "config.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "log.h"
#include "util.h"
#include "ksef/ksef_int.h"
#include "tap.h"

static void
test_sha_b64(void)
{
	char out[KSEF_SHA_B64_LEN + 1];
	static const struct { const char *in, *b64; } t[] = {
		{ "", "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=" },
		{ "abc", "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=" },
	};
	size_t i;

	for (i = 0; i < nitems(t); i++) {
		ksef_sha256_b64(t[i].in, strlen(t[i].in), out);
		is_str(out, t[i].b64, "SHA-256 Base64 of \"%s\"", t[i].in);
	}
}

static void
test_b64(void)
{
	static const char *const bad[] = { "abc", "ab=c", "a===", "ab c",
	    "ab\ncd==", "ab*d", "=abc", "abcd=", "YQ==YQ==" };
	unsigned char *out;
	size_t len, i;
	char *s;

	s = ksef_b64_encode("\x00\xff\x10", 3);
	is_str(s, "AP8Q", "encode 3 bytes");
	free(s);
	s = ksef_b64_encode("ab", 2);
	is_str(s, "YWI=", "encode with padding");
	ok(ksef_b64_decode(s, strlen(s), &out, &len) == 0 && len == 2 &&
	    memcmp(out, "ab", 2) == 0, "decode round trip");
	free(out);
	free(s);
	ok(ksef_b64_decode("", 0, &out, &len) == 0 && len == 0,
	    "decode empty");
	free(out);
	ok(ksef_b64_decode("YQ==", 4, &out, &len) == 0 && len == 1 &&
	    out[0] == 'a', "decode two pad");
	free(out);
	for (i = 0; i < nitems(bad); i++)
		ok(ksef_b64_decode(bad[i], strlen(bad[i]), &out, &len) == -1,
		    "decode refuses bad input %zu", i);
}

/* A self-signed certificate for pk, as Base64 DER. */
static char *
make_cert_b64(EVP_PKEY *pk)
{
	X509 *x = X509_new();
	X509_NAME *n;
	unsigned char *der = NULL;
	char *b64;
	int len;

	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, pk);
	n = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC,
	    (const unsigned char *)"test", -1, -1, 0);
	X509_set_issuer_name(x, n);
	if (X509_sign(x, pk, EVP_sha256()) == 0)
		fatalx("X509_sign");
	len = i2d_X509(x, &der);
	b64 = ksef_b64_encode(der, (size_t)len);
	OPENSSL_free(der);
	X509_free(x);
	return b64;
}

/* Decrypt OAEP with the given hash; -1 on failure. */
static int
oaep_decrypt(EVP_PKEY *pk, const EVP_MD *md, const unsigned char *in,
    size_t len, unsigned char *out, size_t *outlen)
{
	EVP_PKEY_CTX *c = EVP_PKEY_CTX_new(pk, NULL);
	int rc = -1;

	if (EVP_PKEY_decrypt_init(c) == 1 &&
	    EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_OAEP_PADDING) == 1 &&
	    EVP_PKEY_CTX_set_rsa_oaep_md(c, md) == 1 &&
	    EVP_PKEY_CTX_set_rsa_mgf1_md(c, md) == 1 &&
	    EVP_PKEY_decrypt(c, out, outlen, in, len) == 1)
		rc = 0;
	EVP_PKEY_CTX_free(c);
	return rc;
}

static void
test_rsa(void)
{
	EVP_PKEY *key = EVP_RSA_gen(2048), *pub, *ec;
	char id[KSEF_SHA_B64_LEN + 1], want[KSEF_SHA_B64_LEN + 1], err[200];
	char *cert, *enc, *bad;
	unsigned char *ct, pt[512], *spki = NULL;
	size_t ctlen, ptlen;
	const char *msg = "token-secret|1752236636015";
	int n;

	if (key == NULL)
		fatalx("EVP_RSA_gen");
	cert = make_cert_b64(key);
	pub = ksef_cert_pubkey(cert, id, err, sizeof(err));
	ok(pub != NULL, "public key from a DER certificate in Base64");
	n = i2d_PUBKEY(key, &spki);
	ksef_sha256_b64(spki, (size_t)n, want);
	OPENSSL_free(spki);
	is_str(id, want, "key id is SHA-256 of the SubjectPublicKeyInfo");

	enc = ksef_rsa_oaep_b64(pub, msg, strlen(msg), err, sizeof(err));
	ok(enc != NULL && strlen(enc) == 344, "OAEP output is 256 bytes "
	    "in Base64");
	ok(ksef_b64_decode(enc, strlen(enc), &ct, &ctlen) == 0, "decodes");
	ptlen = sizeof(pt);
	ok(oaep_decrypt(key, EVP_sha256(), ct, ctlen, pt, &ptlen) == 0 &&
	    ptlen == strlen(msg) && memcmp(pt, msg, ptlen) == 0,
	    "decrypts back with OAEP SHA-256/MGF1 SHA-256");
	ptlen = sizeof(pt);
	ok(oaep_decrypt(key, EVP_sha1(), ct, ctlen, pt, &ptlen) == -1,
	    "does not decrypt with OAEP SHA-1");
	free(ct);
	free(enc);
	EVP_PKEY_free(pub);

	ok(ksef_cert_pubkey("not base64!", id, err, sizeof(err)) == NULL &&
	    strstr(err, "Base64") != NULL, "bad Base64 refused: %s", err);
	ok(ksef_cert_pubkey("AAAA", id, err, sizeof(err)) == NULL,
	    "garbage DER refused: %s", err);
	bad = xasprintf("%sAAAA", cert);
	ok(ksef_cert_pubkey(bad, id, err, sizeof(err)) == NULL,
	    "certificate with bytes after it refused: %s", err);
	free(bad);
	free(cert);
	ec = EVP_EC_gen("P-256");
	cert = make_cert_b64(ec);
	ok(ksef_cert_pubkey(cert, id, err, sizeof(err)) == NULL &&
	    strstr(err, "RSA") != NULL, "EC key refused: %s", err);
	free(cert);
	EVP_PKEY_free(ec);
	EVP_PKEY_free(key);
}

static void
test_aes(void)
{
	unsigned char key[32], iv[16], pt[16], want[16], *ct, *dec;
	size_t ctlen, i, sizes[] = { 0, 1, 15, 16, 17, 6480, 16037 };
	size_t want_sizes[] = { 16, 16, 16, 32, 32, 6496, 16048 };
	EVP_CIPHER_CTX *c;
	int n1, n2;

	/* NIST SP 800-38A F.2.5, first block. */
	hex_decode("603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a3"
	    "0914dff4", key, 32);
	hex_decode("000102030405060708090a0b0c0d0e0f", iv, 16);
	hex_decode("6bc1bee22e409f96e93d7e117393172a", pt, 16);
	hex_decode("f58c4c04d6e5f1ba779eabfb5f7bfbd6", want, 16);
	ksef_aes_encrypt(key, iv, pt, 16, &ct, &ctlen);
	ok(ctlen == 32 && memcmp(ct, want, 16) == 0,
	    "AES-256-CBC NIST vector, IV not prepended, padding block");
	free(ct);

	for (i = 0; i < nitems(sizes); i++)
		is_int(ksef_aes_size(sizes[i]), want_sizes[i],
		    "encrypted size of %zu bytes", sizes[i]);

	ksef_random(key, sizeof(key));
	ksef_random(iv, sizeof(iv));
	for (i = 0; i < nitems(sizes); i++) {
		unsigned char *plain = xmalloc(sizes[i] + 1);

		ksef_random(plain, sizes[i] + 1);
		ksef_aes_encrypt(key, iv, plain, sizes[i], &ct, &ctlen);
		dec = xmalloc(ctlen + 16);
		c = EVP_CIPHER_CTX_new();
		n1 = n2 = 0;
		ok(ctlen == ksef_aes_size(sizes[i]) &&
		    EVP_DecryptInit_ex(c, EVP_aes_256_cbc(), NULL, key, iv) &&
		    EVP_DecryptUpdate(c, dec, &n1, ct, (int)ctlen) &&
		    EVP_DecryptFinal_ex(c, dec + n1, &n2) &&
		    (size_t)(n1 + n2) == sizes[i] &&
		    memcmp(dec, plain, sizes[i]) == 0,
		    "AES round trip of %zu bytes", sizes[i]);
		EVP_CIPHER_CTX_free(c);
		free(dec);
		free(ct);
		free(plain);
	}
}

int
main(void)
{
	log_init("test_ksef_crypto", 1, LOG_LVL_WARN);
	test_sha_b64();
	test_b64();
	test_rsa();
	test_aes();
	return tap_done();
}
