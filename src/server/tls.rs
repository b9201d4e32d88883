//! The HTTPS listener's certificate, replaceable while serving: every handshake reads the
//! current certificate and key from an `ArcSwap`, so a renewed certificate is served from
//! the next handshake on, with no restart and no dropped connection.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::plan::server::TlsPlan;

/// The certificate handshakes get; [`LiveCert::replace`] swaps it.
#[derive(Debug)]
pub struct LiveCert {
    current: ArcSwap<CertifiedKey>,
}

impl LiveCert {
    /// Serves `tls`'s certificate until replaced.
    pub fn new(tls: &TlsPlan) -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwap::new(tls.certified.clone()),
        })
    }

    /// Serves `tls`'s certificate from the next handshake on.
    pub fn replace(&self, tls: &TlsPlan) {
        self.current.store(tls.certified.clone());
    }
}

impl ResolvesServerCert for LiveCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The listener's rustls configuration: the plan's settings with the certificate read from
/// `cert` at each handshake.
pub fn server_config(tls: &TlsPlan, cert: Arc<LiveCert>) -> rustls::ServerConfig {
    let mut config = rustls::ServerConfig::clone(&tls.config);
    config.cert_resolver = cert;
    config
}
