//! The whole conformance suite against the `CountingProvider` wrapper of
//! `docs/custom-providers.md` (section 3) around `MemoryProvider`: the doc
//! says that wrapper runs the suite unchanged, and this is where it does.
//!
//! `support/counting_provider.rs` is the doc's code block (without its
//! hidden `main`); `wrapper_is_the_doc_s_code_block` fails when the two
//! drift apart, so the wrapper tested here is the one readers copy.

// the doc's example also has `published()`, which the suite does not call
#[allow(dead_code)]
#[path = "support/counting_provider.rs"]
mod counting_provider;

use counting_provider::CountingProvider;
use event_core::EventProvider;
use event_core::conformance::{Capabilities, ProviderFactory};
use event_memory::{MemoryConfig, MemoryLimits, MemoryProvider};
use std::sync::Arc;
use std::time::Duration;

/// The payload limit of the wrapped memory provider (as its own runner).
const MAX_PAYLOAD: usize = 64 * 1024;

struct Counting;

fn provider(max_events: usize) -> Arc<dyn EventProvider> {
    let config = MemoryConfig {
        max_events,
        ..MemoryConfig::default()
    };
    let limits = MemoryLimits {
        max_payload: MAX_PAYLOAD,
        ..MemoryLimits::default()
    };
    let inner = MemoryProvider::with_limits(config, limits).expect("valid config");
    Arc::new(CountingProvider::new(Arc::new(inner)))
}

#[async_trait::async_trait]
impl ProviderFactory for Counting {
    async fn create(&self) -> Arc<dyn EventProvider> {
        provider(MemoryConfig::default().max_events)
    }

    async fn create_with_max_events(&self, max_events: usize) -> Option<Arc<dyn EventProvider>> {
        Some(provider(max_events))
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_payload: Some(MAX_PAYLOAD),
            ack_wait: Duration::from_millis(300),
            receive_timeout: Duration::from_secs(5),
            ..Capabilities::default()
        }
    }
}

event_core::conformance_tests!(Counting);

/// `s` without whitespace and without trailing commas: the doc's block and
/// the file compare equal however rustfmt lays either out.
fn squeezed(s: &str) -> String {
    let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
    compact
        .replace(",}", "}")
        .replace(",)", ")")
        .replace(",]", "]")
}

#[test]
fn wrapper_is_the_doc_s_code_block() {
    let doc = include_str!("../../../docs/custom-providers.md");
    let wrapper = include_str!("support/counting_provider.rs");
    assert!(
        squeezed(doc).contains(&squeezed(wrapper)),
        "tests/support/counting_provider.rs is no longer the CountingProvider block of \
         docs/custom-providers.md: copy the doc's block (without the hidden main) into it"
    );
}

/// The doc's "ported imports" block (a doctest, so it compiles against
/// event-core alone) is `examples/custom_provider.rs`'s module imports
/// with `a3s_event::` replaced by `event_core::`.
#[test]
fn doc_ports_the_example_s_imports() {
    let doc = squeezed(include_str!("../../../docs/custom-providers.md"));
    let example = include_str!("../../../examples/custom_provider.rs");
    let mut ported = 0;
    for module in ["provider", "types", "subject"] {
        let start = format!("use a3s_event::{module}::");
        for (at, _) in example.match_indices(&start) {
            let statement = &example[at..];
            let statement = &statement[..=statement.find(';').expect("a use statement ends")];
            let statement = statement.replace("a3s_event::", "event_core::");
            assert!(
                doc.contains(&squeezed(&statement)),
                "docs/custom-providers.md does not port the example's `{statement}`"
            );
            ported += 1;
        }
    }
    assert!(
        ported >= 3,
        "the example imports from provider, types and subject"
    );
}
