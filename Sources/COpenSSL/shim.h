// Swift cannot call OpenSSL's function-like macros; these inline wrappers expose them.
#ifndef MICROSCALE_COPENSSL_SHIM_H
#define MICROSCALE_COPENSSL_SHIM_H
#include <openssl/ssl.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ec.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <openssl/bio.h>
#include <openssl/rand.h>
#include <openssl/bn.h>
#include <openssl/hmac.h>

static inline long ms_SSL_CTX_set_min_proto_version(SSL_CTX *ctx, int version) {
    return SSL_CTX_set_min_proto_version(ctx, version);
}
static inline long ms_SSL_CTX_set_max_proto_version(SSL_CTX *ctx, int version) {
    return SSL_CTX_set_max_proto_version(ctx, version);
}
static inline long ms_SSL_CTX_set_mode(SSL_CTX *ctx, long mode) { return SSL_CTX_set_mode(ctx, mode); }
static inline long ms_SSL_CTX_set_session_cache_mode(SSL_CTX *ctx, long mode) {
    return SSL_CTX_set_session_cache_mode(ctx, mode);
}
static inline long ms_BIO_get_mem_data(BIO *bio, char **pp) { return BIO_get_mem_data(bio, pp); }
static inline int ms_BIO_pending(BIO *bio) { return (int)BIO_ctrl_pending(bio); }
static inline STACK_OF(GENERAL_NAME) *ms_X509_get_subject_alt_names(X509 *cert) {
    return (STACK_OF(GENERAL_NAME) *)X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
}
static inline int ms_sk_GENERAL_NAME_num(STACK_OF(GENERAL_NAME) *names) { return sk_GENERAL_NAME_num(names); }
static inline GENERAL_NAME *ms_sk_GENERAL_NAME_value(STACK_OF(GENERAL_NAME) *names, int i) {
    return sk_GENERAL_NAME_value(names, i);
}
static inline void ms_GENERAL_NAMES_free(STACK_OF(GENERAL_NAME) *names) { GENERAL_NAMES_free(names); }
static inline STACK_OF(X509) *ms_sk_X509_new_null(void) { return sk_X509_new_null(); }
static inline int ms_sk_X509_push(STACK_OF(X509) *stack, X509 *cert) { return sk_X509_push(stack, cert); }
static inline void ms_sk_X509_pop_free(STACK_OF(X509) *stack) { sk_X509_pop_free(stack, X509_free); }
static inline int ms_SSL_set_tlsext_host_name(SSL *ssl, const char *name) { return SSL_set_tlsext_host_name(ssl, name); }
static inline void ms_SSL_CTX_disable_tickets(SSL_CTX *ctx) { SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET); SSL_CTX_set_num_tickets(ctx, 0); }
static inline X509 *ms_SSL_peer_leaf_from_chain(SSL *ssl) {
    STACK_OF(X509) *chain = SSL_get_peer_cert_chain(ssl);
    return (chain && sk_X509_num(chain) > 0) ? sk_X509_value(chain, 0) : NULL;
}
#endif
