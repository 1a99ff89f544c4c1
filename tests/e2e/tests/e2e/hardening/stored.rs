//! "200 means stored", as a property: signed webhooks in every built-in format and shipment
//! registrations, their text drawn from all of Unicode and from JSON's escapes (NUL, control
//! characters, lone and paired surrogate escapes, bidi marks, 4-byte characters, long runs),
//! posted through the real ingress to the real worker. Every request the ingress accepts must
//! end stored — each event with exactly the text the storage rule says (U+0000 replaced by
//! U+FFFD, everything else byte for byte) — and nothing may reach the dead-letter queue.
//! Refusals are fine; acceptance followed by a dead letter is the bug this catches.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use sqlx::Row;
use waybill_carriers::{CarrierProfile, Mapped, UnverifiedRequest};
use waybill_config::ExposeSecret;
use waybill_core::{TrackingEvent, TrackingNumber, storable};

use crate::pipeline::helpers::{TestApp, fixtures_dir, sign, spawn_app};

/// The sources of the test app, by the built-in profile they use.
const SOURCES: [(&str, &str); 5] = [
    ("starshipit", "starshipit"),
    ("clickpost", "clickpost"),
    ("aftership", "aftership"),
    ("easypost", "easypost"),
    ("direct", "waybill"),
];

/// One request sent, and what the ingress answered.
struct Sent {
    kind: Kind,
    body: Vec<u8>,
    status: u16,
    /// The refusal's `error` and the start of its message (empty when accepted).
    refusal: String,
    /// The tracking numbers the request is about (unique to it).
    tracking_numbers: Vec<String>,
    /// The queued envelope's id, when the answer named one.
    envelope_id: Option<String>,
}

#[derive(Clone, Copy)]
enum Kind {
    Webhook {
        source: &'static str,
        profile: &'static str,
    },
    Registration,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_request_is_stored_and_nothing_is_dead_lettered() {
    let cases: usize = env_number("WAYBILL_PROPERTY_CASES").unwrap_or(400);
    let seed: u64 = env_number("WAYBILL_PROPERTY_SEED").unwrap_or_else(rand::random);
    eprintln!("property: {cases} cases, WAYBILL_PROPERTY_SEED={seed}");
    let app = spawn_app().await;
    let profiles = app.settings.profiles().expect("profiles load");
    let templates = Templates::load(&profiles);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut sent = Vec::with_capacity(cases);
    for case in 0..cases {
        let one = if rng.random_bool(0.2) {
            registration(&app, &mut rng, case).await
        } else {
            webhook(&app, &templates, &mut rng, case).await
        };
        sent.push(one);
    }
    let mut tally: BTreeMap<u16, usize> = BTreeMap::new();
    for one in &sent {
        *tally.entry(one.status).or_default() += 1;
    }
    eprintln!("answers: {tally:?}");
    let mut refusals: BTreeMap<&str, usize> = BTreeMap::new();
    for one in sent.iter().filter(|one| !one.refusal.is_empty()) {
        *refusals.entry(&one.refusal).or_default() += 1;
    }
    eprintln!("refusals: {refusals:#?}");
    assert!(
        sent.iter().all(|one| one.status < 500),
        "a 5xx with a healthy broker: {tally:?}"
    );
    let accepted = sent.iter().filter(|one| one.status / 100 == 2).count();
    assert!(
        accepted >= cases / 4,
        "too few requests accepted to say anything ({accepted} of {cases}): {tally:?}"
    );

    app.drain().await;
    let pool = sqlx::PgPool::connect(app.db.url()).await.expect("database");
    let deadline = Instant::now() + Duration::from_secs(30);
    for one in sent.iter().filter(|one| one.status / 100 == 2) {
        check_stored(&pool, &profiles, one, deadline, seed).await;
    }
    assert_eq!(
        dead_letters(&app).await,
        0,
        "seed {seed}: something was dead-lettered"
    );
    pool.close().await;
    app.shutdown().await;
}

fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
}

/// Webhook templates: each built-in profile's webhook fixtures, with the string leaves that
/// hold a tracking number marked.
struct Templates {
    by_source: Vec<(Kind, Vec<Value>)>,
}

impl Templates {
    fn load(profiles: &waybill_carriers::ProfileRegistry) -> Templates {
        let mut by_source = Vec::new();
        for (source, profile) in SOURCES {
            let dir = fixtures_dir().join(profile);
            let mut bodies = Vec::new();
            for entry in std::fs::read_dir(&dir).expect("fixtures").flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.starts_with("poll-")
                    || !std::path::Path::new(&name)
                        .extension()
                        .is_some_and(|extension| extension.eq_ignore_ascii_case("json"))
                {
                    continue;
                }
                let text = std::fs::read(entry.path()).expect("fixture");
                let Ok(value) = serde_json::from_slice::<Value>(&text) else {
                    continue;
                };
                let carrier = profiles.get(profile).expect("built-in profile");
                if !map_locally(&carrier, source, &text).events.is_empty() {
                    bodies.push(value);
                }
            }
            assert!(
                !bodies.is_empty(),
                "no usable webhook fixture for {profile}"
            );
            by_source.push((Kind::Webhook { source, profile }, bodies));
        }
        Templates { by_source }
    }
}

/// The events `profile` maps `body` to, signed and verified as the ingress would; none when
/// the body is refused.
fn map_locally(profile: &CarrierProfile, source: &str, body: &[u8]) -> Mapped {
    let mut headers = HeaderMap::new();
    for (name, value) in sign(source, body) {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            headers.insert(name, value);
        }
    }
    let secrets = vec![secret_of(source).to_owned()];
    let now = chrono::Utc::now();
    let Ok(verified) = profile.verify(
        UnverifiedRequest {
            headers: &headers,
            body,
        },
        &secrets,
        now,
    ) else {
        return Mapped::default();
    };
    // As the ingress maps: an element that cannot be mapped is kept aside, its siblings stored.
    profile
        .map_webhook_isolated(&verified, now)
        .unwrap_or_default()
}

fn secret_of(source: &str) -> &'static str {
    use crate::pipeline::helpers::*;
    match source {
        "starshipit" => STARSHIPIT_SECRET,
        "clickpost" => CLICKPOST_KEY,
        "aftership" => AFTERSHIP_SECRET,
        "easypost" => EASYPOST_SECRET,
        _ => DIRECT_SECRET,
    }
}

/// One signed webhook: a fixture of a random format with fresh tracking numbers, most of its
/// other string leaves replaced by generated text, maybe an extra generated key, sent as JSON
/// text written by hand (so it can hold escapes serde would never write).
async fn webhook(app: &TestApp, templates: &Templates, rng: &mut StdRng, case: usize) -> Sent {
    let (kind, bodies) = &templates.by_source[rng.random_range(0..templates.by_source.len())];
    let Kind::Webhook { source, profile } = *kind else {
        unreachable!("templates are webhooks")
    };
    let mut value = bodies[rng.random_range(0..bodies.len())].clone();
    let profiles = app.settings.profiles().expect("profiles");
    let carrier = profiles.get(profile).expect("profile");
    let originals: Vec<String> = map_locally(
        &carrier,
        source,
        &serde_json::to_vec(&value).expect("serialisable"),
    )
    .events
    .iter()
    .map(|event| event.tracking_number.as_str().to_owned())
    .collect();
    let mut fresh = BTreeMap::new();
    let mut literals = Vec::new();
    rewrite_leaves(&mut value, &mut |leaf: &mut String| {
        if let Ok(number) = TrackingNumber::parse(leaf)
            && originals.iter().any(|original| original == number.as_str())
        {
            let replacement = fresh
                .entry(number.as_str().to_owned())
                .or_insert_with(|| format!("HP{case}X{:08X}", rand::random::<u32>()));
            *leaf = replacement.clone();
        } else if !looks_like_time(leaf) && rng.random_bool(0.7) {
            *leaf = placeholder(&mut literals, generated_text(rng));
        }
    });
    if rng.random_bool(0.3)
        && let Value::Object(map) = &mut value
    {
        let key = placeholder(&mut literals, generated_text(rng));
        map.insert(key, Value::String("extra".to_owned()));
    }
    let body = with_literals(&value, &literals);
    let response = app.post_signed(source, &body).await;
    let (status, refusal, envelope_id) = answer(response).await;
    Sent {
        kind: *kind,
        body,
        status,
        refusal,
        tracking_numbers: fresh.into_values().collect(),
        envelope_id,
    }
}

/// One shipment registration with a generated order number and metadata (keys included).
async fn registration(app: &TestApp, rng: &mut StdRng, case: usize) -> Sent {
    let tracking_number = format!("HP{case}R{:08X}", rand::random::<u32>());
    let mut literals = Vec::new();
    let mut metadata = serde_json::Map::new();
    for _ in 0..rng.random_range(0..4) {
        let key = placeholder(&mut literals, generated_text(rng));
        let value = placeholder(&mut literals, generated_text(rng));
        metadata.insert(key, Value::String(value));
    }
    let order_number = placeholder(&mut literals, generated_text(rng));
    let value = serde_json::json!({
        "carrier": "acme",
        "tracking_number": tracking_number,
        "order_number": order_number,
        "metadata": metadata,
    });
    let body = with_literals(&value, &literals);
    let response = app
        .http
        .post(format!("{}/v1/shipments", app.ingress))
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .expect("ingress reachable");
    let (status, refusal, envelope_id) = answer(response).await;
    Sent {
        kind: Kind::Registration,
        body,
        status,
        refusal,
        tracking_numbers: vec![tracking_number],
        envelope_id,
    }
}

/// The status, for a refusal its code and the start of its message (every refusal is
/// `{"error", "message"}`), and for an acceptance the queued envelope's id.
async fn answer(response: reqwest::Response) -> (u16, String, Option<String>) {
    let status = response.status().as_u16();
    if status / 100 == 2 {
        let body: Value = response.json().await.expect("an acceptance is JSON");
        return (
            status,
            String::new(),
            body["id"].as_str().map(str::to_owned),
        );
    }
    let body: Value = response.json().await.expect("a refusal is JSON");
    let message: String = body["message"]
        .as_str()
        .unwrap_or("")
        .chars()
        .take(40)
        .collect();
    (
        status,
        format!("{}: {message}", body["error"].as_str().unwrap_or("")),
        None,
    )
}

/// Applies `change` to every string leaf of `value` (object keys are left alone).
fn rewrite_leaves(value: &mut Value, change: &mut dyn FnMut(&mut String)) {
    match value {
        Value::String(text) => change(text),
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| rewrite_leaves(item, change)),
        Value::Object(map) => map
            .values_mut()
            .for_each(|item| rewrite_leaves(item, change)),
        _ => {}
    }
}

/// A fixture's time: kept, or most bodies would be refused for it and say nothing.
fn looks_like_time(text: &str) -> bool {
    let digits = text.chars().filter(char::is_ascii_digit).count();
    digits >= 8 && (text.contains('-') || text.contains('/') || text.contains(':'))
}

/// Registers `literal` (JSON string content, escapes and all) and returns the token that
/// stands for it until [`with_literals`] writes the body.
fn placeholder(literals: &mut Vec<String>, literal: String) -> String {
    literals.push(literal);
    format!("@@LITERAL{}@@", literals.len() - 1)
}

/// The JSON text of `value` with each placeholder token replaced by its literal.
fn with_literals(value: &Value, literals: &[String]) -> Vec<u8> {
    let mut text = serde_json::to_string(value).expect("serialisable");
    for (index, literal) in literals.iter().enumerate() {
        text = text.replace(&format!("@@LITERAL{index}@@"), literal);
    }
    text.into_bytes()
}

/// JSON string content (without quotes) drawn to stress storage. Mostly valid; one text in
/// twenty may hold a raw control character or a lone surrogate escape, which makes the
/// document invalid JSON: it must be refused, never accepted and lost.
fn generated_text(rng: &mut StdRng) -> String {
    const ESCAPES: [&str; 11] = [
        r"\u0000",
        r"\n",
        r"\r",
        r"\t",
        r"\u001b",
        r"\u0085",
        r"\u2028",
        r"\u202e",
        r"\ud83d\ude00",
        r"\uDBFF\uDFFF",
        r"\\",
    ];
    const INVALID: [&str; 4] = [r"\ud800", r"\udfff", "\u{0}", "\u{1b}"];
    const RAW: [&str; 10] = [
        "\u{202E}",
        "\u{2066}",
        "\u{200F}",
        "\u{1F600}",
        "\u{1D11E}",
        "\u{FFFD}",
        "\u{85}",
        "\u{2028}",
        "\u{FEFF}",
        "é",
    ];
    let mut text = String::new();
    let pieces = if rng.random_bool(0.01) {
        rng.random_range(500..3000)
    } else {
        rng.random_range(0..12)
    };
    let invalid = rng.random_bool(0.05);
    for _ in 0..pieces {
        match rng.random_range(0..10) {
            0..=2 => text.push_str(ESCAPES[rng.random_range(0..ESCAPES.len())]),
            3..=4 => text.push_str(RAW[rng.random_range(0..RAW.len())]),
            5 if invalid => text.push_str(INVALID[rng.random_range(0..INVALID.len())]),
            5..=7 => push_escaped(&mut text, rng.random::<char>()),
            _ => text.push_str("Left at door "),
        }
    }
    text
}

/// `c` as JSON string content: escaped where JSON requires it.
fn push_escaped(text: &mut String, c: char) {
    match c {
        '"' => text.push_str("\\\""),
        '\\' => text.push_str("\\\\"),
        c if u32::from(c) < 0x20 => text.push_str(&format!("\\u{:04x}", u32::from(c))),
        c => text.push(c),
    }
}

/// What the stored rows of an accepted request must say.
async fn check_stored(
    pool: &sqlx::PgPool,
    profiles: &waybill_carriers::ProfileRegistry,
    sent: &Sent,
    deadline: Instant,
    seed: u64,
) {
    let expected = expected_rows(profiles, sent);
    let expected_rejected = expected_rejected(profiles, sent);
    let within = deadline.saturating_duration_since(Instant::now());
    let settled = waybill_e2e::eventually_or(within, async || {
        stored_rows(pool, sent).await == expected
            && stored_rejected(pool, sent).await == expected_rejected
    })
    .await;
    if settled.is_none() {
        let stored = stored_rows(pool, sent).await;
        let stored_rejected = stored_rejected(pool, sent).await;
        panic!(
            "seed {seed}: accepted but not stored as sent\nbody: {}\nexpected: {expected:?}\nstored:   {stored:?}\nrejected events expected: {expected_rejected:?}\nrejected events stored:   {stored_rejected:?}",
            String::from_utf8_lossy(&sent.body)
        );
    }
}

/// Rows as text, sorted, so two requests' worth compare as multisets.
type Rows = Vec<Vec<Option<String>>>;

fn expected_rows(profiles: &waybill_carriers::ProfileRegistry, sent: &Sent) -> Rows {
    let mut rows: Rows = match sent.kind {
        Kind::Webhook { source, profile } => {
            let carrier = profiles.get(profile).expect("profile");
            // Events under a number a generated leaf happened to spell are not checked here
            // (another case may spell it too); the dead-letter check still covers them.
            map_locally(&carrier, source, &sent.body)
                .events
                .into_iter()
                .filter(|event| {
                    sent.tracking_numbers
                        .iter()
                        .any(|number| number == event.tracking_number.as_str())
                })
                .map(|mut event| {
                    event.make_storable().expect("the ingress accepted it");
                    event_row(&event)
                })
                .collect()
        }
        Kind::Registration => {
            let value: Value = serde_json::from_slice(&sent.body).expect("accepted, so JSON");
            let mut order_number = value["order_number"].as_str().map(str::to_owned);
            storable::replace_in_option(&mut order_number);
            let mut metadata = value["metadata"].clone();
            storable::replace_in_json(&mut metadata).expect("accepted, so storable");
            vec![vec![order_number, Some(metadata.to_string())]]
        }
    };
    rows.sort();
    rows
}

/// The paths of the elements the ingress kept aside as rejected events, as stored.
fn expected_rejected(profiles: &waybill_carriers::ProfileRegistry, sent: &Sent) -> Vec<String> {
    let Kind::Webhook { source, profile } = sent.kind else {
        return Vec::new();
    };
    let carrier = profiles.get(profile).expect("profile");
    let mut paths: Vec<String> = map_locally(&carrier, source, &sent.body)
        .rejected
        .iter()
        .map(|rejected| storable::text(&rejected.path).into_owned())
        .collect();
    paths.sort();
    paths
}

/// The paths of the rejected events stored from the request's envelope.
async fn stored_rejected(pool: &sqlx::PgPool, sent: &Sent) -> Vec<String> {
    let Some(envelope_id) = &sent.envelope_id else {
        return Vec::new();
    };
    let mut paths: Vec<String> =
        sqlx::query_scalar("select path from rejected_events where envelope_id = $1")
            .bind(envelope_id)
            .fetch_all(pool)
            .await
            .expect("query");
    paths.sort();
    paths
}

fn event_row(event: &TrackingEvent) -> Vec<Option<String>> {
    vec![
        Some(event.status.as_str().to_owned()),
        Some(event.raw_status.code.clone()),
        event.raw_status.description.clone(),
        event.sub_status.clone(),
        event.location.clone(),
        event.message.clone(),
        event.provider_event_id.clone(),
        event.courier.clone(),
    ]
}

async fn stored_rows(pool: &sqlx::PgPool, sent: &Sent) -> Rows {
    let statement = match sent.kind {
        Kind::Webhook { .. } => {
            "select e.status, e.raw_status, e.raw_status_description, e.sub_status, e.location,
                    e.message, e.provider_event_id, e.courier
             from tracking_events e join shipments s on s.id = e.shipment_id
             where s.tracking_number = any($1)"
        }
        Kind::Registration => {
            "select order_number, metadata::text from shipments where tracking_number = any($1)"
        }
    };
    let rows = sqlx::query(statement)
        .bind(&sent.tracking_numbers)
        .fetch_all(pool)
        .await
        .expect("query");
    let mut rows: Rows = rows
        .iter()
        .map(|row| {
            (0..row.len())
                .map(|index| row.try_get::<Option<String>, _>(index).expect("text"))
                .collect()
        })
        .collect();
    if let Kind::Registration = sent.kind {
        // jsonb has its own key order and spacing: compare documents, not texts.
        for row in &mut rows {
            row[1] = row[1]
                .as_deref()
                .and_then(|text| serde_json::from_str::<Value>(text).ok())
                .map(|document| document.to_string());
        }
    }
    rows.sort();
    rows
}

async fn dead_letters(app: &TestApp) -> u32 {
    let topology = waybill_bus::Topology::new(&app.settings.bus.prefix);
    let connection = waybill_bus::BusConnection::connect(
        app.settings.bus.url.expose_secret(),
        "waybill-test-dead",
    )
    .await
    .expect("broker");
    let stats = connection
        .queue_stats(&topology.dead_queue())
        .await
        .expect("dead queue");
    let _ = connection.close().await;
    stats.messages
}
