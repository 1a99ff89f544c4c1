//! The carriers crate's integration tests, one test binary: the built-in profiles against the
//! platforms' samples, verification, mapping, polling, profile files and the documented
//! examples, fuzzing, and the crate's purity.

mod common;

mod bad_input;
mod builtin_profiles;
mod documented_examples;
mod documented_keys;
mod format_v2;
mod fuzz;
mod poll;
mod profile_files;
mod purity;
mod verification;
