//! The configuration crate's integration tests, one test binary: the deployment files against
//! the real configuration struct ([`deploy`]), and the documentation against the code
//! ([`documented`]), and the module graph of every crate ([`modules`]).

mod deploy;
mod documented;
mod modules;
