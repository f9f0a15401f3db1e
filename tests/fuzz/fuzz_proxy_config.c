/* SPDX-License-Identifier: MIT */
/*
 * fuzz_proxy_config: any bytes as wharf-proxy's configuration file. Either
 * it is refused with at least one error, or every route it built is sound:
 * each location has a prefix starting with '/', the upstream it names, and
 * lookups over it terminate with a location of that server or none.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proxy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct config_diag diag = {0};
        struct proxy_config *c = NULL;
        int r = proxy_config_from_text("fuzz.ini", (const char *) data, size, &diag, &c);

        if (r < 0) {
                if (r == -EINVAL && diag.errors == 0)
                        abort();
        } else {
                if (!c || c->n_servers == 0 || diag.errors != 0)
                        abort();
                for (size_t i = 0; i < c->n_servers; i++) {
                        const struct vserver *vs = &c->servers[i];
                        for (size_t j = 0; j < vs->n_locations; j++) {
                                const struct location *l = &vs->locations[j];
                                if (!l->prefix || l->prefix[0] != '/')
                                        abort();
                                if ((l->kind == LOC_UWSGI || l->kind == LOC_HTTP) &&
                                    (!l->upstream || l->upstream->n_servers == 0))
                                        abort();
                                const struct location *m =
                                    proxy_find_location(vs, l->prefix, l->prefix_len);
                                if (!m || m < vs->locations || m >= vs->locations + vs->n_locations)
                                        abort();
                        }
                        for (size_t j = 0; j < vs->names.n; j++)
                                if (proxy_find_server(c, vs->names.v[j], strlen(vs->names.v[j])) ==
                                    NULL)
                                        abort();
                }
                proxy_config_free(c);
        }
        config_diag_done(&diag);
        return 0;
}
