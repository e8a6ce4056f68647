//! The `http` capability's policy: the origins an operator granted a package.

use std::net::IpAddr;

use plugboard_package::{HttpTarget, Scheme};
use plugboard_wasm::HttpPolicy;

/// A package's granted origins. An origin whose host is an address grants that address,
/// loopback or private included; a name grants only the public addresses it resolves to.
pub(crate) struct GrantedOrigins(pub(crate) Vec<HttpTarget>);

fn scheme(https: bool) -> Scheme {
    if https { Scheme::Https } else { Scheme::Http }
}

impl HttpPolicy for GrantedOrigins {
    fn allows(&self, https: bool, host: &str, port: u16) -> bool {
        self.0.iter().any(|t| t.allows(scheme(https), host, port))
    }

    fn allows_address(&self, https: bool, ip: IpAddr, port: u16) -> bool {
        self.0
            .iter()
            .any(|t| t.scheme == scheme(https) && t.port == port && t.ip() == Some(ip))
    }
}
