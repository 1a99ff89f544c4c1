//! SQL fragments shared by the modules that write and read the same rows: the merge's status
//! order and the condition under which a subscription wants a change. A leaf: it depends on no
//! other module of the crate.

use waybill_core::Status;

/// The SQL `CASE` giving [`Status::rank`] of a `status` column, generated from the domain so the
/// database orders ties exactly as the merge does.
pub(crate) fn status_rank_sql(column: &str) -> String {
    let mut sql = format!("case {column}");
    for status in Status::ALL {
        sql.push_str(&format!(
            " when '{}' then {}",
            status.as_str(),
            status.rank()
        ));
    }
    sql.push_str(" end");
    sql
}

/// The condition under which subscription `s` wants a change of `tenant`, `carrier` and
/// `status` written at `created_at`: enabled, same tenant, its filters match, and it existed
/// when the change was written (a new subscription does not receive a backlog of old changes).
/// The fan-out claims by it, and the merge writes a change no subscription wants by it already
/// fanned out.
pub(crate) fn matches_clause(
    tenant: &str,
    carrier: &str,
    status: &str,
    created_at: &str,
) -> String {
    format!(
        "s.enabled and s.tenant = {tenant} and s.created_at <= {created_at}
         and (cardinality(s.carriers) = 0 or {carrier} = any(s.carriers))
         and (cardinality(s.statuses) = 0 or {status} = any(s.statuses))"
    )
}
