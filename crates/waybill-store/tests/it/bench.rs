//! The benchmark's ideal worker write against a real Postgres: one statement per batch that
//! upserts each shipment once and inserts only the events that are new, so its figure counts
//! the same rows the worker writes.

use crate::common::{at, with_store};
use waybill_store::bench::{EventColumns, ideal_merge, remove_tenant};

fn batch(events: &[(&str, &str, i64, &str)]) -> EventColumns {
    let mut columns = EventColumns::default();
    for (tracking_number, status, seconds, id) in events {
        columns.tenants.push("bench-ideal".to_owned());
        columns.carriers.push("ups".to_owned());
        columns.tracking_numbers.push((*tracking_number).to_owned());
        columns.statuses.push((*status).to_owned());
        columns.occurred_at.push(at(*seconds));
        columns.event_ids.push((*id).to_owned());
    }
    columns
}

async fn stored_events(conn: &mut waybill_store::PgConnection) -> i64 {
    sqlx::query_scalar("select count(*) from tracking_events where tenant = 'bench-ideal'")
        .fetch_one(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn ideal_merge_writes_new_events_once_and_keeps_the_latest_status() {
    with_store(async |store| {
        let mut conn = store.acquire().await.unwrap();
        // Two events of one shipment in one batch, out of order, and one of another.
        let first = batch(&[
            ("1Z1", "Delivered", 20, "e2"),
            ("1Z1", "InTransit", 10, "e1"),
            ("1Z2", "InTransit", 5, "e3"),
        ]);
        let mut inserted = ideal_merge(&mut conn, &first).await.unwrap();
        inserted.sort();
        assert_eq!(inserted, ["e1", "e2", "e3"]);

        // Redelivered with an older event of the first shipment: only that one is new, and the
        // shipment keeps its latest status.
        let second = batch(&[
            ("1Z1", "Delivered", 20, "e2"),
            ("1Z1", "InfoReceived", 1, "e0"),
        ]);
        assert_eq!(ideal_merge(&mut conn, &second).await.unwrap(), ["e0"]);
        let statuses: Vec<(String, String)> = sqlx::query_as(
            "select tracking_number, status from shipments where tenant = 'bench-ideal'
              order by tracking_number",
        )
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        assert_eq!(
            statuses,
            [
                ("1Z1".to_owned(), "Delivered".to_owned()),
                ("1Z2".to_owned(), "InTransit".to_owned())
            ]
        );
        assert_eq!(stored_events(&mut conn).await, 4);

        remove_tenant(store, "bench-ideal").await.unwrap();
        assert_eq!(stored_events(&mut conn).await, 0);
    })
    .await;
}
