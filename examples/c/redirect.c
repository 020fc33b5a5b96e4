/*
 * Redirects through the C API (run by tests/c_client.rs against `zonehost serve
 * --dev-cluster 2 --second-login take-over`): player s logs in on server A; a second client
 * of s logs in on server B, which redirects it to A (the owner of s); the library follows
 * (ZH_EVENT_REDIRECTED, then ZH_EVENT_WELCOME from A), and A closes the first session
 * (ZH_EVENT_DISCONNECTED with close code 4, taken over).
 *
 * Arguments: ADDRESS_A ADDRESS_B CERT_DER TOKEN_1 TOKEN_2 (both tokens for the same player).
 * Prints key=value lines; exit status 0 when everything above happened.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "zonehost.h"

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static unsigned char cert[65536];
static size_t cert_len;

static ZhClient connect_to(const char *address, const char *token) {
    ZhConfig c = {0};
    c.server_address = address;
    c.token = token;
    c.client_name = "redirect.c";
    c.cert_der = cert;
    c.cert_der_len = cert_len;
    ZhClient h = 0;
    if (zh_client_create(&c, &h) != ZH_OK || zh_connect(h) != ZH_OK) {
        char msg[256] = "";
        zh_last_error(msg, sizeof msg, NULL);
        fprintf(stderr, "create/connect %s: %s\n", address, msg);
        exit(1);
    }
    return h;
}

/* Polls `h` until an event of `kind` (or a disconnect, or 30 s); returns its kind. */
static uint32_t wait_for(ZhClient h, uint32_t kind, ZhEvent *ev) {
    for (int i = 0; i < 15000; i++) {
        if (zh_poll(h, ev) != ZH_OK) return ZH_EVENT_NONE;
        if (ev->kind == kind || ev->kind == ZH_EVENT_DISCONNECTED) return ev->kind;
        if (ev->kind == ZH_EVENT_REDIRECTED)
            printf("redirected_to=%s after_welcome=%u\n", ev->redirect.address.ptr,
                   ev->redirect.after_welcome);
        if (ev->kind == ZH_EVENT_REJECTED)
            printf("rejected=%s %s\n", ev->rejected.code_name.ptr, ev->rejected.reason.ptr);
        if (ev->kind == ZH_EVENT_NONE) sleep_ms(2);
    }
    return ZH_EVENT_NONE;
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s ADDRESS_A ADDRESS_B CERT_DER TOKEN_1 TOKEN_2\n", argv[0]);
        return 2;
    }
    FILE *f = fopen(argv[3], "rb");
    if (!f) return 2;
    cert_len = fread(cert, 1, sizeof cert, f);
    fclose(f);

    ZhEvent ev;
    ZhClient first = connect_to(argv[1], argv[4]);
    int ok = wait_for(first, ZH_EVENT_WELCOME, &ev) == ZH_EVENT_WELCOME;
    printf("first_welcomed=%d first_redirects=%u\n", ok, ok ? ev.welcome.redirects : 0);

    ZhClient second = connect_to(argv[2], argv[5]);
    int welcomed = wait_for(second, ZH_EVENT_WELCOME, &ev) == ZH_EVENT_WELCOME;
    uint32_t redirects = welcomed ? ev.welcome.redirects : 0;
    printf("second_welcomed=%d\nsecond_redirects=%u\n", welcomed, redirects);

    int taken_over = wait_for(first, ZH_EVENT_DISCONNECTED, &ev) == ZH_EVENT_DISCONNECTED;
    long long code = taken_over && ev.disconnected.close_code != ZH_NO_CLOSE_CODE
                         ? (long long)ev.disconnected.close_code
                         : -1;
    printf("first_disconnect_code=%lld (%s)\n", code, taken_over ? ev.disconnected.reason.ptr : "");

    zh_close(second);
    wait_for(second, ZH_EVENT_DISCONNECTED, &ev);
    zh_client_free(second);
    zh_client_free(first);
    return ok && welcomed && redirects == 1 && code == 4 ? 0 : 1;
}
