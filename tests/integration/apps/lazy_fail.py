# SPDX-License-Identifier: MIT
"""Raises at import: a startup error with a clear one-line cause."""

raise RuntimeError("the database is not configured")
