//! Parsing of the arguments several commands share.

use anyhow::Context as _;
use waybill_core::TenantId;

/// The `--tenant` filter of a listing command (`None`: every tenant).
pub(crate) fn tenant_filter(tenant: Option<&str>) -> anyhow::Result<Option<TenantId>> {
    tenant.map(TenantId::parse).transpose().context("--tenant")
}
