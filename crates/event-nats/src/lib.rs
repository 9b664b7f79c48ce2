//! # event-nats: the A3S Event provider on NATS JetStream
//!
//! TODO docs
#![cfg_attr(docsrs, feature(doc_cfg))]

mod config;
mod error;
mod history;
mod provider;
mod subscription;

pub use config::{ClientCert, DiscardPolicy, NatsConfig, NatsOptions, StorageType, TlsOptions};
pub use provider::NatsProvider;
