//! API keys in Postgres: stored as hashes only, listed, revoked, and snapshotted with a
//! revision that every change bumps.

use waybill_core::TenantId;
use waybill_core::access::{ApiKey, KeyId, Scope};
use waybill_store::NewApiKey;
use waybill_store::keys::{insert_api_key, key_set_snapshot, list_api_keys, revoke_api_key};

const SECRET: &str = "Zm9vYmFyYmF6cXV4LXNlY3JldC1ub3QtcmVhbGx5XyE";

fn key(id: &str) -> ApiKey {
    ApiKey::from_parts(KeyId::parse(id).unwrap(), SECRET.to_owned()).unwrap()
}

#[tokio::test]
async fn keys_are_stored_as_hashes_and_every_change_bumps_the_revision() {
    let db = crate::common::database().await;
    let mut conn = db.store().acquire().await.unwrap();
    let acme = TenantId::parse("acme").unwrap();
    let globex = TenantId::parse("globex").unwrap();

    let empty = key_set_snapshot(&mut conn).await.unwrap();
    assert!(empty.keys.is_empty());

    let first = key("aaaaaaaaaaa1");
    let stored = insert_api_key(
        &mut conn,
        &NewApiKey {
            id: first.id(),
            tenant: &acme,
            name: "reader",
            scopes: &[Scope::ShipmentsRead],
            secret_sha256: &first.secret_sha256(),
        },
    )
    .await
    .unwrap();
    assert_eq!(stored.scopes, vec![Scope::ShipmentsRead]);
    assert!(stored.secret_sha256.matches(&first.secret_sha256()));
    let second = key("bbbbbbbbbbb2");
    insert_api_key(
        &mut conn,
        &NewApiKey {
            id: second.id(),
            tenant: &globex,
            name: "writer",
            scopes: &[Scope::ShipmentsWrite, Scope::ShipmentsRead],
            secret_sha256: &second.secret_sha256(),
        },
    )
    .await
    .unwrap();

    let after_inserts = key_set_snapshot(&mut conn).await.unwrap();
    assert_eq!(after_inserts.epoch, empty.epoch);
    assert_eq!(after_inserts.revision, empty.revision + 2);
    assert_eq!(after_inserts.keys.len(), 2);

    assert_eq!(
        list_api_keys(&mut conn, Some(&acme), None)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        list_api_keys(&mut conn, None, Some("bbb")).await.unwrap()[0].id,
        *second.id()
    );
    assert!(
        list_api_keys(&mut conn, None, Some("zzz"))
            .await
            .unwrap()
            .is_empty()
    );

    let revoked = revoke_api_key(&mut conn, first.id())
        .await
        .unwrap()
        .unwrap();
    let when = revoked.revoked_at.unwrap();
    let again = revoke_api_key(&mut conn, first.id())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        again.revoked_at,
        Some(when),
        "revoking twice keeps the first time"
    );
    assert!(
        revoke_api_key(&mut conn, &KeyId::parse("cccccccccccc").unwrap())
            .await
            .unwrap()
            .is_none()
    );
    let after_revoke = key_set_snapshot(&mut conn).await.unwrap();
    assert!(after_revoke.revision > after_inserts.revision);
    assert!(
        after_revoke
            .keys
            .iter()
            .find(|k| k.id == *first.id())
            .unwrap()
            .to_record()
            .revoked
    );

    // Nothing in the table holds the secret in clear, in any encoding Postgres would show.
    let dump: String = sqlx_dump(&mut conn).await;
    assert!(!dump.contains(SECRET));
    assert!(!dump.contains(&first.expose()));

    drop(conn);
    db.drop_database().await.unwrap();
}

#[tokio::test]
async fn unknown_scopes_and_short_hashes_are_refused_by_the_schema() {
    let db = crate::common::database().await;
    let mut conn = db.store().acquire().await.unwrap();
    let unknown_scope = sqlx::query(
        "insert into api_keys (id, tenant, scopes, secret_sha256)
         values ('dddddddddddd', 'acme', array['shipments:delete'], decode(repeat('00', 32), 'hex'))",
    )
    .execute(&mut *conn)
    .await;
    assert!(unknown_scope.is_err());
    let short_hash = sqlx::query(
        "insert into api_keys (id, tenant, scopes, secret_sha256)
         values ('dddddddddddd', 'acme', array['admin'], decode('00', 'hex'))",
    )
    .execute(&mut *conn)
    .await;
    assert!(short_hash.is_err());
    drop(conn);
    db.drop_database().await.unwrap();
}

/// Every row of `api_keys` as Postgres prints it (bytea as hex), in one string.
async fn sqlx_dump(conn: &mut waybill_store::PgConnection) -> String {
    sqlx::query_scalar("select coalesce(string_agg(t::text, ' '), '') from api_keys t")
        .fetch_one(conn)
        .await
        .unwrap()
}
