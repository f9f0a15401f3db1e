/* SPDX-License-Identifier: MIT */
/*
 * mime: file extension -> media type, from /etc/mime.types (Debian's
 * media-types package) with a small built-in table used only when that file
 * is missing. Lookups are case-insensitive and allocation-free.
 */
#ifndef WHARF_MIME_H
#define WHARF_MIME_H

#include <stdbool.h>
#include <stddef.h>

#define MIME_TYPES_PATH "/etc/mime.types"

struct mime_table;

/*
 * Loads path (NULL means MIME_TYPES_PATH). A missing file gives the
 * built-in table and *ret_builtin = true (ret_builtin may be NULL).
 * Returns 0 or a negative errno (-ENOMEM, or an I/O error other than ENOENT).
 */
int mime_load(const char *path, struct mime_table **ret, bool *ret_builtin);
struct mime_table *mime_free(struct mime_table *t);

/* The type for a file name (by its last extension), or NULL when unknown. */
const char *mime_lookup(const struct mime_table *t, const char *filename, size_t len);

/*
 * Would a client want "; charset=utf-8" added? True for text/ and for the
 * textual application types (javascript, json, xml, ...).
 */
bool mime_is_text(const char *type);

#endif
