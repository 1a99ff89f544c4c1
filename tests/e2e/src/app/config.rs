//! A test app's configuration: a base every app shares, with the builder's fragments merged
//! over it key by key (a fragment's `[[sources]]` add to the base's; any other key replaces it).

use toml::{Table, Value};

/// The base configuration: the local services, a fresh prefix, loopback ports, small batches.
pub(crate) fn base(amqp_url: &str, prefix: &str, database_url: &str) -> String {
    format!(
        r#"
        auth = {{ mode = "none" }}
        [bus]
        url = "{amqp_url}"
        prefix = "{prefix}"
        delivery_limit = 3
        [database]
        url = "{database_url}"
        max_connections = 6
        [ingress]
        addr = "127.0.0.1:0"
        publish_timeout_ms = 2000
        [worker]
        addr = "127.0.0.1:0"
        batch_size = 100
        prefetch = 200
        batch_linger_ms = 5
        consumers = 1
        "#
    )
}

/// `base` with every fragment merged over it, in order.
pub(crate) fn merged(base: &str, fragments: &[String]) -> String {
    let mut table: Table = base.parse().expect("the base configuration is TOML");
    for fragment in fragments {
        let over: Table = fragment
            .parse()
            .unwrap_or_else(|error| panic!("a test's configuration fragment: {error}\n{fragment}"));
        merge(&mut table, over);
    }
    table.to_string()
}

fn merge(into: &mut Table, over: Table) {
    for (key, value) in over {
        match (into.get_mut(&key), value) {
            (Some(Value::Table(existing)), Value::Table(more)) => merge(existing, more),
            (Some(Value::Array(existing)), Value::Array(more))
                if more.first().is_some_and(Value::is_table) =>
            {
                existing.extend(more);
            }
            (_, value) => {
                into.insert(key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fragments_replace_keys_and_add_sources() {
        let merged = merged(
            "[worker]\nbatch_size = 100\nconsumers = 1\n[[sources]]\nid = \"a\"\n",
            &[
                "[worker]\nbatch_size = 5\n[[sources]]\nid = \"b\"\n".to_owned(),
                "auth = { mode = \"keys\" }\n".to_owned(),
            ],
        );
        let table: Table = merged.parse().unwrap();
        assert_eq!(table["worker"]["batch_size"].as_integer(), Some(5));
        assert_eq!(table["worker"]["consumers"].as_integer(), Some(1));
        assert_eq!(table["sources"].as_array().map(Vec::len), Some(2));
        assert_eq!(table["auth"]["mode"].as_str(), Some("keys"));
    }
}
