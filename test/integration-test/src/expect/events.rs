//! Expected events from the helpers' own account of what they did: a listener,
//! the two ends of a connection, a connect that failed. Each lists every field
//! the test knows for sure; see [`super::Expected`] for adding more.
use std::net::SocketAddr;

use serde_json::{json, Value};

use super::{endpoint, family, merge, Expected};
use crate::harness::helpers::{End, Proc};

/// The process fields of an event seen in the process's own context.
pub fn exact(proc: &Proc) -> Value {
    json!({"pid": proc.pid, "tid": proc.pid, "uid": proc.uid, "comm": proc.comm,
           "pid_exact": true, "proto": "tcp"})
}

impl Expected {
    /// Attributed to its process by inference (the listener's owner) rather than
    /// seen in the process's context: no thread, `pid_exact: false`.
    pub fn inferred(mut self) -> Self {
        if let Some(fields) = self.fields.as_object_mut() {
            fields.remove("tid");
        }
        self.with(json!({"pid_exact": false}))
    }
}

/// `listen()` by the listener.
pub fn listen(listener: &End) -> Expected {
    let fields = json!({"role": "listener", "family": family(listener.addr), "state": "LISTEN",
                        "local": endpoint(listener.addr, listener.port), "remote": {"port": 0}});
    Expected::new(
        format!("listen by {}", listener.proc.comm),
        "listen",
        listener.port,
        0,
        merge(exact(&listener.proc), fields),
    )
}

/// The listener's close.
pub fn listener_close(listener: &End) -> Expected {
    let fields = json!({"role": "listener", "family": family(listener.addr), "state": "CLOSE",
                        "old_state": "LISTEN", "local": endpoint(listener.addr, listener.port)});
    Expected::new(
        format!("close of {}'s listener", listener.proc.comm),
        "close",
        listener.port,
        0,
        merge(exact(&listener.proc), fields),
    )
}

/// The fields of one side of a connection: role, family, both endpoints.
fn connection(role: &str, local: &End, remote: &End) -> Value {
    merge(
        exact(&local.proc),
        json!({"role": role, "family": family(local.addr),
               "local": endpoint(local.addr, local.port),
               "remote": endpoint(remote.addr, remote.port)}),
    )
}

/// The client's connect to `server` reached ESTABLISHED.
pub fn connect(client: &End, server: &End) -> Expected {
    Expected::new(
        format!("connect by {}", client.proc.comm),
        "connect",
        client.port,
        server.port,
        connection("client", client, server),
    )
    .with(json!({"state": "ESTABLISHED", "old_state": "SYN_SENT"}))
}

/// The server's process accepted the client's connection.
pub fn accept(server: &End, client: &End) -> Expected {
    Expected::new(
        format!("accept of {} by {}", client.proc.comm, server.proc.comm),
        "accept",
        server.port,
        client.port,
        connection("server", server, client),
    )
}

/// The close of the client's side of its connection to `server`.
pub fn client_close(client: &End, server: &End) -> Expected {
    Expected::new(
        format!("close of {}'s connection, client side", client.proc.comm),
        "close",
        client.port,
        server.port,
        connection("client", client, server),
    )
    .with(json!({"state": "CLOSE"}))
}

/// The close of the server's side of the client's connection.
pub fn server_close(server: &End, client: &End) -> Expected {
    Expected::new(
        format!(
            "close of {}'s connection, server side ({})",
            client.proc.comm, server.proc.comm
        ),
        "close",
        server.port,
        client.port,
        connection("server", server, client),
    )
    .with(json!({"state": "CLOSE"}))
}

/// The client's connect to `target` failed with `errno`, for `reason`.
pub fn connect_failed(client: &End, target: SocketAddr, errno: i32, reason: &str) -> Expected {
    let target = End {
        proc: client.proc.clone(),
        addr: target.ip(),
        port: target.port(),
    };
    Expected::new(
        format!("connect by {} that failed: {reason}", client.proc.comm),
        "connect-failed",
        client.port,
        target.port,
        connection("client", client, &target),
    )
    .with(json!({"state": "CLOSE", "old_state": "SYN_SENT",
                 "error": {"errno": errno, "reason": reason}}))
}
