//! qemu's user-mode network as planned: [`UserSubnet`], its addresses (the guest's .15, qemu's
//! .2). A plan type apart from `plan` for size; never parses (`sections` does).

/// qemu's user network (slirp): its IPv4 subnet, at most a /27 so that vrnetlab's guest address
/// (.15) is a host of it; qemu's own address (the gateway) is .2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserSubnet {
    pub network: std::net::Ipv4Addr,
    pub prefix: u8,
}

impl Default for UserSubnet {
    /// vrnetlab's: 10.0.0.0/24.
    fn default() -> Self {
        Self {
            network: std::net::Ipv4Addr::new(10, 0, 0, 0),
            prefix: 24,
        }
    }
}

impl UserSubnet {
    fn host(&self, n: u32) -> std::net::Ipv4Addr {
        (u32::from(self.network) + n).into()
    }
    /// The guest's address (qemu's first DHCP lease, vrnetlab's .15).
    pub fn guest(&self) -> std::net::Ipv4Addr {
        self.host(15)
    }
    /// qemu's own address on it: the guest's gateway, DNS forwarder's neighbour and TFTP server.
    pub fn gateway(&self) -> std::net::Ipv4Addr {
        self.host(2)
    }
}

impl std::fmt::Display for UserSubnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}
