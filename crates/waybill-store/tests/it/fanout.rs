//! Fan-out in Postgres: the relay's two outbox cursors, the idempotent fan-out into deliveries
//! with its filters, the dispatcher's claim (per-subscription limits, leases, stale outcomes)
//! and the outcome writes that disable subscriptions, and replaying dead deliveries.

use std::time::Duration;

use crate::common::*;
use chrono::{DateTime, SubsecRound, Utc};
use waybill_core::{CarrierCode, Status, TenantId};
use waybill_store::PgConnection;
use waybill_store::fanout::{
    self, ClaimedDelivery, DeadFilter, DeliveredOutcome, DeliveryRecord, DeliveryStatus,
    DisabledReason, FailureRecorded, NewSubscription, SecretText, Subscription,
};
use waybill_store::testing::TestDatabase;

const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

async fn subscribe(db: &TestDatabase, tenant: &str, carriers: &[&str], statuses: &[Status]) -> i64 {
    let mut conn = db.store().acquire().await.unwrap();
    let tenant = TenantId::parse(tenant).unwrap();
    let carriers: Vec<CarrierCode> = carriers
        .iter()
        .map(|c| CarrierCode::parse(c).unwrap())
        .collect();
    fanout::insert_subscription(
        &mut conn,
        &NewSubscription {
            tenant: &tenant,
            url: "https://receiver.example/hooks",
            description: "test",
            carriers: &carriers,
            statuses,
            secret: &SecretText::new(SECRET),
        },
    )
    .await
    .unwrap()
    .id
}

async fn fan_out(db: &TestDatabase) -> fanout::FanOutReport {
    let mut tx = db.store().begin().await.unwrap();
    let report = fanout::fan_out_pending(&mut tx, 100, Utc::now())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    report
}

async fn deliveries(db: &TestDatabase, subscription: i64) -> Vec<DeliveryRecord> {
    let mut conn = db.store().acquire().await.unwrap();
    fanout::list_deliveries(&mut conn, subscription)
        .await
        .unwrap()
}

/// Three `ups` shipments: two in transit, one delivered.
async fn three_changes(db: &TestDatabase) {
    merge(
        db.store(),
        vec![
            event("A1", 10, Status::InTransit, "SYD"),
            event("A2", 10, Status::InTransit, "SYD"),
            event("A3", 10, Status::Delivered, "SYD"),
        ],
    )
    .await;
}

/// Delivery `id` as [`fanout::list_deliveries`] lists it among `subscription`'s.
async fn listed_delivery(conn: &mut PgConnection, subscription: i64, id: i64) -> DeliveryRecord {
    fanout::list_deliveries(conn, subscription)
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.id == id)
        .unwrap()
}

/// A subscription that must exist.
async fn stored_subscription(conn: &mut PgConnection, id: i64) -> Subscription {
    fanout::get_subscription(conn, id).await.unwrap().unwrap()
}

/// [`fanout::record_failure`] of the attempt `delivery` was claimed for, at `at`, the
/// subscription disabled after an hour of failures.
async fn failed(
    conn: &mut PgConnection,
    delivery: &ClaimedDelivery,
    at: DateTime<Utc>,
    status: Option<u16>,
    error: &str,
    next_attempt_at: Option<DateTime<Utc>>,
) -> FailureRecorded {
    let hour = Some(Duration::from_secs(3600));
    fanout::record_failure(
        conn,
        delivery.id,
        delivery.attempt,
        at,
        status,
        error,
        next_attempt_at,
        hour,
    )
    .await
    .unwrap()
}

/// A fresh database with `N` subscriptions of the default tenant to everything, and the three
/// changes fanned out to each.
async fn three_changes_fanned_out_to<const N: usize>() -> (TestDatabase, [i64; N]) {
    let db = database().await;
    let mut subscriptions = [0; N];
    for subscription in &mut subscriptions {
        *subscription = subscribe(&db, "default", &[], &[]).await;
    }
    three_changes(&db).await;
    fan_out(&db).await;
    (db, subscriptions)
}

#[tokio::test]
async fn the_fan_out_follows_tenant_carrier_status_and_enabled_and_is_idempotent() {
    let db = database().await;
    let all = subscribe(&db, "default", &[], &[]).await;
    let ups = subscribe(&db, "default", &["ups"], &[]).await;
    let dhl = subscribe(&db, "default", &["dhl"], &[]).await;
    let delivered = subscribe(&db, "default", &[], &[Status::Delivered]).await;
    let other_tenant = subscribe(&db, "globex", &[], &[]).await;
    let disabled = subscribe(&db, "default", &[], &[]).await;
    {
        let mut conn = db.store().acquire().await.unwrap();
        fanout::disable_subscription(&mut conn, disabled, DisabledReason::Manual, Utc::now())
            .await
            .unwrap();
    }
    three_changes(&db).await;
    let too_late = subscribe(&db, "default", &[], &[]).await;

    let report = fan_out(&db).await;
    assert_eq!(report.rows, 3);
    assert_eq!(report.deliveries, 3 + 3 + 1);
    assert_eq!(deliveries(&db, all).await.len(), 3);
    assert_eq!(deliveries(&db, ups).await.len(), 3);
    assert_eq!(deliveries(&db, dhl).await.len(), 0);
    assert_eq!(deliveries(&db, delivered).await.len(), 1);
    assert_eq!(deliveries(&db, other_tenant).await.len(), 0);
    assert_eq!(deliveries(&db, disabled).await.len(), 0);
    assert_eq!(
        deliveries(&db, too_late).await.len(),
        0,
        "a subscription gets the changes written after it was created"
    );

    // The same change has the same id and bytes in every subscription, and they are the
    // relay's wire form of the outbox row.
    let mut tx = db.store().begin().await.unwrap();
    let outbox = fanout::claim_unpublished(&mut tx, 10, &waybill_store::EncodedBodies::new(0))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let delivered_row = &deliveries(&db, delivered).await[0];
    let source = outbox
        .iter()
        .find(|entry| entry.id == delivered_row.outbox_id)
        .unwrap();
    assert_eq!(delivered_row.webhook_id, source.message_id());
    assert_eq!(delivered_row.body, source.body);
    assert!(
        deliveries(&db, all)
            .await
            .iter()
            .any(|d| d.webhook_id == delivered_row.webhook_id && d.body == delivered_row.body)
    );

    // Nothing left; and fanning the same rows out again creates nothing new.
    assert_eq!(fan_out(&db).await, fanout::FanOutReport::default());
    sqlx::query("insert into outbox_to_fan_out (outbox_id) select id from outbox")
        .execute(db.store().pool())
        .await
        .unwrap();
    assert_eq!(
        fan_out(&db).await,
        fanout::FanOutReport {
            rows: 3,
            deliveries: 0,
            traceparents: Vec::new(),
        }
    );
    db.drop_database().await.unwrap();
}

#[tokio::test]
async fn the_fan_out_names_the_traces_of_the_changes_it_fans_out() {
    let db = database().await;
    subscribe(&db, "default", &[], &[Status::Delivered]).await;
    let traced = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut batch = open_batch(vec![event("T1", 10, Status::Delivered, "SYD")]);
    batch.items[0].traceparent = Some(traced.to_owned());
    let mut unwanted = item(false, vec![event("T2", 10, Status::InTransit, "SYD")]);
    unwanted.traceparent = Some(traced.replace("4bf9", "0000"));
    batch.items.push(unwanted);
    db.store().apply_batch(batch).await.unwrap();
    let report = fan_out(&db).await;
    assert_eq!(report.deliveries, 1);
    assert_eq!(
        report.traceparents,
        [traced],
        "only the change a subscription wanted"
    );
    db.drop_database().await.unwrap();
}

#[tokio::test]
async fn changes_no_subscription_wants_are_written_fanned_out() {
    let db = database().await;
    // A subscription of another tenant, and a disabled one of this tenant: neither counts.
    subscribe(&db, "globex", &[], &[]).await;
    let disabled = subscribe(&db, "default", &[], &[]).await;
    let mut conn = db.store().acquire().await.unwrap();
    fanout::disable_subscription(&mut conn, disabled, DisabledReason::Manual, Utc::now())
        .await
        .unwrap();
    drop(conn);
    three_changes(&db).await;
    let mut conn = db.store().acquire().await.unwrap();
    assert_eq!(
        fanout::relay_backlog(&mut conn).await.unwrap(),
        (3, 0),
        "to publish, but nothing to fan out"
    );
    drop(conn);
    assert_eq!(fan_out(&db).await, fanout::FanOutReport::default());

    // Nor does a subscription whose filters the changes do not match.
    subscribe(&db, "default", &["dhl"], &[]).await;
    merge(db.store(), vec![event("A2", 20, Status::Delivered, "SYD")]).await;
    assert_eq!(fan_out(&db).await, fanout::FanOutReport::default());

    // Once the tenant has a subscription that wants them, its new changes wait for the fan-out.
    let sub = subscribe(&db, "default", &[], &[]).await;
    merge(db.store(), vec![event("A1", 20, Status::Delivered, "SYD")]).await;
    let report = fan_out(&db).await;
    assert_eq!((report.rows, report.deliveries), (1, 1));
    assert_eq!(deliveries(&db, sub).await.len(), 1);
    db.drop_database().await.unwrap();
}

#[tokio::test]
async fn concurrent_relays_claim_disjoint_rows_and_only_confirmed_rows_are_marked() {
    let db = database().await;
    three_changes(&db).await;
    let mut first = db.store().begin().await.unwrap();
    let mut second = db.store().begin().await.unwrap();
    let a = fanout::claim_unpublished(&mut first, 2, &waybill_store::EncodedBodies::new(0))
        .await
        .unwrap();
    let b = fanout::claim_unpublished(&mut second, 2, &waybill_store::EncodedBodies::new(0))
        .await
        .unwrap();
    assert_eq!(a.len(), 2);
    assert_eq!(b.len(), 1, "rows another relay holds are skipped");
    assert!(a.iter().all(|x| b.iter().all(|y| x.id != y.id)));
    assert!(a[0].id < a[1].id, "oldest first");

    // The first relay's broker confirmed one of its two; the second crashed (rolled back).
    fanout::mark_published(&mut first, &[a[0].id])
        .await
        .unwrap();
    first.commit().await.unwrap();
    second.rollback().await.unwrap();

    let mut conn = db.store().acquire().await.unwrap();
    assert_eq!(fanout::relay_backlog(&mut conn).await.unwrap().0, 2);
    drop(conn);
    let mut tx = db.store().begin().await.unwrap();
    let again = fanout::claim_unpublished(&mut tx, 10, &waybill_store::EncodedBodies::new(0))
        .await
        .unwrap();
    let ids: Vec<i64> = again.iter().map(|e| e.id).collect();
    assert_eq!(ids, vec![a[1].id, b[0].id]);
    tx.rollback().await.unwrap();
    db.drop_database().await.unwrap();
}

/// The ids of what a relay would publish now, oldest first (claimed and released).
async fn unpublished_ids(db: &TestDatabase) -> Vec<i64> {
    let mut tx = db.store().begin().await.unwrap();
    let rows = fanout::claim_unpublished(&mut tx, 100, &waybill_store::EncodedBodies::new(0))
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    rows.iter().map(|e| e.id).collect()
}

/// A database migrated only to `version`, with [`three_changes`] merged (after a subscription
/// of the default tenant to every change, with `subscribed`) and the first of them marked done
/// the previous release's way, by `mark` (an update of outbox row `$1`), then migrated to the
/// latest version. Returns the outbox ids, oldest first, and the subscription.
async fn upgraded_from(
    version: i64,
    subscribed: bool,
    mark: &str,
) -> (
    TestDatabase,
    waybill_store::PooledConnection,
    Vec<i64>,
    Option<i64>,
) {
    let db = TestDatabase::create_empty(&TestDatabase::admin_url(), 2)
        .await
        .unwrap();
    let mut conn = db.store().acquire().await.unwrap();
    waybill_store::migrate::migrate_to(&mut conn, version)
        .await
        .unwrap();
    let sub = match subscribed {
        true => Some(subscribe(&db, "default", &[], &[]).await),
        false => None,
    };
    three_changes(&db).await;
    let written: Vec<i64> = sqlx::query_scalar("select id from outbox order by id")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    sqlx::query(mark)
        .bind(written[0])
        .execute(&mut *conn)
        .await
        .unwrap();
    db.store().migrate().await.unwrap();
    (db, conn, written, sub)
}

/// Merges a fourth change, then writes outbox row `id` again as its next version the way a
/// previous release's merge would, naming no id table, with `fanned_out_at` set to the SQL
/// expression given.
async fn merge_and_write_again(
    db: &TestDatabase,
    conn: &mut PgConnection,
    id: i64,
    fanned_out_at: &str,
) {
    merge(
        db.store(),
        vec![event("A4", 20, Status::OutForDelivery, "SYD")],
    )
    .await;
    sqlx::query(&format!(
        "insert into outbox (tenant, shipment_id, event_id, carrier, tracking_number,
                             new_status, occurred_at, version, payload, fanned_out_at)
         select tenant, shipment_id, event_id, carrier, tracking_number, new_status,
                occurred_at, version + 1, payload, {fanned_out_at}
         from outbox where id = $1"
    ))
    .bind(id)
    .execute(conn)
    .await
    .unwrap();
}

#[tokio::test]
async fn the_upgrade_to_outbox_to_publish_keeps_what_was_unpublished_and_silences_old_relays() {
    // The previous release's relay published the first change.
    let (db, mut conn, written, _) = upgraded_from(
        10,
        false,
        "update outbox set published_at = now() where id = $1",
    )
    .await;

    assert_eq!(unpublished_ids(&db).await, written[1..].to_vec());
    // A previous release's relay, still running during the rollout, finds nothing to publish,
    // so no change is published by both.
    let old_relay_backlog: i64 =
        sqlx::query_scalar("select count(*) from outbox where published_at is null")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert_eq!(old_relay_backlog, 0);
    // A row written without naming the set (as the previous release's merge writes it) joins it.
    merge_and_write_again(&db, &mut conn, written[2], "null").await;
    let pending = unpublished_ids(&db).await;
    assert_eq!(pending.len(), 4);
    assert_eq!(pending[..2], written[1..]);
    assert_eq!(fanout::relay_backlog(&mut conn).await.unwrap().0, 4);

    // Publishing takes ids out of the set and leaves the rows as they were written.
    let mut tx = db.store().begin().await.unwrap();
    assert_eq!(fanout::mark_published(&mut tx, &pending).await.unwrap(), 4);
    tx.commit().await.unwrap();
    assert!(unpublished_ids(&db).await.is_empty());
    assert_eq!(waybill_store::count_outbox(&mut conn).await.unwrap(), 5);
    drop(conn);
    db.drop_database().await.unwrap();
}

/// The rows still to fan out, and those whose `fanned_out_at` is null (what a previous
/// release's relay claims).
async fn fan_out_backlog(conn: &mut PgConnection) -> (u64, i64) {
    let (_, to_fan_out) = fanout::relay_backlog(conn).await.unwrap();
    let null: i64 = sqlx::query_scalar("select count(*) from outbox where fanned_out_at is null")
        .fetch_one(conn)
        .await
        .unwrap();
    (to_fan_out, null)
}

#[tokio::test]
async fn the_upgrade_to_outbox_to_fan_out_keeps_what_was_not_fanned_out_and_old_relays_add_nothing()
{
    // The previous release's relay fanned out the first change, marking its row.
    let (db, mut conn, written, sub) = upgraded_from(
        11,
        true,
        "update outbox set fanned_out_at = now() where id = $1",
    )
    .await;
    let sub = sub.unwrap();

    assert_eq!(fan_out_backlog(&mut conn).await, (2, 2));
    let report = fan_out(&db).await;
    assert_eq!((report.rows, report.deliveries), (2, 2));
    let created: Vec<i64> = deliveries(&db, sub)
        .await
        .iter()
        .map(|d| d.outbox_id)
        .collect();
    assert_eq!(created, written[1..].to_vec());
    // The rows are left as they were written: a previous release's relay, still running during
    // the rollout, claims them again, and its fan-out creates nothing new.
    assert_eq!(fan_out_backlog(&mut conn).await, (0, 2));
    let old_relay = sqlx::query(
        "insert into deliveries (subscription_id, outbox_id, tenant, webhook_id, body,
                                 next_attempt_at)
         select s.id, o.id, o.tenant, 'msg_old_relay', '\\x00', now()
         from outbox o join subscriptions s on s.tenant = o.tenant
         where o.fanned_out_at is null
         on conflict (subscription_id, outbox_id) do nothing",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    assert_eq!(old_relay.rows_affected(), 0);
    assert_eq!(deliveries(&db, sub).await.len(), 2);

    // A change written wanted (`fanned_out_at` null, as both releases' merges write it) joins
    // the set; one written already fanned out does not.
    merge_and_write_again(&db, &mut conn, written[2], "now()").await;
    assert_eq!(fan_out_backlog(&mut conn).await, (1, 3));
    let report = fan_out(&db).await;
    assert_eq!((report.rows, report.deliveries), (1, 1));
    assert_eq!(fan_out_backlog(&mut conn).await, (0, 3));
    assert_eq!(waybill_store::count_outbox(&mut conn).await.unwrap(), 5);
    drop(conn);
    db.drop_database().await.unwrap();
}

#[tokio::test]
async fn ids_whose_rows_are_gone_leave_both_sets_when_claimed() {
    let db = database().await;
    subscribe(&db, "default", &[], &[]).await;
    three_changes(&db).await;
    // A change whose row was deleted while its id waited (its shipment forgotten).
    let mut conn = db.store().acquire().await.unwrap();
    for table in ["outbox_to_publish", "outbox_to_fan_out"] {
        sqlx::query(&format!("insert into {table} (outbox_id) values (999999)"))
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    assert_eq!(fanout::relay_backlog(&mut conn).await.unwrap(), (4, 4));

    let mut tx = db.store().begin().await.unwrap();
    let claimed = fanout::claim_unpublished(&mut tx, 10, &waybill_store::EncodedBodies::new(0))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(claimed.len(), 3);
    let report = fan_out(&db).await;
    assert_eq!((report.rows, report.deliveries), (4, 3));
    assert_eq!(
        fanout::relay_backlog(&mut conn).await.unwrap(),
        (3, 0),
        "the three changes are still to publish; the gone one is in neither set"
    );
    drop(conn);
    db.drop_database().await.unwrap();
}

#[tokio::test]
async fn pruning_deletes_only_what_is_done_with_and_older_than_the_retention() {
    let (db, [_]) = three_changes_fanned_out_to().await;
    let mut tx = db.store().begin().await.unwrap();
    let rows = fanout::claim_unpublished(&mut tx, 10, &waybill_store::EncodedBodies::new(0))
        .await
        .unwrap();
    let published: Vec<i64> = rows.iter().map(|e| e.id).collect();
    fanout::mark_published(&mut tx, &published).await.unwrap();
    tx.commit().await.unwrap();
    // A fourth change, fanned out but never published (the broker was down for a week).
    merge(db.store(), vec![event("A4", 10, Status::InTransit, "SYD")]).await;
    fan_out(&db).await;

    let mut conn = db.store().acquire().await.unwrap();
    let ids = |table: &'static str| {
        sqlx::query_scalar::<_, i64>(match table {
            "outbox" => "select id from outbox order by id",
            _ => "select id from deliveries order by id",
        })
    };
    let outbox = ids("outbox").fetch_all(&mut *conn).await.unwrap();
    let deliveries = ids("deliveries").fetch_all(&mut *conn).await.unwrap();
    assert_eq!((outbox.len(), deliveries.len()), (4, 4));
    // Outbox: all four written 8 days ago (no row is young by its writing time, so the pass
    // reads them all). The first two are done with; the third is still to fan out (its
    // subscription's fan-out stalled); the fourth is fanned out but still unpublished.
    sqlx::query("update outbox set created_at = created_at - interval '8 days'")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("insert into outbox_to_fan_out (outbox_id) values ($1)")
        .bind(outbox[2])
        .execute(&mut *conn)
        .await
        .unwrap();
    // Deliveries: delivered 8 days ago, delivered just now, dead 8 days ago, pending for 8 days.
    for (id, change) in [
        (
            deliveries[0],
            "status = 'delivered', next_attempt_at = null, delivered_at = now() - interval '8 days'",
        ),
        (
            deliveries[1],
            "status = 'delivered', next_attempt_at = null, delivered_at = now()",
        ),
        (
            deliveries[2],
            "status = 'dead', next_attempt_at = null, dead_at = now() - interval '8 days'",
        ),
        (deliveries[3], "created_at = now() - interval '8 days'"),
    ] {
        sqlx::query(&format!("update deliveries set {change} where id = $1"))
            .bind(id)
            .execute(&mut *conn)
            .await
            .unwrap();
    }

    let week_ago = Utc::now() - chrono::Duration::days(7);
    // At most `limit` of each, oldest first.
    let first = fanout::prune(&mut conn, week_ago, 1).await.unwrap();
    assert_eq!((first.outbox, first.deliveries), (1, 1));
    assert_eq!(
        ids("outbox").fetch_all(&mut *conn).await.unwrap()[0],
        outbox[1]
    );
    let rest = fanout::prune(&mut conn, week_ago, 100).await.unwrap();
    assert_eq!((rest.outbox, rest.deliveries), (1, 0));
    let again = fanout::prune(&mut conn, week_ago, 100).await.unwrap();
    assert_eq!(
        again,
        fanout::Pruned::default(),
        "nothing else is old and done with"
    );

    assert_eq!(
        ids("outbox").fetch_all(&mut *conn).await.unwrap(),
        vec![outbox[2], outbox[3]],
        "the row still to fan out and the unpublished one stay"
    );
    assert_eq!(
        ids("deliveries").fetch_all(&mut *conn).await.unwrap(),
        deliveries[1..].to_vec(),
        "recent, dead and pending deliveries stay"
    );
    // The fourth change can still be published after the prune.
    drop(conn);
    let mut tx = db.store().begin().await.unwrap();
    let pending = fanout::claim_unpublished(&mut tx, 10, &waybill_store::EncodedBodies::new(0))
        .await
        .unwrap();
    assert_eq!(
        pending.iter().map(|e| e.id).collect::<Vec<_>>(),
        vec![outbox[3]]
    );
    tx.rollback().await.unwrap();
    db.drop_database().await.unwrap();
}

async fn claim(
    db: &TestDatabase,
    now: DateTime<Utc>,
    room: u32,
    per_subscription: u32,
    room_of: &[(i64, u32)],
) -> Vec<ClaimedDelivery> {
    let mut conn = db.store().acquire().await.unwrap();
    fanout::claim_due_deliveries(
        &mut conn,
        now,
        Duration::from_secs(60),
        room,
        per_subscription,
        room_of,
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn claims_respect_room_per_subscription_limits_leases_and_stale_outcomes() {
    let (db, [busy_sub, quiet_sub]) = three_changes_fanned_out_to().await;
    let now = Utc::now() + chrono::Duration::seconds(1);

    let of = |claimed: &[ClaimedDelivery], sub: i64| {
        claimed.iter().filter(|c| c.subscription_id == sub).count()
    };
    // One per subscription, but `busy_sub` has no room of its own (all its slots are taken).
    let full = claim(&db, now, 10, 1, &[(busy_sub, 0)]).await;
    assert_eq!((of(&full, busy_sub), of(&full, quiet_sub)), (0, 1));
    // Its own room may also be more than the default (a prompt receiver is claimed ahead).
    let claimed = claim(&db, now, 10, 1, &[(busy_sub, 3)]).await;
    assert_eq!((of(&claimed, busy_sub), of(&claimed, quiet_sub)), (3, 1));
    assert!(claimed.iter().all(|c| c.attempt == 1));
    assert_eq!(claimed[0].secret.expose(), SECRET);
    assert!(claimed[0].previous_secret.is_none());

    // Leased: the five claimed are not due again until the lease runs out.
    let rest = claim(&db, now, 10, 10, &[]).await;
    assert_eq!(rest.len(), 1);
    assert!(
        rest.iter()
            .all(|r| claimed.iter().chain(&full).all(|c| c.id != r.id))
    );
    assert!(claim(&db, now, 10, 10, &[]).await.is_empty());
    let after_lease = claim(&db, now + chrono::Duration::seconds(61), 10, 10, &[]).await;
    assert_eq!(after_lease.len(), 6);
    assert!(after_lease.iter().all(|c| c.attempt == 2));

    // The first claim's outcome is stale now; the second's counts.
    let mut conn = db.store().acquire().await.unwrap();
    let first = &claimed[0];
    assert!(
        !fanout::record_delivered(&mut conn, first.id, first.attempt, now, 200)
            .await
            .unwrap()
    );
    assert!(
        fanout::record_delivered(&mut conn, first.id, 2, now, 204)
            .await
            .unwrap()
    );
    let record = listed_delivery(&mut conn, first.subscription_id, first.id).await;
    assert_eq!(record.status, DeliveryStatus::Delivered);
    assert_eq!(record.last_status, Some(204));
    assert_eq!(record.next_attempt_at, None);
    drop(conn);
    db.drop_database().await.unwrap();
}

#[tokio::test]
async fn failures_reschedule_then_kill_and_a_long_failure_or_a_410_disables() {
    let (db, [sub, gone]) = three_changes_fanned_out_to().await;
    let t0 = Utc::now().trunc_subsecs(6) + chrono::Duration::seconds(1);
    let mut conn = db.store().acquire().await.unwrap();

    let claimed = claim(&db, t0, 10, 10, &[]).await;
    let mine: Vec<_> = claimed
        .iter()
        .filter(|c| c.subscription_id == sub)
        .collect();
    assert!(mine.iter().all(|c| c.attempt == 1));

    // 410: dead and disabled; its other deliveries wait.
    let to_gone = claimed.iter().find(|c| c.subscription_id == gone).unwrap();
    let recorded = fanout::record_gone(&mut conn, to_gone.id, 1, t0)
        .await
        .unwrap();
    assert!(recorded.recorded && recorded.subscription_disabled);
    let subscription = stored_subscription(&mut conn, gone).await;
    assert_eq!(subscription.disabled_reason, Some(DisabledReason::Gone));

    // A retry: still pending, due later; the subscription starts failing.
    let later = t0 + chrono::Duration::seconds(5);
    let retry = failed(&mut conn, mine[0], t0, Some(500), "HTTP 500", Some(later)).await;
    assert!(retry.recorded && !retry.subscription_disabled);
    let subscription = stored_subscription(&mut conn, sub).await;
    assert_eq!(subscription.failing_since, Some(t0));
    // Exhausted: dead. Still within the hour: enabled.
    let dead = failed(
        &mut conn,
        mine[1],
        t0 + chrono::Duration::minutes(30),
        None,
        "timed out",
        None,
    )
    .await;
    assert!(dead.recorded && !dead.subscription_disabled);
    // A success in between resets the failure clock.
    assert!(
        fanout::record_delivered(&mut conn, mine[2].id, 1, t0, 200)
            .await
            .unwrap()
    );
    let subscription = stored_subscription(&mut conn, sub).await;
    assert_eq!(subscription.failing_since, None);

    // The retried one fails again two hours later, then again past the hour since that: disabled.
    let again = claim(&db, later, 10, 10, &[]).await;
    let retried = again.iter().find(|c| c.id == mine[0].id).unwrap();
    assert_eq!(retried.attempt, 2);
    let t1 = t0 + chrono::Duration::hours(2);
    failed(&mut conn, retried, t1, None, "HTTP 503", Some(t1)).await;
    let retried = claim(&db, t1, 10, 10, &[]).await;
    assert_eq!(retried.len(), 1, "the gone subscription's deliveries wait");
    let t2 = t1 + chrono::Duration::minutes(61);
    assert_eq!(retried[0].attempt, 3);
    let disabled = failed(&mut conn, &retried[0], t2, Some(503), "HTTP 503", Some(t2)).await;
    assert!(disabled.recorded && disabled.subscription_disabled);
    let subscription = stored_subscription(&mut conn, sub).await;
    assert!(!subscription.enabled);
    assert_eq!(subscription.disabled_reason, Some(DisabledReason::Failing));
    assert!(
        claim(&db, t2 + chrono::Duration::days(1), 10, 10, &[])
            .await
            .iter()
            .all(|c| c.subscription_id != sub),
        "a disabled subscription's deliveries wait"
    );

    let counts = fanout::count_disabled_subscriptions(&mut conn)
        .await
        .unwrap();
    assert_eq!(counts.len(), 2);

    // Dead deliveries are listed and replayed with a fresh schedule, same id and bytes.
    let dead = fanout::list_dead(
        &mut conn,
        &DeadFilter {
            subscription_id: Some(sub),
            tenant: None,
            limit: 10,
        },
    )
    .await
    .unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].last_error.as_deref(), Some("timed out"));
    let before = dead[0].clone();
    let replayed = fanout::replay_dead(&mut conn, &[before.id, mine[2].id], t2)
        .await
        .unwrap();
    assert_eq!(
        replayed,
        vec![before.id],
        "only dead deliveries are replayed"
    );
    let after = listed_delivery(&mut conn, sub, before.id).await;
    assert_eq!(after.status, DeliveryStatus::Pending);
    assert_eq!(after.attempts, 0);
    assert_eq!(after.replays, 1);
    assert_eq!(
        (after.webhook_id, after.body),
        (before.webhook_id, before.body)
    );
    assert_eq!(
        fanout::replay_all_dead(&mut conn, gone, t2).await.unwrap(),
        1
    );

    // Enabling forgets the failures and makes the pending deliveries due at once; removing
    // takes the deliveries along.
    let enabled_at = t2 - chrono::Duration::minutes(1);
    let enabled = fanout::enable_subscription(&mut conn, sub, enabled_at)
        .await
        .unwrap()
        .unwrap();
    assert!(
        enabled.enabled && enabled.disabled_reason.is_none() && enabled.failing_since.is_none()
    );
    let pending: Vec<_> = fanout::list_deliveries(&mut conn, sub)
        .await
        .unwrap()
        .into_iter()
        .filter(|d| d.status == DeliveryStatus::Pending)
        .collect();
    assert_eq!(pending.len(), 2);
    assert!(
        pending
            .iter()
            .all(|d| d.next_attempt_at == Some(enabled_at))
    );
    assert_eq!(
        fanout::delete_subscription(&mut conn, sub).await.unwrap(),
        Some(3)
    );
    assert_eq!(
        fanout::delete_subscription(&mut conn, sub).await.unwrap(),
        None
    );
    drop(conn);
    db.drop_database().await.unwrap();
}

#[tokio::test]
async fn a_rotated_secret_is_signed_with_until_its_window_closes() {
    let (db, [sub]) = three_changes_fanned_out_to().await;
    let now = Utc::now() + chrono::Duration::seconds(1);
    let newer = SecretText::new("whsec_bmV3ZXItc2VjcmV0LW5ld2VyLXNlY3JldA==");
    let mut conn = db.store().acquire().await.unwrap();
    let rotated = fanout::rotate_secret(&mut conn, sub, &newer, now + chrono::Duration::hours(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rotated.secret, newer);
    assert_eq!(rotated.previous_secret, Some(SecretText::new(SECRET)));
    assert!(
        !format!("{rotated:?}").contains("whsec_"),
        "secrets never print"
    );
    drop(conn);
    let within = claim(&db, now, 1, 10, &[]).await;
    assert_eq!(within[0].secret, newer);
    assert_eq!(within[0].previous_secret, Some(SecretText::new(SECRET)));
    let after = claim(&db, now + chrono::Duration::hours(2), 1, 10, &[]).await;
    assert_eq!(after[0].previous_secret, None);
    db.drop_database().await.unwrap();
}

#[tokio::test]
async fn bad_subscriptions_are_refused_by_the_schema() {
    let db = database().await;
    let pool = db.store().pool();
    for (url, statuses, secret) in [
        ("ftp://x", "{}", SECRET),
        ("https://x", "{Teleported}", SECRET),
        ("https://x", "{}", "plain"),
    ] {
        let refused = sqlx::query(
            "insert into subscriptions (tenant, url, statuses, secret) values ('default', $1, $2::text[], $3)",
        )
        .bind(url)
        .bind(statuses)
        .bind(secret)
        .execute(pool)
        .await;
        assert!(refused.is_err(), "{url} {statuses} {secret} accepted");
    }
    let _ = ups();
    db.drop_database().await.unwrap();
}

#[tokio::test]
async fn delivered_outcomes_are_written_together_and_a_stale_claim_is_left_alone() {
    let t0 = Utc::now().trunc_subsecs(6) + chrono::Duration::seconds(1);
    let (db, [sub, other]) = three_changes_fanned_out_to().await;
    let claimed = claim(&db, t0, 10, 10, &[]).await;
    let of = |subscription: i64| -> Vec<&ClaimedDelivery> {
        claimed
            .iter()
            .filter(|c| c.subscription_id == subscription)
            .collect()
    };
    let (mine, theirs) = (of(sub), of(other));
    let mut conn = db.store().acquire().await.unwrap();
    // `sub` is failing: a success in the batch clears it.
    let later = t0 + chrono::Duration::seconds(5);
    failed(&mut conn, mine[0], t0, Some(500), "HTTP 500", Some(later)).await;
    assert_eq!(
        stored_subscription(&mut conn, sub).await.failing_since,
        Some(t0)
    );

    let outcome = |delivery: &ClaimedDelivery, attempt: i32, status: u16| DeliveredOutcome {
        id: delivery.id,
        attempt,
        status,
    };
    let outcomes = [
        outcome(mine[1], 1, 200),
        outcome(theirs[0], 1, 204),
        // A claim the delivery no longer has: nothing is written for it.
        outcome(mine[2], 2, 200),
    ];
    let mut recorded = fanout::record_all_delivered(&mut conn, &outcomes, later)
        .await
        .unwrap();
    recorded.sort_unstable();
    let mut expected = vec![mine[1].id, theirs[0].id];
    expected.sort_unstable();
    assert_eq!(recorded, expected);

    let written = listed_delivery(&mut conn, other, theirs[0].id).await;
    assert_eq!(written.status, DeliveryStatus::Delivered);
    assert_eq!(written.last_status, Some(204));
    assert_eq!(written.delivered_at, Some(later));
    let stale = listed_delivery(&mut conn, sub, mine[2].id).await;
    assert_eq!(stale.status, DeliveryStatus::Pending);
    assert_eq!(stale.delivered_at, None);
    assert_eq!(
        stored_subscription(&mut conn, sub).await.failing_since,
        None
    );
    drop(conn);
    db.drop_database().await.unwrap();
}

#[tokio::test]
async fn the_relay_publishes_the_bodies_its_merges_kept_as_their_payloads_would_read() {
    let db = database().await;
    let report = merge(
        db.store(),
        vec![
            event("1ZKEPT1", 0, Status::InTransit, "Auckland"),
            event(
                "1ZKEPT2",
                60,
                Status::Delivered,
                "Wellington \"Depot\" Ōtaki\n",
            ),
        ],
    )
    .await;
    assert_eq!(report.encoded_bodies.len(), 2);
    let claim = |bodies: waybill_store::EncodedBodies| {
        let db = &db;
        async move {
            let mut tx = db.store().begin().await.unwrap();
            let entries = fanout::claim_unpublished(&mut tx, 10, &bodies)
                .await
                .unwrap();
            tx.rollback().await.unwrap();
            entries
        }
    };

    // Read back from the stored payloads, each change is the bytes the merge kept.
    let stored = claim(waybill_store::EncodedBodies::new(0)).await;
    assert_eq!(stored.len(), 2);
    for (id, bytes) in &report.encoded_bodies {
        let entry = stored.iter().find(|entry| entry.id == *id).unwrap();
        assert_eq!(&entry.body, bytes, "outbox row {id}");
        assert_eq!(entry.event_type, "shipment.status_changed");
    }

    // A kept body is published as kept (a marker here shows which path was taken), once; the
    // other row is read from its payload; the ids not claimed stay kept.
    let bodies = waybill_store::EncodedBodies::new(10);
    let (kept_id, _) = report.encoded_bodies[0];
    bodies.offer([(kept_id, b"kept".to_vec()), (i64::MAX, b"other".to_vec())]);
    let entries = claim(bodies.clone()).await;
    let kept = entries.iter().find(|entry| entry.id == kept_id).unwrap();
    assert_eq!(kept.body, b"kept");
    assert_eq!(kept.event_type, "shipment.status_changed");
    let other = entries.iter().find(|entry| entry.id != kept_id).unwrap();
    assert_eq!(
        other.body,
        stored.iter().find(|e| e.id == other.id).unwrap().body
    );
    assert_eq!(
        bodies.len(),
        1,
        "taken by the claim; the unclaimed one stays"
    );
    // Taken once: the claim rolled back, so the next one reads the payload.
    let again = claim(bodies).await;
    let kept_again = again.iter().find(|entry| entry.id == kept_id).unwrap();
    assert_eq!(
        kept_again.body,
        stored.iter().find(|e| e.id == kept_id).unwrap().body
    );
}
