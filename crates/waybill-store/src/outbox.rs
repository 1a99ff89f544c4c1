//! The transactional outbox: the insert that writes a change's downstream event (the wire type
//! `waybill_api::events::StatusChangedV1`) in the merge transaction.

use serde_json::value::RawValue;
use sqlx::types::Json;
use waybill_api::events::{DownstreamEventRef, StatusChangedV1};
use waybill_core::Status;

/// One outbox row to write (with [`insert_statement`] and [`bind_rows`]).
pub(crate) struct NewOutboxRow<'a> {
    pub shipment_id: i64,
    pub body: StatusChangedV1,
    /// `body` as published ([`DownstreamEventRef`], compact JSON): written as the payload, and
    /// handed to this process's relay so it need not decode the payload back.
    pub encoded: Box<RawValue>,
    /// The `traceparent` of the message that brought the new current event, if it was traced.
    pub traceparent: Option<&'a str>,
}

/// `body` encoded as it is published and stored.
pub(crate) fn encode(body: &StatusChangedV1) -> Result<Box<RawValue>, serde_json::Error> {
    serde_json::value::to_raw_value(&DownstreamEventRef::StatusChanged(body))
}

/// The statement that inserts outbox rows from 14 parallel arrays bound from parameter
/// `$first` on (see [`bind_rows`]), returning `id, shipment_id`. Usable on its own or as the
/// main statement after a `with` of other work, so the merge writes shipments and outbox rows in
/// one round trip.
pub(crate) fn insert_statement(first: usize) -> String {
    let types = [
        "text",
        "int8",
        "text",
        "text",
        "text",
        "text",
        "text",
        "text",
        "text",
        "text",
        "timestamptz",
        "int8",
        "jsonb",
        "text",
    ];
    let arrays: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(offset, kind)| format!("${}::{kind}[]", first + offset))
        .collect();
    // A change no subscription wants, by the fan-out's own rule, is written already fanned
    // out: the fan-out would only claim and mark it (a second rewrite of the row and its
    // indexes). The row's `created_at` will be `now()`. A subscription receives the changes
    // merged after its creation committed.
    format!(
        "insert into outbox
             (tenant, shipment_id, event_id, carrier, tracking_number, order_number,
              previous_status, new_status, raw_status, sub_status, occurred_at, version, payload,
              traceparent, fanned_out_at)
         select o.*,
                case when exists (select 1 from subscriptions s where {matches})
                     then null else now() end
         from unnest({arrays}) as o(tenant, shipment_id, event_id, carrier, tracking_number,
                                    order_number, previous_status, new_status, raw_status,
                                    sub_status, occurred_at, version, payload, traceparent)
         returning id, shipment_id",
        matches =
            crate::fragments::matches_clause("o.tenant", "o.carrier", "o.new_status", "now()"),
        arrays = arrays.join(", ")
    )
}

/// Binds the 14 arrays of [`insert_statement`] for `rows`, after the query's other parameters.
pub(crate) fn bind_rows<'q>(
    query: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    rows: &'q [NewOutboxRow<'q>],
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    let mut tenants = Vec::with_capacity(rows.len());
    let mut shipment_ids = Vec::with_capacity(rows.len());
    let mut event_ids = Vec::with_capacity(rows.len());
    let mut carriers = Vec::with_capacity(rows.len());
    let mut numbers = Vec::with_capacity(rows.len());
    let mut order_numbers = Vec::with_capacity(rows.len());
    let mut previous = Vec::with_capacity(rows.len());
    let mut new = Vec::with_capacity(rows.len());
    let mut raw = Vec::with_capacity(rows.len());
    let mut sub = Vec::with_capacity(rows.len());
    let mut occurred = Vec::with_capacity(rows.len());
    let mut versions = Vec::with_capacity(rows.len());
    let mut payloads = Vec::with_capacity(rows.len());
    let mut traceparents = Vec::with_capacity(rows.len());
    for row in rows {
        let body = &row.body;
        tenants.push(body.shipment.tenant.as_str());
        shipment_ids.push(row.shipment_id);
        event_ids.push(body.event_id.as_str());
        carriers.push(body.shipment.carrier.as_str());
        numbers.push(body.shipment.tracking_number.as_str());
        order_numbers.push(body.shipment.order_number.as_deref());
        previous.push(body.previous_status.map(Status::as_str));
        new.push(body.new_status.as_str());
        raw.push(body.scan.raw_status.code.as_str());
        sub.push(body.scan.sub_status.as_deref());
        occurred.push(body.scan.occurred_at);
        versions.push(body.shipment_version);
        payloads.push(Json(&*row.encoded));
        traceparents.push(row.traceparent);
    }
    query
        .bind(tenants)
        .bind(shipment_ids)
        .bind(event_ids)
        .bind(carriers)
        .bind(numbers)
        .bind(order_numbers)
        .bind(previous)
        .bind(new)
        .bind(raw)
        .bind(sub)
        .bind(occurred)
        .bind(versions)
        .bind(payloads)
        .bind(traceparents)
}
