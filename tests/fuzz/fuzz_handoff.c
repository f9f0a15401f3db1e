/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target for handoff_decode(): any datagram a peer can send.
 *
 * Beyond "no crash, no over-read", it checks the decoder's promises on
 * every message it accepts: the limits hold, data points into the input
 * right after the header and covers the rest of it exactly, the peer
 * address is zero past peer_len, and, since the encoding is canonical,
 * re-encoding the decoded fields gives back the received header byte for
 * byte. A rejected message must leave the output untouched.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "handoff.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        struct handoff_info info, untouched;
        uint8_t header[HANDOFF_HEADER_SIZE];
        const uint8_t *peer;
        int r;

        memset(&info, 0x5a, sizeof(info));
        untouched = info;

        r = handoff_decode(data, size, &info);
        if (r < 0) {
                if (r != -EBADMSG && r != -EPROTONOSUPPORT)
                        abort();
                if (memcmp(&info, &untouched, sizeof(info)) != 0)
                        abort();
                return 0;
        }
        if (r != 0)
                abort();

        if (size < HANDOFF_HEADER_SIZE || info.kind < HANDOFF_CONN ||
            info.kind >= _HANDOFF_KIND_MAX || (info.flags & ~HANDOFF_KNOWN_FLAGS) != 0)
                abort();
        /* Only a marked CONN and an ACK carry an id; a HELLO or ACK nothing else. */
        if ((info.id != 0) != (info.kind == HANDOFF_ACK ||
                               (info.kind == HANDOFF_CONN && (info.flags & HANDOFF_F_ACK))))
                abort();
        if (info.kind != HANDOFF_CONN &&
            (info.flags || info.data_len || info.peer_len || info.requests))
                abort();
        if (info.data != (const char *) data + HANDOFF_HEADER_SIZE ||
            info.data_len != size - HANDOFF_HEADER_SIZE || info.data_len > HANDOFF_MAX_DATA)
                abort();
        if (info.peer_len > sizeof(info.peer) ||
            (info.peer_len > 0 && info.peer_len < sizeof(sa_family_t)))
                abort();

        peer = (const uint8_t *) &info.peer;
        for (size_t i = info.peer_len; i < sizeof(info.peer); i++)
                if (peer[i] != 0)
                        abort();

        if (handoff_encode_header(&info, header) != HANDOFF_HEADER_SIZE)
                abort();
        if (memcmp(header, data, HANDOFF_HEADER_SIZE) != 0)
                abort();

        return 0;
}
