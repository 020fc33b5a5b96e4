/*
 * A zonehost client in C, over the client library (client-ffi/include/zonehost.h):
 * connect, drop a healing potion and pick it up again, walk in a circle for two seconds at
 * 60 inputs per second, print what the server acknowledged and the mean action latency,
 * say goodbye.
 *
 *   cc -I client-ffi/include examples/c/zonehost_demo.c -L target/debug -lzonehost_ffi \
 *      -Wl,-rpath,target/debug -o zonehost_demo
 *   ./zonehost_demo 127.0.0.1:4433 data/cert.der "$(zonehost token --player alice)"
 *
 * Arguments: ADDRESS CERT_DER TOKEN [WALK_SECONDS (default 2)]. Exit status 0 when inputs
 * were acknowledged and the potion was picked up again.
 *
 * The output ends with machine-readable lines that tests/c_client.rs checks:
 *   acked_inputs=N  snapshot_acked_input=S  moved_mm=D  picked_up=1  mean_latency_ms=X.X
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "zonehost.h"

#define INPUT_HZ 60
#define MINOR_HEALING_POTION 40
#define TAU 6.283185307179586

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_until(double t) {
    double d = t - now_s();
    if (d <= 0) return;
    struct timespec ts = {(time_t)d, (long)((d - (double)(time_t)d) * 1e9)};
    nanosleep(&ts, NULL);
}

/* Prints the library's message for a failed call and exits. */
static void die(const char *what, int code) {
    char msg[512];
    if (zh_last_error(msg, sizeof msg, NULL) != ZH_OK) strcpy(msg, "(message too long)");
    fprintf(stderr, "%s failed: code %d: %s\n", what, code, msg);
    exit(1);
}

#define CHECK(call)                          \
    do {                                     \
        int rc_ = (call);                    \
        if (rc_ != ZH_OK) die(#call, rc_);   \
    } while (0)

static unsigned char *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    unsigned char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? cap * 2 : 4096;
            unsigned char *grown = realloc(buf, cap);
            if (!grown) { free(buf); fclose(f); return NULL; }
            buf = grown;
        }
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0) break;
    }
    fclose(f);
    *len = n;
    return buf;
}

/* What the game learned, updated from events. */
typedef struct {
    ZhWelcome welcome;
    int welcomed;
    int disconnected;
    uint64_t acked;
    uint64_t latency_sum_us;
    uint32_t snapshot_acked_input; /* highest last_input read from a snapshot header */
    int have_position;
    int32_t start_x, start_y, x, y; /* own position read through the entity accessors */
    double moved_mm;                /* farthest from the start position */
    /* the item round trip: inventory -> drop a potion -> pick it up */
    int item_step; /* 0 idle, 1 asked inventory, 2 dropping, 3 picking up, 4 done, -1 failed */
    ZhItemId potion;
    uint32_t ground;
} Game;

static void on_snapshot(ZhClient client, Game *g, const ZhSnapshot *s) {
    if (s->has_last_input && s->last_input > g->snapshot_acked_input)
        g->snapshot_acked_input = s->last_input;
    /* Zero-copy: the entity array inside the received datagram, valid until next poll. */
    const ZhWireEntity *entities = NULL;
    size_t count = 0;
    CHECK(zh_snapshot_entities(client, &entities, &count));
    for (size_t i = 0; i < count; i++) {
        ZhEntity e;
        CHECK(zh_wire_entity_read(&entities[i], &e));
        if (e.id == g->welcome.entity_id) {
            if (!g->have_position) {
                g->start_x = e.x_mm;
                g->start_y = e.y_mm;
                g->have_position = 1;
            }
            g->x = e.x_mm;
            g->y = e.y_mm;
            double d = hypot((double)(g->x - g->start_x), (double)(g->y - g->start_y));
            if (d > g->moved_mm) g->moved_mm = d;
        }
    }
}

static void on_response(ZhClient client, Game *g, const ZhResponse *r) {
    if (r->kind == ZH_RESPONSE_ERROR) {
        printf("request %u refused: %s (code %u)\n", r->id, r->error_text.ptr, r->error);
        if (g->item_step > 0 && g->item_step < 4) g->item_step = -1;
        return;
    }
    if (r->kind == ZH_RESPONSE_ZONE) {
        uint32_t exits = 0;
        for (uint32_t i = 0; i < r->portal_count; i++) {
            ZhZoneRect rect;
            CHECK(zh_event_rect(client, r->wall_count + i, &rect));
            if (rect.target >= 0) exits++;
        }
        printf("zone %u \"%s\": %d x %d m, %u walls, %u portals\n", r->zone, r->zone_name.ptr,
               r->width_mm / 1000, r->height_mm / 1000, r->wall_count, exits);
        return;
    }
    if (r->kind == ZH_RESPONSE_INVENTORY && g->item_step == 1) {
        printf("inventory: %u items, %llu gold, level %u\n", r->item_count,
               (unsigned long long)r->gold, r->level);
        for (uint32_t i = 0; i < r->item_count; i++) {
            ZhItem item;
            CHECK(zh_event_item(client, i, &item));
            if (item.slot == -1 && item.base == MINOR_HEALING_POTION) {
                g->potion = item.id;
                CHECK(zh_request_drop(client, item.id, NULL));
                g->item_step = 2;
                printf("dropping a minor healing potion\n");
                return;
            }
        }
        printf("no potion in the bag\n");
        g->item_step = -1;
    }
}

static void on_game(ZhClient client, Game *g, const ZhGameEvent *e) {
    switch (e->kind) {
    case ZH_GAME_DROPPED:
        if (g->item_step == 2 && e->item.id.lo == g->potion.lo && e->item.id.hi == g->potion.hi) {
            g->ground = e->entity;
            CHECK(zh_request_pick_up(client, e->entity, NULL));
            g->item_step = 3;
            printf("dropped it as ground item %u; picking it up\n", e->entity);
        }
        break;
    case ZH_GAME_PICKED_UP:
        if (g->item_step == 3 && e->entity == g->ground) {
            g->item_step = 4;
            printf("picked up item base %u from the ground\n", e->item.base);
        }
        break;
    case ZH_GAME_NOTICE:
        printf("notice: %s\n", e->text.ptr);
        break;
    default:
        break;
    }
}

/* Handles every waiting event. */
static void pump(ZhClient client, Game *g) {
    ZhEvent ev;
    for (;;) {
        CHECK(zh_poll(client, &ev));
        switch (ev.kind) {
        case ZH_EVENT_NONE:
            return;
        case ZH_EVENT_WELCOME:
            g->welcome = ev.welcome;
            g->welcomed = 1;
            printf("welcome: player %llu entity %u zone %u instance %u, %u Hz ticks\n",
                   (unsigned long long)ev.welcome.player_id, ev.welcome.entity_id,
                   ev.welcome.zone, ev.welcome.instance, ev.welcome.tick_rate_hz);
            break;
        case ZH_EVENT_SNAPSHOT:
            on_snapshot(client, g, &ev.snapshot);
            break;
        case ZH_EVENT_INPUT_ACKED:
            g->acked++;
            g->latency_sum_us += ev.input_acked.latency_us;
            break;
        case ZH_EVENT_RESPONSE:
            on_response(client, g, &ev.response);
            break;
        case ZH_EVENT_GAME:
            on_game(client, g, &ev.game);
            break;
        case ZH_EVENT_REDIRECTED:
            printf("redirected to %s\n", ev.redirect.address.ptr);
            break;
        case ZH_EVENT_REJECTED:
            printf("rejected: %s: %s\n", ev.rejected.code_name.ptr, ev.rejected.reason.ptr);
            break;
        case ZH_EVENT_GOAWAY:
            printf("server going away: %s\n", ev.goaway.reason.ptr);
            break;
        case ZH_EVENT_DISCONNECTED:
            printf("disconnected: code %lld, %s\n",
                   ev.disconnected.close_code == ZH_NO_CLOSE_CODE ? -1LL
                                                                  : (long long)ev.disconnected.close_code,
                   ev.disconnected.reason.ptr);
            g->disconnected = 1;
            return;
        default:
            break;
        }
    }
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s ADDRESS CERT_DER TOKEN [WALK_SECONDS]\n", argv[0]);
        return 2;
    }
    double walk = argc > 4 ? atof(argv[4]) : 2.0;
    size_t cert_len = 0;
    unsigned char *cert = read_file(argv[2], &cert_len);
    if (!cert) {
        fprintf(stderr, "cannot read %s\n", argv[2]);
        return 2;
    }
    printf("%s\n", zh_version());

    ZhConfig config = {0};
    config.server_address = argv[1];
    config.server_name = "localhost";
    config.token = argv[3];
    config.client_name = "zonehost_demo.c";
    config.cert_der = cert;
    config.cert_der_len = cert_len;
    ZhClient client = 0;
    CHECK(zh_client_create(&config, &client));
    free(cert); /* the library copied it */
    CHECK(zh_connect(client));

    Game g;
    memset(&g, 0, sizeof g);
    const double frame = 1.0 / INPUT_HZ;

    /* Connect: poll each frame until welcomed (bounded; generous for valgrind). */
    double deadline = now_s() + 60.0;
    while (!g.welcomed && !g.disconnected && now_s() < deadline) {
        pump(client, &g);
        sleep_until(now_s() + 0.002);
    }
    if (!g.welcomed) {
        fprintf(stderr, "not welcomed\n");
        zh_client_free(client);
        return 1;
    }

    /* Stand still and do the item round trip: inventory, drop a potion, pick it up. */
    CHECK(zh_request_get_zone(client, NULL));
    CHECK(zh_request_get_inventory(client, NULL));
    g.item_step = 1;
    double next = now_s();
    deadline = now_s() + 30.0;
    while (g.item_step > 0 && g.item_step < 4 && !g.disconnected && now_s() < deadline) {
        CHECK(zh_send_input(client, 0, 0, 0, NULL));
        pump(client, &g);
        next += frame;
        sleep_until(next);
    }

    /* Walk one circle in `walk` seconds, one input per frame. */
    double start = now_s();
    next = start;
    uint32_t last_seq = 0;
    while (!g.disconnected && now_s() - start < walk) {
        double angle = TAU * (now_s() - start) / walk;
        int16_t mx = (int16_t)(cos(angle) * ZH_MOVE_AXIS_MAX);
        int16_t my = (int16_t)(sin(angle) * ZH_MOVE_AXIS_MAX);
        int rc = zh_send_input(client, mx, my, 0, &last_seq);
        if (rc != ZH_OK && rc != ZH_ERR_WOULD_BLOCK) die("zh_send_input", rc);
        pump(client, &g);
        next += frame;
        sleep_until(next);
    }
    /* Let the last acknowledgements arrive. */
    double settle = now_s() + 0.2;
    while (!g.disconnected && now_s() < settle) {
        pump(client, &g);
        sleep_until(now_s() + 0.005);
    }

    ZhStats stats;
    CHECK(zh_stats(client, &stats));
    char token[2048];
    size_t token_len = 0;
    CHECK(zh_resume_token(client, token, sizeof token, &token_len));

    /* Goodbye: close, then poll until the connection has ended (bounded). */
    CHECK(zh_close(client));
    deadline = now_s() + 10.0;
    while (!g.disconnected && now_s() < deadline) {
        pump(client, &g);
        sleep_until(now_s() + 0.005);
    }
    CHECK(zh_client_free(client));

    double mean_ms = g.acked ? (double)g.latency_sum_us / (double)g.acked / 1000.0 : 0.0;
    printf("%llu inputs sent, %llu acknowledged, %llu snapshots, resume token of %zu bytes\n",
           (unsigned long long)stats.inputs_sent, (unsigned long long)g.acked,
           (unsigned long long)stats.snapshots, token_len);
    printf("%llu inputs acknowledged, mean action latency %.1f ms\n",
           (unsigned long long)g.acked, mean_ms);
    printf("acked_inputs=%llu\n", (unsigned long long)g.acked);
    printf("last_sent_input=%u\n", last_seq);
    printf("snapshot_acked_input=%u\n", g.snapshot_acked_input);
    printf("moved_mm=%.0f\n", g.moved_mm);
    printf("picked_up=%d\n", g.item_step == 4);
    printf("mean_latency_ms=%.2f\n", mean_ms);
    return g.acked > 0 && g.snapshot_acked_input > 0 && g.item_step == 4 ? 0 : 1;
}
