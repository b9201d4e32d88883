"""Schemathesis hooks of .ci/schemathesis.sh: the check that keeps the cursor allowance
of schemathesis.toml as narrow as it says (a 400 on a list is only ever a refused cursor)."""

import json

import schemathesis

CURSOR_OPERATIONS = {"GET /api/notes", "GET /api/audit"}
INVALID_CURSOR = "urn:nestflux:problem:invalid-cursor"


@schemathesis.check
def bad_request_is_a_refused_cursor(ctx, response, case):
    """On an operation that takes a cursor, a 400 is the invalid-cursor problem for a
    non-empty cursor the request carried; any other 400 fails."""
    if response.status_code != 400 or case.operation.label not in CURSOR_OPERATIONS:
        return None
    try:
        problem = json.loads(response.content)
    except ValueError:
        raise AssertionError("400 without a problem+json body")
    cursor = (case.query or {}).get("cursor")
    if problem.get("type") != INVALID_CURSOR:
        raise AssertionError(f"400 {problem.get('type')!r} on {case.operation.label}: only invalid-cursor may be a 400 here")
    if not cursor:
        raise AssertionError("400 invalid-cursor for a request without a cursor")
    return None
