//! What each hook does, one file per topic. The entry points in `main.rs` call the
//! `try_*` functions here.
pub mod accept;
pub mod state;
pub mod udp;
pub mod udp_hooks;
