# SPDX-License-Identifier: MIT
# A module with a syntax error: wharf-wsgi must refuse to start and say where.
def application(environ, start_response)
    pass
