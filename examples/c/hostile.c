/*
 * Hostile use of the zonehost client library: NULL pointers, unknown and freed handles,
 * buffers too small, calls after close. Every call must return its documented error code
 * (never crash); run by tests/c_client.rs, natively and under valgrind.
 *
 * Arguments: [ADDRESS CERT_DER TOKEN]: with them, the calls after close are also made on a
 * client that was connected and welcomed. Exit status: the number of failed checks.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "zonehost.h"

static int failures = 0;

static void expect(const char *what, int got, int want) {
    if (got == want) {
        printf("ok   %-60s %d\n", what, got);
    } else {
        char msg[256] = "";
        zh_last_error(msg, sizeof msg, NULL);
        printf("FAIL %-60s got %d, want %d (%s)\n", what, got, want, msg);
        failures++;
    }
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    static unsigned char buf[65536];
    *len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    return buf;
}

/* A client that trusts a fingerprint; never connected. */
static ZhClient offline_client(void) {
    ZhConfig c = {0};
    c.server_address = "127.0.0.1:9";
    c.token = "token";
    c.cert_fingerprint = "00000000000000000000000000000000"
                         "00000000000000000000000000000000";
    ZhClient h = 0;
    expect("create an offline client", zh_client_create(&c, &h), ZH_OK);
    return h;
}

static void null_pointers(void) {
    ZhClient h = 0;
    ZhConfig c = {0};
    expect("create(NULL config)", zh_client_create(NULL, &h), ZH_ERR_NULL_POINTER);
    c.server_address = "127.0.0.1:9";
    c.token = "t";
    c.cert_fingerprint = "00000000000000000000000000000000"
                         "00000000000000000000000000000000";
    expect("create(config, NULL out)", zh_client_create(&c, NULL), ZH_ERR_NULL_POINTER);
    c.server_address = NULL;
    expect("create(NULL server_address)", zh_client_create(&c, &h), ZH_ERR_NULL_POINTER);
    c.server_address = "127.0.0.1:9";
    c.token = NULL;
    expect("create(NULL token)", zh_client_create(&c, &h), ZH_ERR_NULL_POINTER);
    c.token = "t";
    c.cert_fingerprint = NULL;
    expect("create(no certificate, no fingerprint)", zh_client_create(&c, &h), ZH_ERR_INVALID_ARGUMENT);
    c.cert_fingerprint = "not hex";
    expect("create(bad fingerprint)", zh_client_create(&c, &h), ZH_ERR_INVALID_ARGUMENT);
    c.cert_fingerprint = "00000000000000000000000000000000"
                         "00000000000000000000000000000000";
    c.server_address = "no-port";
    expect("create(address without port)", zh_client_create(&c, &h), ZH_ERR_INVALID_ARGUMENT);
    expect("no handle was issued by the failed creates", (int)h, 0);

    h = offline_client();
    ZhEvent ev;
    const ZhWireEntity *entities = NULL;
    size_t n = 0;
    ZhEntity e;
    ZhItem item;
    ZhStr name;
    expect("poll(NULL event)", zh_poll(h, NULL), ZH_ERR_NULL_POINTER);
    expect("state(NULL out)", zh_state(h, NULL), ZH_ERR_NULL_POINTER);
    expect("stats(NULL out)", zh_stats(h, NULL), ZH_ERR_NULL_POINTER);
    expect("snapshot_entities(NULL, &n)", zh_snapshot_entities(h, NULL, &n), ZH_ERR_NULL_POINTER);
    expect("snapshot_entities(&p, NULL)", zh_snapshot_entities(h, &entities, NULL), ZH_ERR_NULL_POINTER);
    expect("snapshot_entity(0, NULL)", zh_snapshot_entity(h, 0, NULL), ZH_ERR_NULL_POINTER);
    expect("wire_entity_read(NULL, &e)", zh_wire_entity_read(NULL, &e), ZH_ERR_NULL_POINTER);
    expect("event_item(0, NULL)", zh_event_item(h, 0, NULL), ZH_ERR_NULL_POINTER);
    expect("event_name(0, NULL)", zh_event_name(h, 0, NULL), ZH_ERR_NULL_POINTER);
    expect("event_rect(0, NULL)", zh_event_rect(h, 0, NULL), ZH_ERR_NULL_POINTER);
    expect("request_party_invite(NULL name)", zh_request_party_invite(h, NULL, NULL), ZH_ERR_NULL_POINTER);
    expect("request_party_kick(NULL name)", zh_request_party_kick(h, NULL, NULL), ZH_ERR_NULL_POINTER);
    expect("resume_token(NULL buf, 8)", zh_resume_token(h, NULL, 8, NULL), ZH_ERR_NULL_POINTER);

    /* Nothing to read and wrong states are errors too, not crashes. */
    expect("snapshot_entities without a snapshot", zh_snapshot_entities(h, &entities, &n), ZH_ERR_NOT_FOUND);
    expect("snapshot_entity without a snapshot", zh_snapshot_entity(h, 0, &e), ZH_ERR_NOT_FOUND);
    expect("event_item without items", zh_event_item(h, 0, &item), ZH_ERR_NOT_FOUND);
    expect("event_name without names", zh_event_name(h, 3, &name), ZH_ERR_NOT_FOUND);
    ZhZoneRect rect;
    expect("event_rect without rectangles", zh_event_rect(h, 0, &rect), ZH_ERR_NOT_FOUND);
    expect("send_input before connecting", zh_send_input(h, 0, 0, 0, NULL), ZH_ERR_WRONG_STATE);
    expect("request_ping before connecting", zh_request_ping(h, 1, NULL), ZH_ERR_WRONG_STATE);
    expect("send_input axis out of range", zh_send_input(h, 1001, 0, 0, NULL), ZH_ERR_INVALID_ARGUMENT);
    expect("send_input unknown button", zh_send_input(h, 0, 0, 0x8000, NULL), ZH_ERR_INVALID_ARGUMENT);
    ZhInput batch[ZH_MAX_INPUTS_PER_DATAGRAM + 1] = {{0}};
    expect("send_inputs NULL", zh_send_inputs(h, NULL, 2, NULL), ZH_ERR_NULL_POINTER);
    expect("send_inputs none", zh_send_inputs(h, batch, 0, NULL), ZH_ERR_INVALID_ARGUMENT);
    expect("send_inputs too many", zh_send_inputs(h, batch, ZH_MAX_INPUTS_PER_DATAGRAM + 1, NULL), ZH_ERR_INVALID_ARGUMENT);
    batch[1].move_x = -1001;
    expect("send_inputs one axis out of range", zh_send_inputs(h, batch, 2, NULL), ZH_ERR_INVALID_ARGUMENT);
    batch[1].move_x = 0;
    expect("send_inputs before connecting", zh_send_inputs(h, batch, 2, NULL), ZH_ERR_WRONG_STATE);
    expect("poll with nothing waiting", zh_poll(h, &ev), ZH_OK);
    expect("... is ZH_EVENT_NONE", (int)ev.kind, ZH_EVENT_NONE);
    expect("free", zh_client_free(h), ZH_OK);
}

static void buffers(void) {
    ZhClient h = 0;
    ZhEvent ev;
    expect("poll(handle 0) sets a last error", zh_poll(0, &ev), ZH_ERR_INVALID_HANDLE);
    char small[4] = {'x', 'x', 'x', 'x'};
    size_t len = 0;
    expect("last_error into 4 bytes", zh_last_error(small, sizeof small, &len), ZH_ERR_BUFFER_TOO_SMALL);
    expect("... reports the needed length", len > sizeof small, 1);
    expect("... leaves the buffer untouched", small[0] == 'x' && small[3] == 'x', 1);
    size_t len2 = 0;
    expect("last_error(NULL, 0) asks the length", zh_last_error(NULL, 0, &len2), ZH_ERR_BUFFER_TOO_SMALL);
    expect("... the same length", len2 == len, 1);
    char *big = malloc(len + 1);
    expect("last_error into len + 1 bytes", zh_last_error(big, len + 1, NULL), ZH_OK);
    expect("... NUL-terminated, of that length", strlen(big) == len, 1);
    printf("     message: %s\n", big);
    free(big);
    expect("last_error(NULL, 8)", zh_last_error(NULL, 8, NULL), ZH_ERR_NULL_POINTER);

    h = offline_client();
    size_t tlen = 99;
    char tok[1];
    expect("resume_token into 0 bytes", zh_resume_token(h, tok, 0, &tlen), ZH_ERR_BUFFER_TOO_SMALL);
    expect("... needs the empty token's NUL only", tlen == 0, 1);
    expect("resume_token into 1 byte", zh_resume_token(h, tok, 1, &tlen), ZH_OK);
    expect("free", zh_client_free(h), ZH_OK);
}

static void after_close_offline(void) {
    ZhClient h = offline_client();
    ZhEvent ev;
    uint32_t state = 99;
    expect("close before connecting", zh_close(h), ZH_OK);
    expect("close again", zh_close(h), ZH_ERR_CLOSED);
    expect("connect after close", zh_connect(h), ZH_ERR_CLOSED);
    expect("send_input after close", zh_send_input(h, 0, 0, 0, NULL), ZH_ERR_CLOSED);
    expect("request_get_inventory after close", zh_request_get_inventory(h, NULL), ZH_ERR_CLOSED);
    expect("poll after close", zh_poll(h, &ev), ZH_OK);
    expect("... returns ZH_EVENT_DISCONNECTED", (int)ev.kind, ZH_EVENT_DISCONNECTED);
    expect("... locally", ev.disconnected.local, 1);
    expect("poll again", zh_poll(h, &ev), ZH_OK);
    expect("... returns ZH_EVENT_NONE", (int)ev.kind, ZH_EVENT_NONE);
    expect("state after close", zh_state(h, &state), ZH_OK);
    expect("... is ZH_STATE_CLOSED", (int)state, ZH_STATE_CLOSED);
    expect("free", zh_client_free(h), ZH_OK);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A connect that cannot finish (nothing answers on 127.0.0.1:9) gives way to close and free. */
static void close_and_free_while_connecting(void) {
    ZhClient h = offline_client();
    ZhEvent ev;
    uint32_t state = 99;
    expect("connect to a silent address", zh_connect(h), ZH_OK);
    expect("state", zh_state(h, &state), ZH_OK);
    expect("... is ZH_STATE_CONNECTING", (int)state, ZH_STATE_CONNECTING);
    expect("send_input while connecting", zh_send_input(h, 0, 0, 0, NULL), ZH_ERR_WRONG_STATE);
    expect("close while connecting", zh_close(h), ZH_OK);
    double start = now_s();
    int disconnected = 0;
    while (!disconnected && now_s() - start < 5.0) {
        if (zh_poll(h, &ev) != ZH_OK) break;
        if (ev.kind == ZH_EVENT_DISCONNECTED) disconnected = 1;
        else sleep_ms(2);
    }
    expect("ZH_EVENT_DISCONNECTED soon after a close while connecting", disconnected, 1);
    if (disconnected) printf("     reason: %s\n", ev.disconnected.reason.ptr);
    expect("... locally", ev.disconnected.local, 1);
    expect("free", zh_client_free(h), ZH_OK);

    h = offline_client();
    expect("connect to a silent address", zh_connect(h), ZH_OK);
    start = now_s();
    expect("free while connecting", zh_client_free(h), ZH_OK);
    expect("... returns within 2 s", now_s() - start < 2.0, 1);
}

static void freed_and_unknown_handles(void) {
    ZhEvent ev;
    uint32_t state;
    expect("poll(handle 0)", zh_poll(0, &ev), ZH_ERR_INVALID_HANDLE);
    expect("poll(never issued handle)", zh_poll(0x7fffffffffffULL, &ev), ZH_ERR_INVALID_HANDLE);
    ZhClient h = offline_client();
    expect("free", zh_client_free(h), ZH_OK);
    expect("free a freed client", zh_client_free(h), ZH_ERR_INVALID_HANDLE);
    expect("poll a freed client", zh_poll(h, &ev), ZH_ERR_INVALID_HANDLE);
    expect("state of a freed client", zh_state(h, &state), ZH_ERR_INVALID_HANDLE);
    expect("connect a freed client", zh_connect(h), ZH_ERR_INVALID_HANDLE);
    expect("send_input to a freed client", zh_send_input(h, 0, 0, 0, NULL), ZH_ERR_INVALID_HANDLE);
    expect("request_ping to a freed client", zh_request_ping(h, 1, NULL), ZH_ERR_INVALID_HANDLE);
    expect("close a freed client", zh_close(h), ZH_ERR_INVALID_HANDLE);
    /* A new client never gets the freed handle back. */
    ZhClient h2 = offline_client();
    expect("a new client has a new handle", h2 != h, 1);
    expect("the freed handle is still invalid", zh_poll(h, &ev), ZH_ERR_INVALID_HANDLE);
    expect("free the new client", zh_client_free(h2), ZH_OK);
}

static void after_close_connected(const char *address, const char *cert_path, const char *token) {
    size_t cert_len = 0;
    unsigned char *cert = read_file(cert_path, &cert_len);
    if (!cert) {
        printf("FAIL cannot read %s\n", cert_path);
        failures++;
        return;
    }
    ZhConfig c = {0};
    c.server_address = address;
    c.token = token;
    c.cert_der = cert;
    c.cert_der_len = cert_len;
    ZhClient h = 0;
    ZhEvent ev;
    expect("create a client of the test server", zh_client_create(&c, &h), ZH_OK);
    expect("connect", zh_connect(h), ZH_OK);
    expect("connect twice", zh_connect(h), ZH_ERR_WRONG_STATE);
    int welcomed = 0;
    for (int i = 0; i < 30000 && !welcomed; i++) {
        if (zh_poll(h, &ev) != ZH_OK) break;
        if (ev.kind == ZH_EVENT_WELCOME) welcomed = 1;
        if (ev.kind == ZH_EVENT_DISCONNECTED) break;
        if (ev.kind == ZH_EVENT_NONE) sleep_ms(2);
    }
    expect("welcomed", welcomed, 1);
    uint32_t seq_one = 0, seq_batch = 0;
    expect("send_input while active", zh_send_input(h, 10, 0, 0, &seq_one), ZH_OK);
    ZhInput three[3] = {{10, 0, 0}, {10, 5, 0}, {0, 10, ZH_BUTTON_ATTACK}};
    expect("send_inputs while active", zh_send_inputs(h, three, 3, &seq_batch), ZH_OK);
    expect("... numbers each input", (int)(seq_batch - seq_one), 3);
    expect("close", zh_close(h), ZH_OK);
    expect("send_input after close", zh_send_input(h, 10, 0, 0, NULL), ZH_ERR_CLOSED);
    expect("send_inputs after close", zh_send_inputs(h, three, 3, NULL), ZH_ERR_CLOSED);
    expect("request_ping after close", zh_request_ping(h, 1, NULL), ZH_ERR_CLOSED);
    expect("request_party_invite after close", zh_request_party_invite(h, "bob", NULL), ZH_ERR_CLOSED);
    expect("close twice", zh_close(h), ZH_ERR_CLOSED);
    int disconnected = 0;
    for (int i = 0; i < 30000 && !disconnected; i++) {
        if (zh_poll(h, &ev) != ZH_OK) break;
        if (ev.kind == ZH_EVENT_DISCONNECTED) disconnected = 1;
        if (ev.kind == ZH_EVENT_NONE) sleep_ms(2);
    }
    expect("ZH_EVENT_DISCONNECTED after close", disconnected, 1);
    expect("... with close code 0", (int)ev.disconnected.close_code, 0);
    expect("send_input after the disconnect", zh_send_input(h, 10, 0, 0, NULL), ZH_ERR_CLOSED);
    expect("free", zh_client_free(h), ZH_OK);
    expect("poll after free", zh_poll(h, &ev), ZH_ERR_INVALID_HANDLE);
}

int main(int argc, char **argv) {
    null_pointers();
    buffers();
    after_close_offline();
    freed_and_unknown_handles();
    close_and_free_while_connecting();
    if (argc >= 4) after_close_connected(argv[1], argv[2], argv[3]);
    printf("hostile_failures=%d\n", failures);
    return failures;
}
