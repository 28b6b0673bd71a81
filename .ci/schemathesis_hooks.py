"""Schemathesis hooks for the session-chain run (.ci/schemathesis.sh).

A login with random credentials never succeeds, so the stateful phase would never reach the
links a login's response carries (refresh, list, end). In that run, every login body that
matches the schema (exactly `username` and `password`, both strings) gets the throwaway
account the script registered, so each scenario starts a real session and follows
login -> refresh -> list -> end with the values the server returned. Bodies the fuzzer made
invalid on purpose are left alone: the server must still refuse those.
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
        and set(body) == {"username", "password"}
        and all(isinstance(value, str) for value in body.values())
    ):
        return {
            "username": os.environ["FUZZ_USERNAME"],
            "password": os.environ["FUZZ_PASSWORD"],
        }
    return body
