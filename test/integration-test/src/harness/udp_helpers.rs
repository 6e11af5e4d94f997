//! Starting the UDP helpers (`crate::helper_udp`) and reading their reports.
use std::net::{IpAddr, SocketAddr};

use anyhow::Result;

use super::helpers::{end, End, Helper, Hold, Proc};
use crate::sock::any_of;

/// A UDP server bound to a port, whose forked worker answers.
pub struct UdpServer {
    helper: Helper,
    /// The bound socket and the process that bound it.
    pub listener: End,
    worker: String,
}

impl UdpServer {
    /// Bound on `addr` to the first of `ports` that binds, as `name`; its worker
    /// `worker` answers `count` datagrams, then holds for `hold`.
    pub fn spawn(
        addr: IpAddr,
        ports: &str,
        name: &str,
        worker: &str,
        count: usize,
        hold: Hold,
    ) -> Result<UdpServer> {
        let args = vec![
            "udp-server".into(),
            addr.to_string(),
            ports.into(),
            name.into(),
            worker.into(),
            count.to_string(),
            hold.arg(),
        ];
        let mut helper = Helper::spawn(args, &[], false)?;
        let listener = helper.report_end("listening", name, addr)?;
        Ok(UdpServer {
            helper,
            listener,
            worker: worker.to_string(),
        })
    }

    /// The next datagram answered: the worker, and the peer's port.
    pub fn answered(&mut self) -> Result<(Proc, u16)> {
        let n = self.helper.report("answered", 3)?;
        Ok((
            Proc {
                pid: n[0],
                uid: n[1],
                comm: self.worker.clone(),
            },
            n[2] as u16,
        ))
    }

    /// Kill the server and its worker.
    pub fn kill(self) {
        self.helper.kill()
    }

    /// Wait until the server has closed its socket and exited.
    pub fn finish(mut self) -> Result<()> {
        self.helper.report("closed", 1)?;
        self.helper.finish()
    }
}

/// How a UDP client sends its datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Way {
    /// connect(), then send(): the socket has a peer.
    Connected,
    /// sendto() with the address.
    SendTo,
    /// sendmsg() with the address in the message.
    SendMsg,
}

impl Way {
    fn arg(self) -> &'static str {
        match self {
            Way::Connected => "connected",
            Way::SendTo => "sendto",
            Way::SendMsg => "sendmsg",
        }
    }
}

/// Send one datagram to `server` as `name`, wait for the answer, hold, close.
/// Its end: the address its socket is bound to (the source address routing
/// chose once connected, else the wildcard) and its port.
pub fn udp_client(server: SocketAddr, name: &str, how: Way, hold: Hold) -> Result<End> {
    let args = vec![
        "udp-client".into(),
        server.ip().to_string(),
        server.port().to_string(),
        name.into(),
        how.arg().into(),
        hold.arg(),
    ];
    let mut helper = Helper::spawn(args, &[], false)?;
    let mut end = helper.report_end("sent", name, any_of(server.ip()))?;
    end.addr = helper.report_text("bound")?.parse()?;
    helper.finish()?;
    Ok(end)
}

/// One socket of `name` sending `rounds` datagrams to each of `count` ports of
/// `addr` from `base` on; its end (the wildcard address, its port).
pub fn udp_spray(addr: IpAddr, name: &str, base: u16, count: u16, rounds: usize) -> Result<End> {
    let args = vec![
        "udp-spray".into(),
        addr.to_string(),
        name.into(),
        base.to_string(),
        count.to_string(),
        rounds.to_string(),
    ];
    let mut helper = Helper::spawn(args, &[], false)?;
    let numbers = helper.report("sprayed", 3)?;
    helper.finish()?;
    Ok(end(&numbers, name, any_of(addr)))
}
