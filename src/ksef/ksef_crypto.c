/*
 * ksef_crypto.c: the cryptography KSeF asks of a client (API.md section 3),
 * on OpenSSL's EVP interface: SHA-256 in Base64, RSA-OAEP-SHA256 (MGF1
 * SHA-256, empty label) with the key of a DER certificate given in Base64,
 * AES-256-CBC with PKCS#7 padding (the IV is not prepended), random bytes.
 */
#include "config.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "log.h"
#include "util.h"
#include "ksef_int.h"

/* Standard Base64 with padding, NUL-terminated.  Caller frees. */
char *
ksef_b64_encode(const void *data, size_t len)
{
	char *out;

	if (len > (SIZE_MAX / 4) * 3 - 3 || len > INT_MAX)
		fatalx("ksef: base64 input of %zu bytes too large", len);
	out = xmalloc(4 * ((len + 2) / 3) + 1);
	EVP_EncodeBlock((unsigned char *)out, data, (int)len);
	return out;
}

/*
 * Strict standard Base64: a multiple of 4 characters of the alphabet,
 * '=' only as the last one or two.  -1 on anything else (OpenSSL's decoder
 * alone would skip whitespace).  Caller frees *out.
 */
int
ksef_b64_decode(const char *s, size_t len, unsigned char **out, size_t *outlen)
{
	static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "abcdefghijklmnopqrstuvwxyz0123456789+/";
	unsigned char *o;
	size_t pad = 0, i;
	int n;

	if (len % 4 != 0 || len > INT_MAX)
		return -1;
	while (pad < 2 && pad < len && s[len - 1 - pad] == '=')
		pad++;
	for (i = 0; i < len - pad; i++)
		if (s[i] == '\0' || strchr(alphabet, s[i]) == NULL)
			return -1;
	o = xmalloc(len / 4 * 3 + 1);
	if ((n = EVP_DecodeBlock(o, (const unsigned char *)s, (int)len)) < 0 ||
	    (size_t)n < pad) {
		free(o);
		return -1;
	}
	n -= (int)pad;
	o[n] = '\0';
	*out = o;
	*outlen = (size_t)n;
	return 0;
}

void
ksef_sha256(const void *data, size_t len, unsigned char out[KSEF_SHA_LEN])
{
	unsigned int n = 0;

	if (EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) != 1 ||
	    n != KSEF_SHA_LEN)
		fatalx("ksef: SHA-256 failed");
}

/* Base64 of the SHA-256 of data: always 44 characters. */
void
ksef_sha256_b64(const void *data, size_t len, char out[KSEF_SHA_B64_LEN + 1])
{
	unsigned char md[KSEF_SHA_LEN];

	ksef_sha256(data, len, md);
	EVP_EncodeBlock((unsigned char *)out, md, KSEF_SHA_LEN);
}

void
ksef_random(void *out, size_t len)
{
	if (len > INT_MAX || RAND_bytes(out, (int)len) != 1)
		fatalx("ksef: no random bytes");
}

/* Describe the last OpenSSL error into err. */
static void
ksef_ssl_err(char *err, size_t errlen, const char *what)
{
	unsigned long e = ERR_get_error();
	char msg[160];

	if (e == 0)
		snprintf(err, errlen, "%s", what);
	else {
		ERR_error_string_n(e, msg, sizeof(msg));
		snprintf(err, errlen, "%s: %s", what, msg);
	}
	ERR_clear_error();
}

/*
 * The RSA public key of an X.509 certificate given as Base64 of its DER
 * encoding (no PEM armour), and its key id: Base64 SHA-256 of the
 * SubjectPublicKeyInfo DER.  NULL with a message in err for anything that
 * is not such a certificate with an RSA key.  Caller frees with EVP_PKEY_free.
 */
EVP_PKEY *
ksef_cert_pubkey(const char *cert_b64, char key_id[KSEF_SHA_B64_LEN + 1],
    char *err, size_t errlen)
{
	unsigned char *der = NULL, *spki = NULL;
	const unsigned char *p;
	size_t len;
	X509 *x = NULL;
	EVP_PKEY *pk = NULL;
	int n;

	if (ksef_b64_decode(cert_b64, strlen(cert_b64), &der, &len) == -1) {
		snprintf(err, errlen, "certificate is not valid Base64");
		return NULL;
	}
	p = der;
	if (len > LONG_MAX || (x = d2i_X509(NULL, &p, (long)len)) == NULL ||
	    p != der + len) {
		ksef_ssl_err(err, errlen, "certificate is not one DER X.509");
		goto out;
	}
	if ((pk = X509_get_pubkey(x)) == NULL) {
		ksef_ssl_err(err, errlen, "certificate has no usable public key");
		goto out;
	}
	if (EVP_PKEY_get_base_id(pk) != EVP_PKEY_RSA) {
		snprintf(err, errlen, "certificate key is not RSA (unsupported)");
		EVP_PKEY_free(pk);
		pk = NULL;
		goto out;
	}
	if ((n = i2d_PUBKEY(pk, &spki)) <= 0) {
		ksef_ssl_err(err, errlen, "cannot encode the public key");
		EVP_PKEY_free(pk);
		pk = NULL;
		goto out;
	}
	ksef_sha256_b64(spki, (size_t)n, key_id);
	OPENSSL_free(spki);
out:
	X509_free(x);
	free(der);
	return pk;
}

/*
 * RSAES-OAEP with SHA-256 and MGF1-SHA-256, empty label, in Base64.
 * NULL with a message in err on failure.  Caller frees.
 */
char *
ksef_rsa_oaep_b64(EVP_PKEY *pk, const void *in, size_t len, char *err,
    size_t errlen)
{
	EVP_PKEY_CTX *c;
	unsigned char *out = NULL;
	size_t outlen = 0;
	char *b64 = NULL;

	if ((c = EVP_PKEY_CTX_new(pk, NULL)) == NULL ||
	    EVP_PKEY_encrypt_init(c) != 1 ||
	    EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_OAEP_PADDING) != 1 ||
	    EVP_PKEY_CTX_set_rsa_oaep_md(c, EVP_sha256()) != 1 ||
	    EVP_PKEY_CTX_set_rsa_mgf1_md(c, EVP_sha256()) != 1 ||
	    EVP_PKEY_encrypt(c, NULL, &outlen, in, len) != 1) {
		ksef_ssl_err(err, errlen, "RSA-OAEP setup");
		goto out;
	}
	out = xmalloc(outlen);
	if (EVP_PKEY_encrypt(c, out, &outlen, in, len) != 1) {
		ksef_ssl_err(err, errlen, "RSA-OAEP encryption");
		goto out;
	}
	b64 = ksef_b64_encode(out, outlen);
out:
	if (out != NULL)
		explicit_wipe(out, outlen);
	free(out);
	EVP_PKEY_CTX_free(c);
	return b64;
}

/* Bytes AES-256-CBC with PKCS#7 turns `plain` bytes into. */
size_t
ksef_aes_size(size_t plain)
{
	return (plain / 16 + 1) * 16;
}

/*
 * AES-256-CBC/PKCS#7 of data into *out (exactly ksef_aes_size(len) bytes,
 * IV not prepended).  Caller frees *out.
 */
void
ksef_aes_encrypt(const unsigned char key[KSEF_AES_KEY_LEN],
    const unsigned char iv[KSEF_AES_IV_LEN], const void *data, size_t len,
    unsigned char **out, size_t *outlen)
{
	EVP_CIPHER_CTX *c;
	unsigned char *o;
	int n1 = 0, n2 = 0;

	if (len > INT_MAX - 32)
		fatalx("ksef: %zu bytes too large to encrypt", len);
	o = xmalloc(ksef_aes_size(len));
	if ((c = EVP_CIPHER_CTX_new()) == NULL ||
	    EVP_EncryptInit_ex(c, EVP_aes_256_cbc(), NULL, key, iv) != 1 ||
	    EVP_EncryptUpdate(c, o, &n1, data, (int)len) != 1 ||
	    EVP_EncryptFinal_ex(c, o + n1, &n2) != 1 ||
	    (size_t)(n1 + n2) != ksef_aes_size(len))
		fatalx("ksef: AES-256-CBC encryption failed");
	EVP_CIPHER_CTX_free(c);
	*out = o;
	*outlen = (size_t)(n1 + n2);
}
