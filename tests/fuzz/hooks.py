"""schemathesis hooks for tests/fuzz/run.sh.

schemathesis' own GraphQL check counts every GraphQL error as a server error. Ours
answers a bad request with a GraphQL error that carries a stable code (NOT_FOUND,
FORBIDDEN, BAD_USER_INPUT ...), which is the contract. This check holds what that
contract promises instead: no 5xx, and every error has a code that is not INTERNAL.
"""

import json

import schemathesis
from hypothesis import strategies as st
from schemathesis.graphql import nodes

# A calendar day (the sales report's range): real dates of any year, and strings that
# are not dates, which must be refused with a code.
schemathesis.graphql.scalar(
    "NaiveDate",
    st.one_of(
        st.dates().map(lambda d: nodes.String(d.isoformat())),
        st.text(max_size=12).map(nodes.String),
    ),
)


@schemathesis.check
def coded_client_errors_only(ctx, response, case):
    assert response.status_code < 500, f"server error {response.status_code}"
    try:
        body = json.loads(response.content or b"null")
    except ValueError:
        return None
    errors = body.get("errors") if isinstance(body, dict) else None
    for error in errors or []:
        code = (error.get("extensions") or {}).get("code")
        assert code, f"an error without a code: {error}"
        assert code != "INTERNAL", f"an internal error: {error}"
    return None
