//! `waybill shipments register|show`.

use clap::Subcommand;
use waybill_config::ExposeSecret;
use waybill_config::Settings;
use waybill_core::{CarrierCode, SourceId, TenantId, TrackingNumber};
use waybill_store::{InboundBatch, Registration, Store};

/// Shipment commands.
#[derive(Debug, Subcommand)]
pub enum ShipmentsCommand {
    /// Register a shipment (idempotent); applies any events parked for it.
    Register {
        /// Carrier code, e.g. `starshipit`.
        carrier: String,
        /// Tracking number.
        tracking_number: String,
        /// The merchant's order number.
        #[arg(long)]
        order_number: Option<String>,
        /// Tenant (default: the single-tenant default).
        #[arg(long, default_value = TenantId::DEFAULT)]
        tenant: String,
        /// The source the shipment is polled through (default: the tenant's only source for
        /// the carrier, when it is polled; see docs/polling.md).
        #[arg(long)]
        source: Option<String>,
        /// Metadata to attach, a JSON object (merged over what is stored).
        #[arg(long)]
        metadata: Option<String>,
    },
    /// Show a shipment with its history, as JSON.
    Show {
        /// Carrier code.
        carrier: String,
        /// Tracking number.
        tracking_number: String,
        /// Tenant.
        #[arg(long, default_value = TenantId::DEFAULT)]
        tenant: String,
    },
}

/// Runs a shipments command.
pub async fn run(command: ShipmentsCommand, settings: &Settings) -> anyhow::Result<()> {
    let store = Store::connect(settings.database.url.expose_secret(), 2).await?;
    match command {
        ShipmentsCommand::Register {
            carrier,
            tracking_number,
            order_number,
            tenant,
            source,
            metadata,
        } => {
            let metadata: serde_json::Value = match metadata.as_deref() {
                Some(text) => serde_json::from_str(text)
                    .map_err(|error| anyhow::anyhow!("--metadata is not JSON: {error}"))?,
                None => serde_json::json!({}),
            };
            if !metadata.is_object() {
                anyhow::bail!("--metadata must be a JSON object");
            }
            let registration = Registration {
                tenant: TenantId::parse(&tenant)?,
                source: source.as_deref().map(SourceId::parse).transpose()?,
                carrier: CarrierCode::parse(&carrier)?,
                tracking_number: TrackingNumber::parse(&tracking_number)?,
                order_number,
                metadata,
            };
            let batch = InboundBatch {
                items: Vec::new(),
                registrations: vec![registration],
            };
            let mut tx = store.begin().await?;
            let report = waybill_store::apply_batch(&mut tx, &batch).await?;
            tx.commit().await?;
            eprintln!(
                "registered {carrier}/{tracking_number}; {} parked event(s) applied",
                report.new_current + report.history_only + report.outdated
            );
        }
        ShipmentsCommand::Show {
            carrier,
            tracking_number,
            tenant,
        } => {
            let shipment = store
                .get_shipment(
                    &TenantId::parse(&tenant)?,
                    &CarrierCode::parse(&carrier)?,
                    &TrackingNumber::parse(&tracking_number)?,
                )
                .await?;
            match shipment {
                Some(shipment) => println!("{}", serde_json::to_string_pretty(&shipment)?),
                None => anyhow::bail!("no shipment {carrier}/{tracking_number} in tenant {tenant}"),
            }
        }
    }
    Ok(())
}
