//! Rejected events against a real Postgres: stored once however often the message is
//! redelivered, listed newest first per source, shown, and marked replayed.

use crate::common::connected;
use chrono::{TimeZone, Utc};
use waybill_store::PgConnection;
use waybill_store::rejected::{self, NewRejectedEvent, RejectedEvent, RejectedFilter};

fn row(envelope: &str, position: i32, source: &str, minute: u32) -> NewRejectedEvent {
    NewRejectedEvent {
        envelope_id: envelope.to_owned(),
        position,
        tenant: "default".to_owned(),
        source: source.to_owned(),
        profile: "kea-parcel".to_owned(),
        path: format!("$/scans/{position}"),
        kind: "invalid_timestamp".to_owned(),
        reason: "the timestamp at $/scans/1/at is invalid".to_owned(),
        element: serde_json::json!({"code": "PU", "at": "yesterday"}),
        tracking_number: Some("KP1".to_owned()),
        raw_body: r#"{"scans":[]}"#.to_owned(),
        received_at: Utc.with_ymd_and_hms(2026, 11, 27, 10, minute, 0).unwrap(),
    }
}

/// The rejected events `filter` selects (at most ten), newest first.
async fn listed(conn: &mut PgConnection, filter: RejectedFilter) -> Vec<RejectedEvent> {
    rejected::list(
        conn,
        &RejectedFilter {
            limit: 10,
            ..filter
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn stored_once_listed_shown_and_marked_replayed() {
    let (db, mut conn) = connected().await;
    let rows = [
        row("e1", 0, "kea", 1),
        row("e1", 1, "kea", 1),
        row("e2", 0, "other", 2),
    ];
    let inserted = rejected::insert(&mut conn, &rows).await.unwrap();
    assert_eq!(inserted.len(), 3);
    assert_eq!(
        inserted[0],
        ("kea".to_owned(), "invalid_timestamp".to_owned())
    );
    // A redelivered message stores nothing twice.
    assert!(
        rejected::insert(&mut conn, &rows[..1])
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(rejected::count_pending(&mut conn).await.unwrap(), 3);

    let all = listed(&mut conn, RejectedFilter::default()).await;
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].stored.source, "other", "newest first");
    let kea = listed(
        &mut conn,
        RejectedFilter {
            source: Some("kea".to_owned()),
            ..RejectedFilter::default()
        },
    )
    .await;
    assert_eq!(kea.len(), 2);
    let shown = rejected::get(&mut conn, kea[0].id).await.unwrap().unwrap();
    assert_eq!(shown.stored.element["at"], "yesterday");
    assert!(rejected::get(&mut conn, -1).await.unwrap().is_none());

    assert!(
        rejected::mark_replayed(&mut conn, shown.id, Utc::now())
            .await
            .unwrap()
    );
    assert_eq!(rejected::count_pending(&mut conn).await.unwrap(), 2);
    let pending = listed(&mut conn, RejectedFilter::default()).await;
    assert!(pending.iter().all(|r| r.id != shown.id));
    let with_replayed = listed(
        &mut conn,
        RejectedFilter {
            include_replayed: true,
            ..RejectedFilter::default()
        },
    )
    .await;
    assert_eq!(with_replayed.len(), 3);
    drop(conn);
    db.drop_database().await.unwrap();
}
