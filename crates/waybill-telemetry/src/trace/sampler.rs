//! Which traces are kept: what the standard `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`
//! configure (read by the OpenTelemetry SDK; parent-based always-on when unset), plus one rule
//! for passes. A span that starts a trace and links to others — a batch merge, a relay or
//! fan-out pass — is kept when any span it links to was kept: every change whose trace is sampled
//! can then be followed into the passes that moved it, whatever ratio the passes would draw.
//!
//! Parent-based sampling is what carries a decision across the queue: the sampled flag travels
//! in `traceparent`, so a webhook's trace is kept or dropped whole, from the courier's request
//! to the subscriber's delivery.

use opentelemetry::trace::{Link, SpanKind, TraceContextExt};
use opentelemetry::{Context, KeyValue, TraceId};
use opentelemetry_sdk::trace::{SamplingDecision, SamplingResult, ShouldSample};

/// The sampler names `OTEL_TRACES_SAMPLER` may hold, as the SDK reads them.
const KNOWN: [&str; 6] = [
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
];

/// The configured sampler with the pass rule (see the module documentation). Reports a sampler
/// setting it cannot honour on stderr (logging is not up yet) and uses the SDK's fallback.
pub(super) fn from_env() -> FollowLinks {
    let sampler = std::env::var("OTEL_TRACES_SAMPLER").ok();
    let argument = std::env::var("OTEL_TRACES_SAMPLER_ARG").ok();
    if let Some(problem) = problem(sampler.as_deref(), argument.as_deref()) {
        eprintln!("{problem}");
    }
    FollowLinks {
        configured: opentelemetry_sdk::trace::Config::default().sampler,
    }
}

/// What is wrong with a sampler setting, in a sentence naming the variable, if anything.
fn problem(sampler: Option<&str>, argument: Option<&str>) -> Option<String> {
    let sampler = sampler.filter(|name| !name.is_empty())?;
    if !KNOWN.contains(&sampler) {
        return Some(format!(
            "OTEL_TRACES_SAMPLER={sampler:?} is not one of {}; sampling parentbased_always_on",
            KNOWN.join(", ")
        ));
    }
    if !sampler.ends_with("traceidratio") {
        return None;
    }
    let outcome = match argument.and_then(|text| text.trim().parse::<f64>().ok()) {
        Some(ratio) if (0.0..=1.0).contains(&ratio) => return None,
        Some(ratio) => format!("taken as {}", ratio.clamp(0.0, 1.0)),
        None => "sampling every trace".to_owned(),
    };
    Some(format!(
        "OTEL_TRACES_SAMPLER_ARG={argument:?} is not a ratio between 0 and 1 for \
         OTEL_TRACES_SAMPLER={sampler}; {outcome}"
    ))
}

/// The configured sampler, and a root span that links to a sampled span is sampled.
#[derive(Debug, Clone)]
pub(super) struct FollowLinks {
    configured: Box<dyn ShouldSample>,
}

impl ShouldSample for FollowLinks {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        trace_id: TraceId,
        name: &str,
        span_kind: &SpanKind,
        attributes: &[KeyValue],
        links: &[Link],
    ) -> SamplingResult {
        let result = self.configured.should_sample(
            parent_context,
            trace_id,
            name,
            span_kind,
            attributes,
            links,
        );
        let is_root = parent_context.is_none_or(|cx| !cx.span().span_context().is_valid());
        let links_sampled = links.iter().any(|link| link.span_context.is_sampled());
        if is_root && links_sampled && result.decision == SamplingDecision::Drop {
            return SamplingResult {
                decision: SamplingDecision::RecordAndSample,
                ..result
            };
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceState};
    use opentelemetry_sdk::trace::Sampler;

    use super::*;

    fn remote(sampled: bool) -> SpanContext {
        let flags = if sampled {
            TraceFlags::SAMPLED
        } else {
            TraceFlags::default()
        };
        SpanContext::new(
            TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736_u128),
            SpanId::from(0x00f0_67aa_0ba9_02b7_u64),
            flags,
            true,
            TraceState::default(),
        )
    }

    fn decide(sampler: Sampler, parent: Option<SpanContext>, links: &[SpanContext]) -> bool {
        let follow = FollowLinks {
            configured: Box::new(sampler),
        };
        let parent = parent.map(|context| Context::new().with_remote_span_context(context));
        let links: Vec<Link> = links
            .iter()
            .map(|context| Link::with_context(context.clone()))
            .collect();
        let result = follow.should_sample(
            parent.as_ref(),
            TraceId::from(7_u128),
            "waybill.relay_publish",
            &SpanKind::Internal,
            &[],
            &links,
        );
        result.decision == SamplingDecision::RecordAndSample
    }

    #[test]
    fn a_pass_linked_to_a_sampled_change_is_sampled_whatever_its_own_draw() {
        let never = || Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(0.0)));
        assert!(decide(never(), None, &[remote(false), remote(true)]));
        assert!(!decide(never(), None, &[remote(false)]));
        assert!(!decide(never(), None, &[]));
        // A child follows its parent, links or not: the rule is for roots only.
        assert!(!decide(never(), Some(remote(false)), &[remote(true)]));
        assert!(decide(never(), Some(remote(true)), &[]));
        // The configured decision stands where it samples.
        assert!(decide(Sampler::AlwaysOn, None, &[remote(false)]));
    }

    #[test]
    fn sampler_settings_that_cannot_be_honoured_are_named() {
        assert_eq!(problem(None, None), None);
        assert_eq!(problem(Some(""), Some("x")), None);
        assert_eq!(problem(Some("parentbased_always_on"), None), None);
        assert_eq!(
            problem(Some("parentbased_traceidratio"), Some("0.25")),
            None
        );
        let unknown = problem(Some("sometimes"), None).expect("a problem");
        assert!(
            unknown.contains("OTEL_TRACES_SAMPLER=\"sometimes\""),
            "{unknown}"
        );
        let ratio = problem(Some("traceidratio"), Some("1.5")).expect("a problem");
        assert!(
            ratio.contains("OTEL_TRACES_SAMPLER_ARG") && ratio.ends_with("taken as 1"),
            "{ratio}"
        );
        let missing = problem(Some("traceidratio"), None).expect("a problem");
        assert!(missing.ends_with("sampling every trace"), "{missing}");
    }
}
