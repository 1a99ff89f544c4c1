//! The crate stays pure: no async runtime, database, broker, web framework or HTTP client in
//! its dependency tree (normal dependencies, every target platform). Proven with `cargo tree`.

use std::process::Command;

const FORBIDDEN: [&str; 7] = ["tokio", "sqlx", "lapin", "axum", "reqwest", "hyper", "mio"];

#[test]
fn no_io_crates_in_the_dependency_tree() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let output = Command::new(cargo)
        .args([
            "tree",
            "-p",
            "waybill-carriers",
            "-e",
            "normal",
            "--target",
            "all",
            "--prefix",
            "none",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree runs");
    assert!(
        output.status.success(),
        "cargo tree failed (it reads every platform's crates, fetching those not yet downloaded): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8_lossy(&output.stdout);
    let crates: Vec<&str> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert!(
        crates.contains(&"waybill-core") && crates.contains(&"http"),
        "unexpected tree:\n{tree}"
    );
    for forbidden in FORBIDDEN {
        assert!(
            !crates.contains(&forbidden),
            "waybill-carriers depends on {forbidden}:\n{tree}"
        );
    }
}
