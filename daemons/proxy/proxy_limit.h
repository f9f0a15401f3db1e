/* SPDX-License-Identifier: MIT */
/*
 * proxy_limit: nginx's limit_req and limit_conn, per client address.
 *
 * A zone remembers, for each client, how far its requests run ahead of the
 * zone's rate: nginx's leaky bucket, an "excess" in thousandths of a request
 * that drains at the rate. A request that would leave a client more than
 * its burst ahead is refused and costs nothing. One within the burst is
 * charged and goes at once when the excess is within `delay` (everything,
 * with nodelay), else after the time that brings it back to that.
 *
 * The workers share a zone's table under its mutex. The table holds as many
 * clients as the zone's size allows; when it is full the client seen least
 * recently is forgotten. A reload keeps the table of a zone whose name and
 * size stay (limit_zones_adopt()), as nginx keeps its shared memory.
 *
 * A limit_conn zone counts instead the requests of each client that are
 * being served: a request takes one from every limit_conn that applies when
 * it starts, unless one of them is at its maximum (then it takes none and
 * is refused), and gives them back when it ends. Such a zone forgets a
 * client whose count is back to 0 and never one that has requests, so a
 * full zone refuses newcomers, as nginx's does.
 */
#ifndef WHARF_PROXY_LIMIT_H
#define WHARF_PROXY_LIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define LIMIT_KEY 17         /* address family, then up to 16 bytes of address */
#define LIMIT_RULES_MAX 4    /* limit_req lines in one place */
#define LIMIT_ENTRY_BYTES 64 /* what one client costs of a zone's size */
/* The largest zone: 16M clients. A typo (10g for 10m) is an error, not 10 GiB of memory. */
#define LIMIT_ZONE_MAX (1ull << 30)

struct limit_table;

struct limit_zone {
        char *name;
        bool conn;     /* limit_conn_zone: counts requests being served */
        uint64_t rate; /* limit_req_zone: thousandths of a request per second */
        uint64_t size; /* bytes, as written */
        struct limit_table *table;
};

/* One limit_req line. */
struct limit_req {
        struct limit_zone *zone;
        uint64_t burst; /* thousandths of a request */
        uint64_t delay; /* thousandths: an excess up to this goes at once; UINT64_MAX: nodelay */
};

/* One limit_conn line. */
struct limit_conn {
        struct limit_zone *zone;
        uint32_t max; /* requests of one client at once */
};

/* What a request holds of limit_conn zones, to give back when it ends. */
struct limit_conn_hold {
        struct limit_table *tables[LIMIT_RULES_MAX]; /* a reference each */
        size_t n;
        uint8_t key[LIMIT_KEY];
};

enum limit_verdict { LIMIT_PASS, LIMIT_DELAY, LIMIT_REFUSE };

/* nginx's $limit_req_status and $limit_conn_status; LIMIT_NONE: no limit applied. */
enum limit_status {
        LIMIT_NONE,
        LIMIT_PASSED,
        LIMIT_DELAYED,
        LIMIT_REJECTED,
        LIMIT_DELAYED_DRY_RUN,
        LIMIT_REJECTED_DRY_RUN,
        _LIMIT_STATUS_MAX,
};

/* Its name as nginx writes it ("PASSED"), NULL for LIMIT_NONE. */
const char *limit_status_name(enum limit_status s);

/* What decided, for the log. */
struct limit_outcome {
        enum limit_verdict verdict;
        uint64_t delay_ms;
        uint64_t excess; /* thousandths, of the zone named */
        const struct limit_zone *zone;
};

/* A table for a zone of size bytes. 0 or -ENOMEM. */
int limit_table_new(uint64_t size, struct limit_table **ret);
struct limit_table *limit_table_ref(struct limit_table *t);
void limit_table_unref(struct limit_table *t);
size_t limit_table_capacity(const struct limit_table *t);

/*
 * The key of a client: its address, an IPv4-mapped IPv6 one as IPv4.
 * False for a client that has none (a unix socket), which no limit holds,
 * as nginx skips an empty key.
 */
bool limit_key(const struct sockaddr_storage *addr, socklen_t len, uint8_t key[LIMIT_KEY]);

/*
 * Applies rules[0..n) to a request of the client key at now_ms, as nginx
 * applies several limit_req: refused when one refuses (and none is
 * charged), else charged to all, after the longest of their delays.
 */
struct limit_outcome limit_check(const struct limit_req *rules, size_t n,
                                 const uint8_t key[LIMIT_KEY], uint64_t now_ms);

/*
 * Counts a request of the client key in the zone of each of rules[0..n)
 * into hold (empty before). When one is at its max, or its zone is full,
 * none is counted and that rule is returned; NULL when all counted.
 */
const struct limit_conn *limit_conn_take(const struct limit_conn *rules, size_t n,
                                         const uint8_t key[LIMIT_KEY],
                                         struct limit_conn_hold *hold);
/* Gives back what hold counts (nothing when empty), and empties it. */
void limit_conn_release(struct limit_conn_hold *hold);
/* The requests of key counted in t, for tests. */
unsigned limit_conn_count(struct limit_table *t, const uint8_t key[LIMIT_KEY]);

#endif
