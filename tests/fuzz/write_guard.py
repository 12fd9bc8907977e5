"""Schemathesis hooks for `api_fuzz.rs`: a request the service rejects (4xx) must not have
written anything to its database.

The test installs a row trigger on every table of the service's database that logs the
table, the operation and the transaction to `fuzz_rows_written` (an insert-only log: it
takes no lock and rolls back with the writer's transaction). Before each write request the
hook notes the log's end; after a rejected answer the check reads what was logged since.

The saga goes on in the background meanwhile (an earlier accepted order's events arrive),
so each new transaction is attributed: one that records a consumed event
(`processed_events`) is the consumer's, one that removes published rows (`outbox`) is the
relay's. Any other transaction committed while a rejected request ran is a failure.
"""

import os
import subprocess

import schemathesis

DATABASE = os.environ["FUZZ_DATABASE_URL"]
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
BACKGROUND_MARKS = {("processed_events", "INSERT"), ("outbox", "DELETE")}

_state = {"case": None, "before": None}


def _psql(sql):
    out = subprocess.run(
        ["psql", DATABASE, "-XAtF", "\t", "-c", sql],
        check=True,
        capture_output=True,
        text=True,
    )
    return [line.split("\t") for line in out.stdout.splitlines() if line]


def _log_end():
    return int(_psql("SELECT coalesce(max(id), 0) FROM fuzz_rows_written")[0][0])


def _foreign_writes(since):
    """Transactions logged after `since` that no background task accounts for."""
    rows = _psql(
        "SELECT transaction_id, table_name, operation FROM fuzz_rows_written "
        f"WHERE id > {since} ORDER BY id"
    )
    by_transaction = {}
    for transaction, table, operation in rows:
        by_transaction.setdefault(transaction, set()).add((table, operation))
    return {
        transaction: sorted(f"{table} {operation}" for table, operation in writes)
        for transaction, writes in by_transaction.items()
        if not writes & BACKGROUND_MARKS
    }


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    _state["case"], _state["before"] = id(case), None
    if case.method.upper() in WRITE_METHODS:
        _state["before"] = _log_end()


@schemathesis.check
def rejected_request_wrote_nothing(ctx, response, case):
    before = _state["before"]
    if response.status_code < 400 or before is None or _state["case"] != id(case):
        # Accepted, not a write, or a call the hook did not see.
        return None
    foreign = _foreign_writes(before)
    if foreign:
        raise AssertionError(
            f"{case.method} {case.formatted_path} was answered {response.status_code} "
            f"but wrote: {foreign}"
        )
    return None
