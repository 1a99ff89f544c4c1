//! HTTP plumbing shared by Waybill's two servers (the ingress and the worker's API), so that
//! both authenticate, refuse, limit and describe themselves the same way.
//!
//! **Invariant:** every refusal either server sends — from a handler, an extractor, a limit, the
//! router's 404 and 405 — is `application/json` `{"error": code, "message": sentence}`
//! ([`HttpError`]); a caller never has to parse text or an empty body.
//!
//! * [`error`] — [`HttpError`], the one error type and its response.
//! * [`extract`] — `Json`, `Query` and `Path` whose rejections are [`HttpError`]s, the router
//!   fallback, and the middleware that gives any other refusal the same shape.
//! * [`auth`] — API keys: the [`auth::KeyGate`] and the [`auth::Authorized`] extractor.
//! * [`limits`] — a declared body length over the limit refused before reading.
//! * [`openapi`] — serving a document, its bearer-key security scheme and the key refusal.
//! * [`operations`] — `/healthz`, `/readyz` and `/metrics`, handled and documented once.
//! * [`process`] — a server process's start: configuration and telemetry.
//! * [`serve`] — the accept loop with a bound on reading headers and on shutdown.

#![warn(missing_docs)]

pub mod auth;
pub mod error;
pub mod extract;
pub mod limits;
pub mod openapi;
pub mod operations;
pub mod process;
pub mod serve;

pub use error::HttpError;
