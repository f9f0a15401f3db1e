/* SPDX-License-Identifier: MIT */
/* proxy_limit: nginx's limit_req and limit_conn (see proxy_limit.h). */
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "proxy_limit.h"
#include "util.h"

#define NONE UINT32_MAX
#define IDLE_MS_MAX (1000u * 1000 * 1000) /* longer idle drains any excess anyway */

struct limit_entry {
        uint8_t key[LIMIT_KEY];
        uint64_t last;  /* ms of the last charge that moved it */
        int64_t excess; /* thousandths of a request; a limit_conn zone: requests */
        uint32_t next;  /* in its bucket's chain, or the free list */
        uint32_t older, newer;
};

/* A hash table of clients with a list from the one seen least recently. */
struct limit_table {
        pthread_mutex_t lock;
        atomic_uint refs;
        uint64_t seed;
        uint32_t cap, used, mask;
        uint32_t oldest, newest;
        uint32_t free; /* entries given back (limit_conn), chained by next */
        uint32_t *buckets;
        struct limit_entry *e;
};

int limit_table_new(uint64_t size, struct limit_table **ret)
{
        uint64_t cap = size / LIMIT_ENTRY_BYTES;
        struct limit_table *t;
        uint32_t n = 16;

        cap = cap < 16 ? 16 : cap > (1u << 30) ? (1u << 30) : cap;
        while (n < cap)
                n <<= 1;
        t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        t->cap = (uint32_t) cap;
        t->mask = n - 1;
        t->oldest = t->newest = t->free = NONE;
        /* calloc: untouched pages cost nothing until clients come. */
        t->e = calloc(cap, sizeof(*t->e));
        t->buckets = malloc((size_t) n * sizeof(*t->buckets));
        if (!t->e || !t->buckets) {
                free(t->e);
                free(t->buckets);
                free(t);
                return -ENOMEM;
        }
        memset(t->buckets, 0xff, (size_t) n * sizeof(*t->buckets));
        if (getrandom(&t->seed, sizeof(t->seed), 0) != sizeof(t->seed))
                t->seed = (uint64_t) (uintptr_t) t ^ 0x9e3779b97f4a7c15u;
        pthread_mutex_init(&t->lock, NULL);
        atomic_init(&t->refs, 1);
        *ret = t;
        return 0;
}

const char *limit_status_name(enum limit_status s)
{
        static const char *const names[_LIMIT_STATUS_MAX] = {
            [LIMIT_PASSED] = "PASSED",
            [LIMIT_DELAYED] = "DELAYED",
            [LIMIT_REJECTED] = "REJECTED",
            [LIMIT_DELAYED_DRY_RUN] = "DELAYED_DRY_RUN",
            [LIMIT_REJECTED_DRY_RUN] = "REJECTED_DRY_RUN",
        };
        return (unsigned) s < _LIMIT_STATUS_MAX ? names[s] : NULL;
}

struct limit_table *limit_table_ref(struct limit_table *t)
{
        atomic_fetch_add(&t->refs, 1);
        return t;
}

void limit_table_unref(struct limit_table *t)
{
        if (!t || atomic_fetch_sub(&t->refs, 1) != 1)
                return;
        pthread_mutex_destroy(&t->lock);
        free(t->e);
        free(t->buckets);
        free(t);
}

size_t limit_table_capacity(const struct limit_table *t)
{
        return t->cap;
}

bool limit_key(const struct sockaddr_storage *addr, socklen_t len, uint8_t key[LIMIT_KEY])
{
        static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

        memset(key, 0, LIMIT_KEY);
        if (len >= sizeof(struct sockaddr_in) && addr->ss_family == AF_INET) {
                const struct sockaddr_in *in = (const struct sockaddr_in *) addr;
                key[0] = 4;
                memcpy(key + 1, &in->sin_addr, 4);
                return true;
        }
        if (len >= sizeof(struct sockaddr_in6) && addr->ss_family == AF_INET6) {
                const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *) addr;
                if (!memcmp(in6->sin6_addr.s6_addr, v4mapped, 12)) {
                        key[0] = 4;
                        memcpy(key + 1, in6->sin6_addr.s6_addr + 12, 4);
                } else {
                        key[0] = 6;
                        memcpy(key + 1, in6->sin6_addr.s6_addr, 16);
                }
                return true;
        }
        return false;
}

static uint32_t bucket_of(const struct limit_table *t, const uint8_t key[LIMIT_KEY])
{
        uint64_t a, b, h = t->seed ^ key[0];

        memcpy(&a, key + 1, 8);
        memcpy(&b, key + 9, 8);
        h = (h ^ a) * 0x9e3779b97f4a7c15u;
        h ^= h >> 32;
        h = (h ^ b) * 0xc2b2ae3d27d4eb4fu;
        h ^= h >> 29;
        return (uint32_t) h & t->mask;
}

static uint32_t find(const struct limit_table *t, const uint8_t key[LIMIT_KEY])
{
        for (uint32_t i = t->buckets[bucket_of(t, key)]; i != NONE; i = t->e[i].next)
                if (!memcmp(t->e[i].key, key, LIMIT_KEY))
                        return i;
        return NONE;
}

static void lru_unlink(struct limit_table *t, uint32_t i)
{
        struct limit_entry *e = &t->e[i];

        if (e->older != NONE)
                t->e[e->older].newer = e->newer;
        else
                t->oldest = e->newer;
        if (e->newer != NONE)
                t->e[e->newer].older = e->older;
        else
                t->newest = e->older;
}

static void lru_push(struct limit_table *t, uint32_t i)
{
        t->e[i].older = t->newest;
        t->e[i].newer = NONE;
        if (t->newest != NONE)
                t->e[t->newest].newer = i;
        else
                t->oldest = i;
        t->newest = i;
}

/* Takes entry i out of its bucket's chain and the list by age. */
static void unhash(struct limit_table *t, uint32_t i)
{
        uint32_t *p = &t->buckets[bucket_of(t, t->e[i].key)];

        lru_unlink(t, i);
        while (*p != i)
                p = &t->e[*p].next;
        *p = t->e[i].next;
}

/*
 * A new entry for key: a free one, else (evict) the one seen least
 * recently. NONE when the table is full and nothing may go.
 */
static uint32_t insert(struct limit_table *t, const uint8_t key[LIMIT_KEY], bool evict)
{
        uint32_t i;

        if (t->free != NONE) {
                i = t->free;
                t->free = t->e[i].next;
        } else if (t->used < t->cap) {
                i = t->used++;
        } else if (evict) {
                i = t->oldest;
                unhash(t, i);
        } else {
                return NONE;
        }
        uint32_t b = bucket_of(t, key);
        memcpy(t->e[i].key, key, LIMIT_KEY);
        t->e[i].next = t->buckets[b];
        t->buckets[b] = i;
        lru_push(t, i);
        return i;
}

/* nginx's leaky bucket: the excess a request leaves, from what the client had. */
static int64_t excess_after(const struct limit_entry *e, uint64_t rate, uint64_t now)
{
        uint64_t ms = now > e->last ? now - e->last : 0;

        if (ms > IDLE_MS_MAX)
                ms = IDLE_MS_MAX;
        int64_t x = e->excess - (int64_t) (rate * ms / 1000) + 1000;
        return x < 0 ? 0 : x;
}

static int table_order(const void *a, const void *b)
{
        uintptr_t x = (uintptr_t) * (struct limit_table *const *) a;
        uintptr_t y = (uintptr_t) * (struct limit_table *const *) b;
        return (x > y) - (x < y);
}

/* Locks tables[0..n), each once, in one order for all threads: no deadlock. */
static void lock_tables(struct limit_table *const *tables, size_t n, struct limit_table **locked)
{
        for (size_t i = 0; i < n; i++)
                locked[i] = tables[i];
        qsort(locked, n, sizeof(*locked), table_order);
        for (size_t i = 0; i < n; i++)
                if (i == 0 || locked[i] != locked[i - 1])
                        pthread_mutex_lock(&locked[i]->lock);
}

static void unlock_tables(struct limit_table **locked, size_t n)
{
        for (size_t i = n; i-- > 0;)
                if (i == 0 || locked[i] != locked[i - 1])
                        pthread_mutex_unlock(&locked[i]->lock);
}

struct limit_outcome limit_check(const struct limit_req *rules, size_t n,
                                 const uint8_t key[LIMIT_KEY], uint64_t now_ms)
{
        struct limit_table *tables[LIMIT_RULES_MAX] = {0}, *locked[LIMIT_RULES_MAX];
        int64_t excess[LIMIT_RULES_MAX];
        struct limit_outcome out = {.verdict = LIMIT_PASS};

        n = min_size(n, LIMIT_RULES_MAX);
        /* Every table at once. */
        for (size_t i = 0; i < n; i++)
                tables[i] = rules[i].zone->table;
        lock_tables(tables, n, locked);

        for (size_t i = 0; i < n && out.verdict != LIMIT_REFUSE; i++) {
                const struct limit_zone *z = rules[i].zone;
                uint32_t at = find(z->table, key);
                excess[i] = at == NONE ? 0 : excess_after(&z->table->e[at], z->rate, now_ms);
                if ((uint64_t) excess[i] > rules[i].burst)
                        out = (struct limit_outcome){LIMIT_REFUSE, 0, (uint64_t) excess[i], z};
        }
        for (size_t i = 0; i < n && out.verdict != LIMIT_REFUSE; i++) {
                const struct limit_zone *z = rules[i].zone;
                struct limit_table *t = z->table;
                uint32_t at = find(t, key);
                if (at == NONE) {
                        at = insert(t, key, true);
                        t->e[at].last = now_ms;
                } else {
                        lru_unlink(t, at);
                        lru_push(t, at);
                        if (now_ms > t->e[at].last)
                                t->e[at].last = now_ms;
                }
                t->e[at].excess = excess[i];
                uint64_t x = (uint64_t) excess[i], d = rules[i].delay;
                uint64_t delay = x <= d ? 0 : (x - d) * 1000 / z->rate;
                if (delay > out.delay_ms || !out.zone)
                        out = (struct limit_outcome){delay ? LIMIT_DELAY : LIMIT_PASS, delay, x, z};
        }

        unlock_tables(locked, n);
        return out;
}

/* One request of key less in t (locked): an entry back at 0 is freed. */
static void conn_put(struct limit_table *t, const uint8_t key[LIMIT_KEY])
{
        uint32_t at = find(t, key);

        if (at == NONE)
                return; /* cannot be: a held count keeps its entry */
        if (--t->e[at].excess > 0)
                return;
        unhash(t, at);
        t->e[at].next = t->free;
        t->free = at;
}

const struct limit_conn *limit_conn_take(const struct limit_conn *rules, size_t n,
                                         const uint8_t key[LIMIT_KEY], struct limit_conn_hold *hold)
{
        struct limit_table *tables[LIMIT_RULES_MAX] = {0}, *locked[LIMIT_RULES_MAX];
        const struct limit_conn *refused = NULL;
        size_t taken = 0;

        n = min_size(n, LIMIT_RULES_MAX);
        for (size_t i = 0; i < n; i++)
                tables[i] = rules[i].zone->table;
        lock_tables(tables, n, locked);
        /* Two lines naming one zone count the request twice there, as in nginx. */
        for (; taken < n; taken++) {
                struct limit_table *t = tables[taken];
                uint32_t at = find(t, key);
                if (at == NONE) {
                        at = insert(t, key, false);
                        if (at == NONE)
                                break; /* full: nginx refuses too */
                        t->e[at].excess = 0;
                        t->e[at].last = 0;
                } else if (t->e[at].excess >= (int64_t) rules[taken].max) {
                        break;
                }
                t->e[at].excess++;
        }
        if (taken < n) {
                refused = &rules[taken];
                while (taken-- > 0)
                        conn_put(tables[taken], key);
        } else {
                for (size_t i = 0; i < n; i++)
                        hold->tables[i] = limit_table_ref(tables[i]);
                hold->n = n;
                memcpy(hold->key, key, LIMIT_KEY);
        }
        unlock_tables(locked, n);
        return refused;
}

void limit_conn_release(struct limit_conn_hold *hold)
{
        struct limit_table *locked[LIMIT_RULES_MAX];
        size_t n = hold->n;

        if (n == 0)
                return;
        lock_tables(hold->tables, n, locked);
        for (size_t i = 0; i < n; i++)
                conn_put(hold->tables[i], hold->key);
        unlock_tables(locked, n);
        for (size_t i = 0; i < n; i++)
                limit_table_unref(hold->tables[i]);
        hold->n = 0;
}

unsigned limit_conn_count(struct limit_table *t, const uint8_t key[LIMIT_KEY])
{
        pthread_mutex_lock(&t->lock);
        uint32_t at = find(t, key);
        unsigned n = at == NONE ? 0 : (unsigned) t->e[at].excess;
        pthread_mutex_unlock(&t->lock);
        return n;
}
