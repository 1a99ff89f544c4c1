use super::*;

#[test]
fn defaults_are_valid() {
    let settings = Settings::from_toml_str("").unwrap();
    assert_eq!(settings.ingress.addr.port(), 8080);
    assert_eq!(settings.worker.addr.port(), 8081);
    assert!(settings.bus.url.expose_secret().starts_with("amqp://"));
}

#[test]
fn debug_output_never_shows_a_secret() {
    let settings = Settings::from_toml_str(
        r#"
        [bus]
        url = "amqp://waybill:broker-password-7f3a@rabbit:5672/%2f"
        [database]
        url = "postgres://waybill:database-password-91c2@db:5432/waybill"
        [[sources]]
        id = "starshipit"
        profile = "starshipit"
        secrets = ["webhook-secret-old-52be", "webhook-secret-new-0d44"]
        credentials = { api_key = "tracking-api-key-c08e" }
        "#,
    )
    .unwrap();
    let debug = format!("{settings:?}");
    let pretty = format!("{settings:#?}");
    for secret in [
        "broker-password-7f3a",
        "database-password-91c2",
        "webhook-secret-old-52be",
        "webhook-secret-new-0d44",
        "tracking-api-key-c08e",
    ] {
        assert!(!debug.contains(secret), "{secret} in {debug}");
        assert!(!pretty.contains(secret), "{secret} in {pretty}");
    }
    assert!(debug.contains("REDACTED"), "{debug}");
    // Still usable where they are needed, and still loaded over the defaults.
    assert_eq!(
        settings.database.url.expose_secret(),
        "postgres://waybill:database-password-91c2@db:5432/waybill"
    );
    let source = settings.source("starshipit").unwrap();
    assert_eq!(
        expose_list(&source.secrets),
        ["webhook-secret-old-52be", "webhook-secret-new-0d44"]
    );
    assert_eq!(
        expose_map(&source.credentials)["api_key"],
        "tracking-api-key-c08e"
    );
}

#[test]
fn sources_parse_with_defaults() {
    let settings = Settings::from_toml_str(
        r#"
        [[sources]]
        id = "starshipit"
        profile = "starshipit"
        secrets = ["s1", "s2"]
        "#,
    )
    .unwrap();
    let source = settings.source("starshipit").unwrap();
    assert_eq!(source.secrets.len(), 2);
    assert_eq!(source.tenant.as_str(), "default");
    assert!(!source.require_registration);
    assert_eq!(source.mode, PollMode::Hybrid);
}

fn error_of(toml: &str) -> String {
    Settings::from_toml_str(toml).unwrap_err().to_string()
}

#[test]
fn errors_name_the_key() {
    assert!(error_of("[worker]\nbatch_size = \"many\"").contains("batch_size"));
    assert!(error_of("[worker]\nbach_size = 5").contains("bach_size"));
    assert!(error_of("[worker]\nbatch_size = 0").contains("worker.batch_size"));
    assert!(error_of("[[sources]]\nid = \"x\"\nprofile = \"nope\"").contains("sources[0].profile"));
    assert!(error_of("[[sources]]\nid = \"bad id!\"\nprofile = \"waybill\"").contains("source id"));
    let twice = "[[sources]]\nid = \"a\"\nprofile = \"waybill\"\n[[sources]]\nid = \"a\"\nprofile = \"waybill\"";
    assert!(error_of(twice).contains("sources[1].id"));
}

#[test]
fn a_missing_file_is_an_error() {
    let err = Settings::load_from(Some(Path::new("does/not/exist.toml")), false).unwrap_err();
    assert!(err.to_string().contains("does/not/exist.toml"));
}

#[test]
fn bus_urls_list_the_nodes_every_connection_may_use() {
    let settings = Settings::from_toml_str(
        r#"
        [bus]
        urls = ["amqp://u:p@10.0.0.1:5672/%2f", "amqps://u:p@10.0.0.2:5671/%2f"]
        "#,
    )
    .unwrap();
    assert_eq!(
        settings.bus.url.expose_secret(),
        "amqp://u:p@10.0.0.1:5672/%2f,amqps://u:p@10.0.0.2:5671/%2f"
    );
    // The environment's form: one comma-separated string, spaces and empty entries ignored.
    let settings =
        Settings::from_toml_str("[bus]\nurls = \"amqp://a/%2f, amqp://b/%2f,\"").unwrap();
    assert_eq!(
        expose_list(&settings.bus.urls),
        ["amqp://a/%2f", "amqp://b/%2f"]
    );
    assert_eq!(
        settings.bus.url.expose_secret(),
        "amqp://a/%2f,amqp://b/%2f"
    );
    // Without urls, url is used as it is.
    let settings = Settings::from_toml_str("[bus]\nurl = \"amqp://only/%2f\"").unwrap();
    assert_eq!(settings.bus.url.expose_secret(), "amqp://only/%2f");
}

#[test]
fn a_bus_urls_entry_that_is_not_an_amqp_url_is_refused_without_echoing_it() {
    let error = error_of("[bus]\nurls = [\"amqp://a/%2f\", \"10.0.0.2:5672 secret\"]");
    assert!(error.contains("bus.urls"), "{error}");
    assert!(error.contains("entry 2"), "{error}");
    assert!(!error.contains("secret"), "{error}");
}

#[test]
fn shipment_retention_keeps_everything_by_default_and_is_at_least_a_month() {
    let defaults = Settings::from_toml_str("").unwrap();
    assert!(defaults.database.shipment_retention.duration().is_zero());
    assert_eq!(defaults.database.shipment_retention.retention(), None);
    let kept = Settings::from_toml_str("[database]\nshipment_retention = \"400d\"").unwrap();
    assert_eq!(
        kept.database.shipment_retention.duration(),
        Duration::from_secs(400 * 86_400)
    );
    assert_eq!(
        kept.database.shipment_retention.retention(),
        Some(Duration::from_secs(400 * 86_400))
    );
    let short = error_of("[database]\nshipment_retention = \"7d\"");
    assert!(short.contains("database.shipment_retention"), "{short}");
    assert!(short.contains("31d"), "{short}");
}
