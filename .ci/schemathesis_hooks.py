"""Schemathesis hooks for the session-chain run (.ci/schemathesis.sh).

A login with random credentials never succeeds, so the stateful phase would never reach the
links a login's response carries (refresh, list, end). In that run, every well-formed login
body is replaced by the throwaway account the script registered, so each scenario starts a
real session and follows login -> refresh -> list -> end with the values the server returned.
"""

import os

import schemathesis


@schemathesis.hook
def map_body(ctx, body):
    operation = ctx.operation
    if (
        operation is not None
        and operation.method.upper() == "POST"
        and operation.path == "/v1/sessions"
        and isinstance(body, dict)
    ):
        return {
            "username": os.environ["FUZZ_USERNAME"],
            "password": os.environ["FUZZ_PASSWORD"],
        }
    return body
